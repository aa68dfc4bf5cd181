"""Methods as data: a name, how training pairs are made, which network and loss learn from them, defaults.

Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class Method:
    """One reconstruction method.

    Attributes
    ----------
    name : str
        What users type (``--method``) and pick in the widget.
    description : str
        One line for menus and ``--help``.
    pairs : str
        How training pairs are made: ``"lateral-self-supervised"`` (paper 000) or ``"none"`` (no training).
    net, size, loss : str or None
        Default network (registry name), its size preset and the loss (``losses.LOSSES``).
    order : int
        Interpolation along z in front of the network (1 linear, 3 cubic); the whole method for ``pairs="none"``.
    defaults : dict
        Default training options (``TrainConfig`` fields) chosen from measurements.
    """

    name: str
    description: str
    pairs: str
    net: str | None = None
    size: str | None = None
    loss: str | None = None
    order: int = 3
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def trains(self) -> bool:
        return self.pairs != "none"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            name="isotropic",
            description="self-supervised isotropic reconstruction (A2I-3DEM, paper 000): learn from the stack's own "
            "xy planes degraded like z, restore every xz/yz plane",
            pairs="lateral-self-supervised",
            net="rescnn",
            size="small",
            loss="l1_pdl",
            order=3,
            # NOTE: profile "auto" estimates the section profile from the stack (degrade.estimate_profile): a
            # wrong guess is costly (medulla F = 4 slab stack, H100 5 min: point training +0.51 dB over cubic)
            # and assuming more blur than the stack has costs most (point stack, slab training: -1.00 dB, 3 min
            # CPU), so the estimate leans to the less blurred profile when it is unsure.
            # batch_cuda: on an H100, batch 8 leaves the GPU idle (rescnn/small 865 samples/s at batch 8,
            # 10,400 at 128); 64 measured +1.5 dB over cubic in 5 min (medulla F = 4 point).
            defaults={"profile": "auto", "patch": 64, "batch": 8, "batch_cuda": 64, "lr": 1e-3, "steps": 3000},
        ),
        Method(
            name="cubic",
            description="cubic B-spline interpolation along z (no training): the baseline every figure is compared with",
            pairs="none",
            order=3,
        ),
        Method(
            name="linear",
            description="linear interpolation along z (no training)",
            pairs="none",
            order=1,
        ),
    )
}

DEFAULT_METHOD = "isotropic"


def method_names() -> list[str]:
    """Names of the methods, the default first."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """Look a method up by name; an unknown name raises InputError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None
