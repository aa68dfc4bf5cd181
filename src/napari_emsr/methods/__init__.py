"""Methods as data: a name, a pair-maker, a network, a loss, options and defaults, in one registry.

A method is not a class hierarchy. The trainer (:mod:`napari_emsr.train`) asks the method's *pair-maker* for
training batches, held-out validation pairs and a preview plane, and knows nothing of how pairs are made; the
command line's options and the panel's pickers are read from this registry. How a trained model is applied
(its inputs, the lazy result, the export and its fingerprint) is the method's :class:`Application`: the command line
and the panel ask it, and never compare method names. Adding a method means writing its folder
(``methods/<name>/``: a pair-maker, maybe earlier training stages, its application) that calls
:func:`register_method`, and naming the folder in :data:`BUILTIN`; nothing else changes.

The pair-maker protocol
-----------------------
``Method.pairs`` is a factory called once per training run with a :class:`~napari_emsr.methods.context.PairContext`
(the volume, F, patch size, normalisation, device, random generator, the method's resolved options, and the
results of earlier stages). It returns an object with:

``batch(n) -> (x, y)``
    Network input and target, torch tensors ``(n, 1, p, p)`` on ``ctx.device``.
``validation() -> (x, y)``
    Held-out pairs as numpy float32 ``(N, H, W)`` in the network's range; the trainer scores the network against
    ``x`` itself (the interpolation baseline) on them.
``info`` : dict
    What the pair-maker decided (e.g. the estimated section profile); recorded in the model's config. Its
    ``"options"`` entry, when present, holds the options as resolved (``"auto"`` replaced by what was chosen),
    which a resumed run continues with; its ``"notes"`` entry, a list of lines, is shown to the user.
``preview() -> numpy (H, W)`` (optional)
    The network input of the live preview plane; by default the interpolated xz plane of the volume.
``attach(net)`` (optional)
    Called with the restoring network once the pair-maker is made, before it trains (e.g. to copy an earlier
    stage's frozen weights into it, which the saved network then carries).

Multi-stage methods
-------------------
``Method.stages`` lists :class:`Stage` s trained before the restoring network (a learned degradation, a
codebook ...). Each is built with the context, stepped ``steps`` times (``step() -> dict`` with at least
``"loss"``), and its runner is then available to later stages and to the pair-maker as ``ctx.stages[name]``.
Its weights (``state_dict()``) are saved in the same model file; a resumed run loads them
(``load_state_dict``) and skips finished stages.

Importing this package does not import torch. The built-in methods' folders are imported by name
(:data:`BUILTIN`), as the networks are (:mod:`napari_emsr.nets`): they use the trainer and the reconstruction
engine, which ask this registry, so this module does not import them by statement.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import InputError

#: Training defaults every method starts from; a method's ``defaults`` override them. The one place they live.
TRAINING_DEFAULTS: Mapping[str, Any] = MappingProxyType({"steps": 3000, "patch": 64, "batch": 8, "lr": 1e-3})


@dataclass(frozen=True)
class Option:
    """A method-specific training option: a ``--name`` flag of the command line and a picker of the panel.

    Attributes
    ----------
    name : str
        Key in ``TrainConfig.options``; the flag is ``--`` + name with ``_`` as ``-``.
    default : Any
        Used when the option is not given.
    choices : tuple or None
        The allowed values (a drop-down in the panel), or None for a free value of ``type``.
    type : type
        ``str``, ``int`` or ``float``.
    help : str
        One line for ``--help`` and the panel's label tooltip.
    label : str
        The panel's label (default: the name).
    descriptions : mapping
        A tooltip per choice.
    """

    name: str
    default: Any
    choices: tuple | None = None
    type: type = str
    help: str = ""
    label: str = ""
    descriptions: Mapping[str, str] = field(default_factory=dict)

    def check(self, value: Any, method: str) -> Any:
        """``value`` converted to the option's type; InputError when it is not allowed."""
        try:
            if isinstance(value, bool) and self.type is not bool:
                raise TypeError
            value = self.type(value)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(
                f"option {self.name} of method {method!r} takes a {self.type.__name__}, got {value!r}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise InputError(
                f"unknown {self.name} {value!r} for method {method!r}: "
                f"choose one of {', '.join(map(str, self.choices))}"
            )
        return value


