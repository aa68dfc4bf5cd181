"""The panel's parameters and status as plain evented dataclasses (psygnal), free of Qt.

The dock panel (:class:`napari_emsr.plugin.panel.EMSRWidget`) holds one of each: its sub-widgets show them
and write to them, and a script, a test or a benchmark can do the same without touching a widget::

    panel.input_params.layer = "medulla anisotropic"
    panel.params.steps = 200
    panel.params.set_option("profile", "slab")
    panel.status.events.step.connect(lambda step: ...)
    panel.start_training()

Every field has an event of its name (``params.events.patch``), emitted with the new and the old value when
the value changes. Containers are replaced, never edited in place (``params.set_option`` does that), so that
a change is always seen.

Importing this module imports neither Qt nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psygnal import evented

#: The two kinds of training budget.
BUDGET_KINDS = ("steps", "minutes")
#: The reconstructions the panel can add as layers and export.
PLANES = ("xz", "yz", "fuse")
#: What each reconstruction is called in layer names and menus.
PLANE_LABELS = {"xz": "xz-restored", "yz": "yz-restored", "fuse": "fused", "uncertainty": "uncertainty",
                "xy": "xy-restored"}
#: The states of :class:`TrainingStatus` and :class:`ExportStatus`.
IDLE, RUNNING, STOPPING = "idle", "running", "stopping"


def _methods() -> Any:
    """The method registry (imported on first use; it imports no torch)."""
    from napari_emsr import methods

    return methods


@evented
@dataclass
class InputParameters:
    """What the panel works on: a layer of the viewer and the voxel size to assume for it.

    Attributes
    ----------
    layer : str or None
        Name of the picked image layer (None when there is none). Picking one sets ``spacing`` and ``unit``
        from the layer.
    spacing : tuple of float
        Voxel size (z, y, x) in ``unit``; it sets the anisotropy factor F (see :attr:`factor`).
    unit : str
        Unit of ``spacing``.
    """

    layer: str | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit: str = "nm"

    @property
    def factor(self) -> float:
        """F = z spacing / lateral spacing (:func:`napari_emsr.geometry.factor_from_spacing`)."""
        from napari_emsr.geometry import factor_from_spacing

        if float(self.spacing[2]) <= 0:
            return 1.0
        return float(factor_from_spacing(self.spacing, 0))

    def set_factor(self, factor: float) -> None:
        """Set F by changing the z spacing (the lateral spacing stays)."""
        _, y, x = self.spacing
        self.spacing = (float(factor) * float(x), float(y), float(x))


@evented
@dataclass
class TrainingParameters:
    """How to train: the method and its options, the budget, the patch, the network and the device.

    Attributes
    ----------
    method : str
        A name of :func:`napari_emsr.methods.method_names` (default: the registry's default method). Picking
        one in the panel resets the network, patch, steps and options to the method's defaults
        (:meth:`use_method_defaults`).
    budget : str
        ``"steps"`` or ``"minutes"``: which of the two next fields bounds training.
    steps : int
        Training steps (with ``budget="steps"``).
    minutes : int
        Wall-clock minutes (with ``budget="minutes"``).
    patch : int
        Side of the square lateral training patches, in pixels.
    net, size : str or None
        Network (:func:`napari_emsr.nets.net_names`) and its size (:func:`napari_emsr.nets.net_sizes`).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda:0"``, ``"mps"`` ...
    options : dict
        The method's options by name (its :class:`napari_emsr.methods.Option` s), e.g. ``{"profile": "auto"}``.
    val_every, preview_every : int or None
        Steps between validations / preview planes; None picks them from the budget.
    threads : int or None
        torch threads on a CPU; None leaves one core to napari.
    """

    method: str = field(default_factory=lambda: _methods().DEFAULT_METHOD)
    budget: str = "steps"
    steps: int = field(default_factory=lambda: int(_methods().TRAINING_DEFAULTS["steps"]))
    minutes: int = 30
    patch: int = field(default_factory=lambda: int(_methods().TRAINING_DEFAULTS["patch"]))
    net: str | None = None
    size: str | None = None
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    val_every: int | None = None
    preview_every: int | None = None
    threads: int | None = None

    def set_option(self, name: str, value: Any) -> None:
        """Set one method option (a new dict, so that ``events.options`` fires)."""
        self.options = {**self.options, name: value}

    def use_method_defaults(self) -> None:
        """Reset the network, patch, steps and options to the defaults of :attr:`method`."""
        method = _methods().get_method(self.method)
        defaults = method.training_defaults()
        if method.net:
            self.net = method.net
        if method.size:
            self.size = method.size
        if "patch" in defaults:
            self.patch = int(defaults["patch"])
        if "steps" in defaults:
            self.steps = int(defaults["steps"])
        self.options = {o.name: o.default for o in method.options}

    def to_config(self, factor: float) -> Any:
        """The :class:`napari_emsr.train.TrainConfig` these parameters describe, for a stack of factor F.

        Validation and preview come every ``budget / 20`` steps (at most 50 and 100) unless set.
        """
        from napari_emsr.train import TrainConfig

        kwargs: dict[str, Any] = {
            "method": self.method,
            "patch": int(self.patch),
            "net": self.net,
            "size": self.size,
            "factor": float(factor),
            "device": self.device,
            "threads": self.threads,
            "options": dict(self.options),
        }
        if self.budget == "minutes":
            kwargs["minutes"] = float(self.minutes)
            every = None
        else:
            kwargs["steps"] = int(self.steps)
            every = max(1, min(100, int(self.steps) // 20)) if self.steps else None
        kwargs["val_every"] = self.val_every or min(50, every or 50)
        kwargs["preview_every"] = self.preview_every or every or 100
        return TrainConfig(**kwargs)


@evented
@dataclass
class ReconstructParameters:
    """Which reconstructions to add as lazy layers, and which one to export.

    Attributes
    ----------
    planes : tuple of str
        Among ``"xz"``, ``"yz"``, ``"fuse"`` (:data:`PLANES`).
    export_planes : str
        One of them.
    scheduler : str
        Where Export computes: ``""`` (this process), a dask scheduler address (``tcp://host:8786``) or
        ``local:N`` (:func:`napari_emsr.cluster.open_client`).
    enhance : bool
        With a paired model: apply it at the same resolution (an enhancer, as in EMSR by Khateri et al.)
        instead of making the xy planes ``s`` times finer.
    deband : bool
        With an isotropic model: the planes between sections filtered to the sections' detail
        (:mod:`napari_emsr.deband`), for the layers and the export.
    heldout : bool
        Judge the model on the stack's own held-out sections after training and after Reconstruct
        (:func:`napari_emsr.heldout.estimate`; it trains a small judge, so it costs a while).
    heldout_steps : int or None
        Steps of that judge (None: the library's default).
    """

    planes: tuple[str, ...] = ("xz",)
    export_planes: str = "fuse"
    scheduler: str = ""
    enhance: bool = False
    deband: bool = True
    heldout: bool = False
    heldout_steps: int | None = None


#: Where the paired method's factor came from (:attr:`PairedParameters.factor_from`).
FACTOR_SOURCES = ("pixel sizes", "sizes", "typed", "")


@evented
@dataclass
class PairedParameters:
    """The paired method's inputs: an LR and an HR image layer of the same region, and the lateral factor.

    Attributes
    ----------
    lr : str or None
        Name of the LR image layer (the large field, or a whole series): training pairs with the HR, and what
        Reconstruct and Export super-resolve. None: the HR alone trains, with recipe I or II (Method's Recipe).
    hr : str or None
        Name of the HR image layer (the small field at high resolution): the training target.
    factor : float
        s, HR pixels per LR pixel (any number >= 1, e.g. 3.33).
    factor_from : str
        ``"pixel sizes"`` (the layers' scale), ``"sizes"`` (their shapes, for two images of the same field),
        ``"typed"`` (set by the user) or ``""`` (not derived yet).
    """

    lr: str | None = None
    hr: str | None = None
    factor: float = 2.0
    factor_from: str = ""


@evented
@dataclass
class TrainingStatus:
    """Where training is; the panel updates it on the main thread from the worker's events.

    Attributes
    ----------
    state : str
        ``"idle"``, ``"running"`` or ``"stopping"``.
    step, total : int
        The last step done and the last step of this run (0 when a time budget leaves it open).
    start_step : int
        The step this run started from (non-zero when resuming).
    loss : float or None
        Training loss of the last step.
    gain : float or None
        The last validation's PSNR gain of the network over cubic interpolation (dB).
    stage : str
        Name of the training stage running (multi-stage methods).
    stage_index, stage_count : int
        Which stage of how many (0-based index).
    elapsed : float
        Seconds since training started.
    budget_seconds : float
        The time budget in seconds (0 with a step budget).
    stage_started, stage_first_step : float, int
        ``elapsed`` and ``step`` when the current stage sent its first event (for the time left of a stage
        with a step budget).
    message : str
        One line for people.
    """

    state: str = IDLE
    step: int = 0
    total: int = 0
    start_step: int = 0
    loss: float | None = None
    gain: float | None = None
    stage: str = ""
    stage_index: int = 0
    stage_count: int = 1
    elapsed: float = 0.0
    budget_seconds: float = 0.0
    stage_started: float = 0.0
    stage_first_step: int = 0
    message: str = ""

    @property
    def busy(self) -> bool:
        """Whether a training run is under way (running or stopping)."""
        return self.state != IDLE

    def seconds_left(self) -> float | None:
        """Seconds of training left: the time budget's rest, else the current stage's steps left at its
        measured rate (then the later stages are not counted); None before there is a rate."""
        if self.budget_seconds:
            return max(0.0, self.budget_seconds - self.elapsed)
        done = self.step - self.stage_first_step
        spent = self.elapsed - self.stage_started
        if done <= 0 or spent <= 0 or not self.total:
            return None
        return max(0.0, (self.total - self.step) * spent / done)

    def stage_prefix(self) -> str:
        """``"stage cyclegan "`` for an earlier stage, ``"restore "`` for the last one of several, else ``""``."""
        if self.stage_count <= 1 or not self.stage:
            return ""
        return f"stage {self.stage} " if self.stage_index < self.stage_count - 1 else f"{self.stage} "

    def progress_text(self) -> str:
        """The progress bar's text: the stage, its steps and the time (elapsed and left with a time budget)."""
        prefix = self.stage_prefix()
        steps = f"{self.step}/{self.total}" if self.total else f"step {self.step}"
        left = self.seconds_left()
        if self.budget_seconds:
            # NOTE: the restoring network's step count is only a cap under a time budget: no "of N" for it.
            last = self.stage_index >= self.stage_count - 1
            steps = f"step {self.step}" if last or not self.total else steps
            return f"{prefix}{steps} · {clock(self.elapsed)} elapsed, {clock(left or 0.0)} left"
        when = f" · {clock(left)} left" if left is not None else ""
        return f"{prefix}{steps} steps{when}"


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a number of seconds."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@evented
@dataclass
class ExportStatus:
    """Where the export is.

    Attributes
    ----------
    state : str
        ``"idle"``, ``"running"`` or ``"stopping"`` (cancel asked).
    done, total : int
        Blocks written and to write.
    path : str
        Where it writes.
    message : str
        One line for people.
    elapsed : float
        Seconds since the export started.
    estimate : float
        Seconds it was estimated to take before it started (0: no estimate, see
        :mod:`napari_emsr.plugin.estimate`).
    first_done, first_count : float, int
        ``elapsed`` and ``done`` when the first block was reported (the rate after it gives the time left).
    """

    state: str = IDLE
    done: int = 0
    total: int = 0
    path: str = ""
    message: str = ""
    elapsed: float = 0.0
    estimate: float = 0.0
    first_done: float = 0.0
    first_count: int = 0

    @property
    def busy(self) -> bool:
        """Whether an export is under way."""
        return self.state != IDLE

    def seconds_left(self) -> float | None:
        """Seconds left: at the rate measured since the first block was written (the first one pays for
        starting up), else the estimate's rest; None when neither is known."""
        if self.total and self.done >= self.total:
            return 0.0
        since = self.done - self.first_count
        if since > 0 and self.elapsed > self.first_done:
            return (self.total - self.done) * (self.elapsed - self.first_done) / since
        if self.done and self.elapsed > 0:
            return (self.total - self.done) * self.elapsed / self.done
        if self.estimate:
            return max(0.0, self.estimate - self.elapsed)
        return None

    def progress_text(self) -> str:
        """``"5/13 blocks · 1:02 elapsed, about 1:40 left"`` (the estimate before the first block)."""
        blocks = f"{self.done}/{self.total} blocks" if self.total > 1 or self.done else "starting"
        left = self.seconds_left()
        measured = self.done > 0
        when = f", {'about ' if measured else 'estimated '}{clock(left)} left" if left is not None else ""
        return f"{blocks} · {clock(self.elapsed)} elapsed{when}"


@evented
@dataclass
class RuntimeState:
    """What the panel has learned and made while it runs (beside its parameters and status): the model, the
    measured speeds, the measures of the input and of the result, and the layers it added.

    Every field has an event of its name; the controllers set them on the main thread and follow each other's
    through these events (a new model is timed again, a new speed updates the estimates). Containers are replaced,
    never edited in place.

    Attributes
    ----------
    model : napari_emsr.model.EMSRModel or None
        The trained or loaded model.
    anisotropy : dict or None
        The last anisotropy measure of the input (:func:`napari_emsr.metrics.anisotropy`).
    train_speed, restore_speed : napari_emsr.plugin.estimate.Speed or None
        How fast this device trains with the current choices and restores with the current model.
    recommended : tuple or None
        The recommended budget, ``(kind, value)`` (``("steps", 3000)``).
    quality : dict or None
        The reference-free measures of the last reconstruction.
    heldout : napari_emsr.heldout.QualityEstimate or None
        The held-out-section figure of the current model, when asked for.
    reconstructed_layers : list
        The layers added by the last Reconstruct (and the comparison's restored layer).
    comparing : tuple or None
        (input, cubic, restored) layers shown side by side.
    """

    model: Any = None
    anisotropy: dict | None = None
    train_speed: Any = None
    restore_speed: Any = None
    recommended: tuple | None = None
    quality: dict | None = None
    heldout: Any = None
    reconstructed_layers: list = field(default_factory=list)
    comparing: tuple | None = None
