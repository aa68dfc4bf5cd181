"""Networks that restore one interpolated axial plane: a small registry.

Importing this package is cheap: it imports neither torch nor the network modules. A network is
built by name with :func:`build_net`, which imports its module on first use::

    from napari_emsr.nets import build_net
    net = build_net("uformer", size="small")          # a torch.nn.Module
    net = build_net("rescnn", size="tiny", blocks=2)  # keyword arguments override the size

Every network maps ``(B, C, H, W)`` to ``(B, C, H, W)`` for any ``H, W >= 1`` and, with
``residual=True`` (the default), returns ``x + body(x)`` with ``body`` initialised to zero, so an
untrained network is exactly the identity.

The general-purpose networks are listed here; a method's own networks register themselves from its folder
(:func:`register_net`, e.g. the large-factor prior's restorer from ``napari_emsr.methods.gpemsr``), which the
registry imports (by name) before it answers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from napari_emsr.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["NETS", "DESCRIPTIONS", "build_net", "grid_of", "net_names", "net_sizes", "register_net"]

#: name -> (module, class name). The modules are imported only by :func:`build_net`.
NETS: dict[str, tuple[str, str]] = {
    "uformer": ("napari_emsr.nets.uformer_arch", "UFormer"),
    "rescnn": ("napari_emsr.nets.rescnn_arch", "ResCNN"),
    "rescnn-sections": ("napari_emsr.nets.rescnn_sections", "ResCNNSections"),
    "uformer-sections": ("napari_emsr.nets.uformer_sections", "UFormerSections"),
}

#: name -> one line that says what the network is.
DESCRIPTIONS: dict[str, str] = {
    "uformer": (
        "U-shaped vision transformer of A2I-3DEM (Khateri et al.): window attention with relative "
        "position bias and gated locally-enhanced feed-forward; best quality, wants a GPU."
    ),
    "rescnn": (
        "Small residual CNN working mostly at half resolution for a large receptive field; "
        "fast enough to train and run on a CPU."
    ),
    "rescnn-sections": (
        "The residual CNN on the section grid: it restores from the sections themselves and upsamples along z "
        "itself (sub-pixel), F times less work per output voxel."
    ),
    "uformer-sections": (
        "The U-shaped attention network on the section grid: F times less work per output voxel than uformer."
    ),
}


def register_net(name: str, module: str, class_name: str, description: str = "") -> None:
    """Add network ``name``: class ``class_name`` of ``module`` (imported by :func:`build_net` only)."""
    NETS[name] = (module, class_name)
    if description:
        DESCRIPTIONS[name] = description


def _with_methods() -> None:
    """Import the method registry, whose folders register their own networks."""
    importlib.import_module("napari_emsr.methods")


def net_names() -> list[str]:
    """The names :func:`build_net` knows, in registry order."""
    _with_methods()
    return list(NETS)


def _module(name: str):
    key = str(name).strip().lower()
    if key not in NETS:
        _with_methods()
    if key not in NETS:
        raise InputError(
            f"Unknown network {name!r}. Known networks: {', '.join(net_names())}."
        )
    module_name, class_name = NETS[key]
    return importlib.import_module(module_name), class_name


def net_sizes(name: str) -> dict[str, dict[str, Any]]:
    """The named sizes of network ``name``: ``{"tiny": {...}, "small": {...}, "base": {...}}``.

    Each value holds the constructor keyword arguments of that size (a copy; edit freely).
    """
    module, _ = _module(name)
    return {size: dict(kwargs) for size, kwargs in module.SIZES.items()}


def grid_of(name: str) -> str:
    """The grid network ``name``'s body runs on: ``"output"`` (the interpolated plane's rows) or ``"sections"``
    (the section rows; such a network is built with the stack's ``factor``)."""
    module, _ = _module(name)
    return str(getattr(module, "GRID", "output"))


def build_net(name: str, size: str | None = None, **kwargs: Any) -> torch.nn.Module:
    """Build network ``name``.

    Parameters
    ----------
    name
        One of :func:`net_names` (case-insensitive).
    size
        One of the keys of :func:`net_sizes` (``"tiny"``, ``"small"``, ``"base"``), or None for
        the constructor's own defaults.
    **kwargs
        Constructor arguments; they override those of ``size``.

    Raises
    ------
    InputError
        When ``name`` or ``size`` is unknown, or the arguments do not fit the network.
    """
    module, class_name = _module(name)
    params: dict[str, Any] = {}
    if size is not None:
        sizes = module.SIZES
        key = str(size).strip().lower()
        if key not in sizes:
            raise InputError(
                f"Unknown size {size!r} for network {name!r}. Known sizes: {', '.join(sizes)}."
            )
        params.update(sizes[key])
    params.update(kwargs)
    cls = getattr(module, class_name)
    try:
        return cls(**params)
    except TypeError as exc:  # unknown keyword argument
        raise InputError(f"Cannot build network {name!r} with {params}: {exc}") from exc