@dataclass(frozen=True)
class Stage:
    """A training stage that runs before the restoring network (see the module docstring).

    Attributes
    ----------
    name : str
        Shown in progress ("stage cyclegan 120 / 2000") and the key of its weights in the model file.
    steps : int
        Default number of steps; the option ``<name>_steps`` overrides it when the method declares it.
    build : callable
        ``build(ctx) -> runner`` with ``step() -> dict``, ``state_dict()``, ``load_state_dict(sd)``.
    when : callable or None
        ``when(options) -> bool``: whether the stage runs with these (resolved) options; None: always. A stage
        that only some choices need (the isotropic method's learned degradation, for ``--profile learned``).
    """

    name: str
    steps: int
    build: Callable[[Any], Any]
    when: Callable[[Mapping[str, Any]], bool] | None = None

    def active(self, options: Mapping[str, Any]) -> bool:
        """Whether the stage runs with ``options``."""
        return self.when is None or bool(self.when(options))


@dataclass(frozen=True)
class Application:
    """How a model of a method (or, for interpolation, the method itself) is applied to a volume.

    Attributes
    ----------
    kind : str
        What the result is: ``"axial"`` (the stack made isotropic along its anisotropic axis) or ``"lateral"``
        (every xy plane made finer). The panel shows the flow of this kind.
    lazy : callable
        ``lazy(volume, model, **options)``: the result as a lazy dask array in the input dtype.
    export : callable
        ``export(volume, model, path, *, device, overwrite, progress, stop, **options) -> Path``: the result
        written chunk by chunk (resumable zarr); ``stop()`` is checked between blocks.
    fingerprint : callable
        ``fingerprint(volume, model, **options) -> dict``: what produces an export (a resume compares it).
    check : callable
        ``check(model, volume=None)``: InputError when the model cannot be applied so (another method's model,
        another pixel type).
    summary : callable
        ``summary(volume, model, **options) -> (dict, str)``: what the written result is (its voxel size ...) for
        ``--json``, and a few words for the summary line ("" for nothing).
    open : callable or None
        ``open(source)``: the input as a Volume; None: the front end's own opener (with its voxel-size and channel
        choices).
    options : tuple of str
        The application's keyword options (``emsr apply`` flags of the same names); a flag given for an
        application that does not take it is refused.
    uncertainty : callable or None
        ``uncertainty(volume, model, path, **kwargs)``: the map of where the result is unsure, written as an
        export is; None when the application has none.
    cluster : bool
        Whether the export runs on a ``dask.distributed`` cluster.
    """

    kind: str
    lazy: Callable[..., Any]
    export: Callable[..., Any]
    fingerprint: Callable[..., dict]
    check: Callable[..., None]
    summary: Callable[..., tuple[dict, str]]
    open: Callable[[Any], Any] | None = None
    options: tuple[str, ...] = ()
    uncertainty: Callable[..., Any] | None = None
    cluster: bool = True

    @property
    def lateral(self) -> bool:
        """Whether the result makes xy planes finer (the stack's z is unchanged)."""
        return self.kind == "lateral"


@dataclass(frozen=True)
class Method:
    """One reconstruction method.

    Attributes
    ----------
    name : str
        What users type (``--method``) and pick in the panel.
    description : str
        One line for menus and ``--help``.
    pairs : callable or None
        The pair-maker factory (see the module docstring); None for a method that needs no training.
    net, size, loss : str or None
        Default network (``napari_emsr.nets`` registry name), its size preset, and the loss
        (``napari_emsr.losses.LOSSES``).
    order : int
        Interpolation along the anisotropic axis in front of the network (1 linear, 3 cubic); the whole
        method when ``pairs`` is None.
    defaults : mapping
        Training defaults that differ from :data:`TRAINING_DEFAULTS` (``steps``, ``patch``, ``batch``,
        ``batch_cuda`` (the batch on a CUDA device), ``lr``).
    options : tuple of Option
        Method-specific options.
    stages : tuple of Stage
        Training stages before the restoring network.
    loss_args : mapping
        Keyword arguments of the loss taken from options: loss argument -> option name.
    application : Application or None
        How its model is applied (see :class:`Application`); None: as an isotropic model (the lazy
        reconstruction of :mod:`napari_emsr.reconstruct`, :func:`application_of` gives it).
    inputs : callable or None
        ``inputs(input=, hr=, lr=, factor=) -> (volume, settings)``: the training volume of a method that learns
        from a pair of images (an LR and an HR), checked, and the settings it decided (``"input"``,
        ``"factor"``, ``"lr_image"``); None: it learns from the one stack it is given.
    """

    name: str
    description: str
    pairs: Callable[[Any], Any] | None = None
    net: str | None = None
    size: str | None = None
    loss: str | None = None
    order: int = 3
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: tuple[Option, ...] = ()
    stages: tuple[Stage, ...] = ()
    loss_args: Mapping[str, str] = field(default_factory=dict)
    application: Application | None = None
    inputs: Callable[..., tuple[Any, dict]] | None = None

    @property
    def trains(self) -> bool:
        """Whether the method learns (False for interpolation only)."""
        return self.pairs is not None

    def training_defaults(self) -> dict[str, Any]:
        """:data:`TRAINING_DEFAULTS` with the method's own defaults over them."""
        return {**TRAINING_DEFAULTS, **self.defaults}

    def option(self, name: str) -> Option | None:
        """The option called ``name``, or None."""
        return next((o for o in self.options if o.name == name), None)

    def resolve_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every option of the method: the given values (checked) over the defaults; unknown names refused.
        A value of None means the default."""
        given = {k: v for k, v in dict(given or {}).items() if v is not None}
        unknown = [k for k in given if self.option(k) is None]
        if unknown:
            known = ", ".join(o.name for o in self.options) or "none"
            raise InputError(
                f"method {self.name!r} has no option {', '.join(map(repr, unknown))} (its options: {known})"
            )
        return {o.name: o.check(given[o.name], self.name) if o.name in given else o.default for o in self.options}


#: Names a method option may not take: the training config's own fields and the command line's other flags.
RESERVED_OPTION_NAMES = frozenset({
    "factor", "axis", "method", "net", "size", "net_kwargs", "steps", "minutes", "patch", "batch", "lr", "options",
    "device", "seed", "val_every", "preview_every", "checkpoint", "checkpoint_every", "threads", "resume", "input",
    "output", "overwrite", "channel", "model", "fuse", "save_model", "json", "quiet", "verbose", "version", "fast",
    "demo_factor", "demo_profile", "help", "command", "func",
})

#: name -> Method, in menu order (the default first).
METHODS: dict[str, Method] = {}
DEFAULT_METHOD = "isotropic"


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (the CLI, the panel and the trainer find it there)."""
    if method.name in METHODS and not replace:
        raise ValueError(f"a method called {method.name!r} is already registered (pass replace=True)")
    for opt in method.options:
        if opt.name in RESERVED_OPTION_NAMES or not opt.name.isidentifier():
            raise ValueError(
                f"method {method.name!r}: an option cannot be called {opt.name!r} (a training setting or command-line "
                "flag of its own, or not a Python name); choose another name"
            )
        other = all_options().get(opt.name)
        if other is not None and (other.type, other.choices) != (opt.type, opt.choices):
            raise ValueError(
                f"method {method.name!r}: option {opt.name!r} is declared by another method with another type or "
                "choices (one --flag serves both); choose another name"
            )
    METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method from the registry (no error when it is not there)."""
    METHODS.pop(name, None)


def method_names() -> list[str]:
    """Names of the methods, the default first."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """Look a method up by name; an unknown name raises InputError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None


def all_options() -> dict[str, Option]:
    """Every option of every registered method, by name (the first declaration wins)."""
    out: dict[str, Option] = {}
    for m in METHODS.values():
        for o in m.options:
            out.setdefault(o.name, o)
    return out


def method_of(model: Any) -> Method:
    """The method of a model (its config's ``method``) or of a method name (interpolation)."""
    if isinstance(model, str):
        return get_method(model)
    return get_method(str(model.config.get("method")))


def application_of(model: Any) -> Application:
    """How ``model`` (or the method called so) is applied."""
    # NOTE: a model whose config names no registered method is applied as an isotropic one, whose checks
    # (EMSRModel.validate) then say what is wrong with it; a method name typed by the user must be known.
    meth = get_method(model) if isinstance(model, str) else METHODS.get(str(model.config.get("method")))
    if meth is None or meth.application is None:  # by name, as the built-in folders are (module docstring)
        return importlib.import_module("napari_emsr.methods.isotropic.apply").AXIAL
    return meth.application


#: The built-in methods' folders, in menu order (the default first); importing one registers its methods.
BUILTIN = ("napari_emsr.methods.isotropic", "napari_emsr.methods.interpolation", "napari_emsr.methods.gpemsr",
           "napari_emsr.methods.paired")


def _register_builtin() -> None:
    for module in BUILTIN:
        importlib.import_module(module)


_register_builtin()
