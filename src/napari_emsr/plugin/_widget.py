"""The napari-emsr dock panel: pick a layer, train, watch, stop, resume, reconstruct lazily, save, export.

The panel holds its parameters and status as evented dataclasses (:mod:`napari_emsr.plugin.state`), shows
them in sub-widgets (:mod:`napari_emsr.plugin.widgets`) and runs the core (``train``, ``reconstruct``, ``io``,
``model``) in thread workers (:mod:`napari_emsr.plugin.workers`). Layer geometry (scale, translate, units) comes
from :mod:`napari_emsr.plugin.layers`. Everything the panel does, a script can do with its public methods and
by setting its parameters::

    panel.input_params.layer = "medulla anisotropic"
    panel.params.steps = 200
    panel.status.events.state.connect(print_state)
    panel.start_training()

Every long task runs off the GUI thread; the viewer is touched only in slots that Qt runs on the main thread
(``yielded``, ``returned``, ``finished``). Errors appear as napari notifications carrying the core's messages
verbatim, and in the status line.
"""

from __future__ import annotations

import logging
import time
import weakref
from functools import partial
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import QFormLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin import estimate
from napari_emsr.plugin.layers import (
    AXIS_LABELS,
    layer_spacing,
    layer_to_volume,
    paging_order,
    preview_layer_kwargs,
    reconstruction_layer_kwargs,
    uncertainty_layer_kwargs,
)
from napari_emsr.plugin.lazy_layer import (
    COMPUTING,
    INTERPOLATED,
    NOTHING,
    RESTORED,
    RestoredPlanes,
    cubic_region,
    link,
)
from napari_emsr.plugin.paired import PairedFlow
from napari_emsr.plugin.state import (
    IDLE,
    PLANE_LABELS,
    RUNNING,
    STOPPING,
    ExportStatus,
    InputParameters,
    ReconstructParameters,
    TrainingParameters,
    TrainingStatus,
    clock,
)
from napari_emsr.plugin.widgets.compare_widget import CompareWidget
from napari_emsr.plugin.widgets.device_widget import DeviceWidget
from napari_emsr.plugin.widgets.export_widget import ExportWidget
from napari_emsr.plugin.widgets.input_widget import InputWidget
from napari_emsr.plugin.widgets.method_widget import MethodWidget
from napari_emsr.plugin.widgets.model_widget import ModelWidget
from napari_emsr.plugin.widgets.paired_widget import PairedWidget
from napari_emsr.plugin.widgets.plot_widget import LossPlotWidget
from napari_emsr.plugin.widgets.reconstruct_widget import ReconstructWidget
from napari_emsr.plugin.widgets.train_widget import TrainWidget
from napari_emsr.plugin.workers.block_worker import BlockNote, BlockQueue, block_task
from napari_emsr.plugin.workers.export_worker import ExportCancelled, ExportJob, export_task
from napari_emsr.plugin.workers.runner import start_task
from napari_emsr.plugin.workers.tasks import (
    anisotropy_task,
    compare_task,
    list_devices_task,
    load_model_task,
    net_sizes_task,
    reconstruct_task,
    save_model_task,
)
from napari_emsr.plugin.workers.train_worker import TrainSession, TrainUpdate, train_task

logger = logging.getLogger(__name__)

PREVIEW_LAYER = "emsr preview"
PREVIEW_CUBIC_LAYER = "emsr preview cubic"
#: Seconds between redraws of the plot and status line while training (events may come much faster).
REDRAW_INTERVAL = 0.25
#: The npe2 sample the panel offers when the viewer has no image: (plugin, key).
SAMPLE = ("napari-emsr", "medulla_anisotropic")
#: What to do next when a task fails with an error that is not one of the core's (those say it themselves).
NEXT_STEP = {
    "training": "try again with a smaller network or patch, or on the CPU (Device); the details are in the log",
    "export": "check that the output folder exists, is writable and has room, then export again (a zarr export "
    "resumes where it stopped)",
    "reconstruction": "press Reconstruct again; if it fails again, pick the CPU (Device)",
    "restoring a block": "page to the plane again to retry; if it fails again, Reconstruct on the CPU (Device)",
    "comparing": "press Side by side again; if it fails again, Reconstruct first",
    "saving the model": "pick a folder you can write to (Save model...)",
    "loading the model": "pick a .emsr.pt file saved by this panel or by emsr train (Load model...)",
    "checking the pair": "pick an LR and an HR layer of the same region (Paired LR / HR)",
    "registering": "check that the LR and HR layers show the same region and the factor s, then press Register",
}


def _runs_on_cpu(device: str) -> bool:
    """Whether ``device`` ("auto" included) means the CPU; torch is loaded once a model exists."""
    from napari_emsr.device import resolve_device

    return resolve_device(device) == "cpu"


def _alive(widget: QWidget) -> bool:
    """Whether the Qt side of ``widget`` still exists (a closed viewer deletes it before workers end)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return not getattr(widget, "_closed", False)


def _guarded(widget: QWidget, slots: Any) -> list:
    """Wrap slots so that they do nothing once ``widget`` is gone."""
    slots = list(slots) if isinstance(slots, (list, tuple)) else [slots]

    def wrap(slot: Any) -> Any:
        def run(*args: Any) -> None:
            if _alive(widget):
                slot(*args)

        return run

    return [wrap(slot) for slot in slots]


def _weak_emitters(panel: EMSRWidget) -> tuple:
    """``on_wanted`` and ``on_view`` callbacks of a restored layer's data, holding the panel weakly (the layer
    may outlive a closed panel); they emit the panel's queued signals from whichever thread napari slices in."""
    ref = weakref.ref(panel)

    def on_wanted(_planes: Any) -> None:
        alive = ref()
        if alive is not None and _alive(alive):
            alive.blocks_wanted.emit()

    def on_view(planes: Any, view: str) -> None:
        alive = ref()
        if alive is not None and _alive(alive):
            alive.layer_view_changed.emit(planes, view)

    return on_wanted, on_view


def _duration(seconds: float) -> str:
    """``0.4 s`` below a minute, else ``m:ss``."""
    return f"{seconds:.2g} s" if seconds < 60 else clock(seconds)


def _method(name: str) -> Any:
    from napari_emsr.methods import get_method

    return get_method(name)


class EMSRWidget(QWidget):
    """Isotropic reconstruction of an anisotropic EM stack, in one dock panel.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it).

    Attributes
    ----------
    input_params : InputParameters
        The picked layer and its voxel size.
    params : TrainingParameters
        Method, its options, budget, patch, network, device.
    reconstruct_params : ReconstructParameters
        Which reconstructions Reconstruct adds and Export writes.
    status : TrainingStatus
        Where training is (state, step, loss, gain over cubic, stage, message).
    export_status : ExportStatus
        Where the export is.
    model : napari_emsr.model.EMSRModel or None
        The trained or loaded model.
    anisotropy : dict or None
        The last anisotropy measure of the input (:func:`napari_emsr.metrics.anisotropy`).
    train_worker, export_worker : worker or None
        The running training / export worker.
    reconstructed_layers : list
        The layers added by the last Reconstruct.
    """

    #: (done, total) from the export worker thread; Qt queues it to the main thread.
    export_progress = Signal(int, int)
    #: A restored layer asked for blocks (emitted from whichever thread napari sliced in; queued).
    blocks_wanted = Signal()
    #: A restored layer's data and what it now shows (a view of :mod:`napari_emsr.plugin.lazy_layer`; queued).
    layer_view_changed = Signal(object, str)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.input_params = InputParameters()
        self.params = TrainingParameters()
        self.params.use_method_defaults()
        self.reconstruct_params = ReconstructParameters()
        self.status = TrainingStatus()
        self.export_status = ExportStatus()
        self.model: Any = None
        self.anisotropy: dict | None = None
        self.session: TrainSession | None = None
        self.train_worker: Any = None
        self.export_worker: Any = None
        self.export_job: ExportJob | None = None
        self.reconstructed_layers: list = []
        self.block_queue = BlockQueue()
        self.block_worker: Any = None
        self._told_views: set = set()
        self._hidden_in_3d: list = []
        self.comparing: tuple | None = None
        self.quality: dict | None = None
        self._last_redraw = 0.0
        self._anisotropy_request = 0
        self._following_layer = False
        self._workers: set = set()
        self._pending_updates: list[TrainUpdate | None] = []
        self._handling_updates = False
        self._last_stage: int | None = None
        self.restore_speed: estimate.Speed | None = None
        self.train_speed: estimate.Speed | None = None
        self.recommended: tuple[str, int] | None = None
        self._restore_key: tuple | None = None
        self._train_key: tuple | None = None
        self._speed_requests = {"restore": 0, "train": 0}
        self._block_running: dict | None = None
        self._export_t0 = 0.0
        self._anisotropy_running: set = set()

        self.input = InputWidget(napari_viewer, self.input_params)
        self.paired = PairedFlow(self)
        self.paired_box = PairedWidget(napari_viewer, self.paired.params)
        self.method = MethodWidget(self.params)
        self.device = DeviceWidget(self.params)
        self.train = TrainWidget(self.status)
        self.plot = LossPlotWidget()
        self.reconstruct = ReconstructWidget(self.reconstruct_params)
        self.compare = CompareWidget()
        self.models = ModelWidget()
        self.export = ExportWidget(self.reconstruct_params, self.export_status)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setObjectName("emsr_status")
        self.status_label.setContentsMargins(6, 2, 6, 4)
        self.sample_button = QPushButton("Open the sample stack (medulla FIB-SEM, z 40 nm, xy 10 nm)")
        self.sample_button.setToolTip(
            "No image yet: open napari-emsr's sample (File > Open Sample > napari-emsr does the same) to try the "
            "panel; or open your own stack (File > Open, or drag a TIFF / OME-Zarr in)"
        )
        self.budget_hint = QLabel("")
        self.budget_hint.setWordWrap(True)
        self.budget_hint.setTextFormat(Qt.TextFormat.RichText)
        self.train.layout().addWidget(self.plot)
        # NOTE: compact for a 1600 x 1150 window: the device is a row of the method's form, comparing a row of
        # the reconstruct box, and the status line stays below the scrolled sections, always in sight.
        self.method.form.addRow(self.device)
        self._add_budget_hint()
        self.reconstruct.layout().addWidget(self.compare)

        body = QWidget()
        column = QVBoxLayout(body)
        column.setContentsMargins(4, 4, 4, 4)
        column.setSpacing(2)
        for part in (self.sample_button, self.input, self.paired_box, self.method, self.train, self.reconstruct,
                     self.models, self.export):
            column.addWidget(part)
        column.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.status_label)
        self.setMinimumWidth(440)

        self.input_params.events.layer.connect(self._on_layer_changed)
        self.input_params.events.spacing.connect(self._on_spacing_changed)
        self.params.events.method.connect(self._on_method_changed)
        self.status.events.state.connect(self._update_buttons)
        self.export_status.events.state.connect(self._update_buttons)
        self.train.train_requested.connect(self.start_training)
        self.train.stop_requested.connect(self.stop_training)
        self.train.resume_requested.connect(partial(self.start_training, resume=True))
        self.reconstruct.reconstruct_requested.connect(self.reconstruct_layers)
        self.compare.side_by_side_requested.connect(self.show_side_by_side)
        self.compare.flip_requested.connect(self.flip_compare)
        self.models.save_requested.connect(self.save_model)
        self.models.load_requested.connect(self.load_model)
        self.export.export_requested.connect(self.export_volume)
        self.export.cancel_requested.connect(self.cancel_export)
        self.export_progress.connect(self._on_export_progress)
        self.sample_button.clicked.connect(self.open_sample)
        self.paired_box.register_requested.connect(self.paired.register)
        self.budget_hint.linkActivated.connect(lambda _: self.use_recommended_budget())
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._tick)
        # NOTE: measured after the user stops changing things (each measure costs a few seconds of CPU).
        self._speed_timer = QTimer(self)
        self._speed_timer.setSingleShot(True)
        self._speed_timer.setInterval(400)
        self._speed_timer.timeout.connect(self.measure_speeds)
        for event in (
            self.params.events.method, self.params.events.net, self.params.events.size, self.params.events.patch,
            self.params.events.device, self.input_params.events.layer, self.input_params.events.spacing,
        ):
            event.connect(lambda *_: self._speed_timer.start())
        for event in (self.reconstruct_params.events.planes, self.reconstruct_params.events.export_planes,
                      self.reconstruct_params.events.scheduler):
            event.connect(lambda *_: self._show_estimates())
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._update_sample_offer)
        self.blocks_wanted.connect(self._pump_blocks, Qt.ConnectionType.QueuedConnection)
        self.layer_view_changed.connect(self._on_layer_view, Qt.ConnectionType.QueuedConnection)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        # NOTE: first, so that the restored layers are hidden before napari slices the layers for 3D.
        napari_viewer.dims.events.ndisplay.connect(self._on_ndisplay, position="first")

        self._start(list_devices_task, connect={"returned": self.device.set_devices, "errored": self._quiet_error})
        self._start(net_sizes_task, connect={"returned": self.method.set_net_sizes, "errored": self._quiet_error})
        self._bind_keys()
        for event in (
            self.params.events.method, self.params.events.budget, self.params.events.steps,
            self.params.events.minutes, self.params.events.device, self.input_params.events.layer,
            self.reconstruct_params.events.planes, self.reconstruct_params.events.export_planes,
        ):
            event.connect(self._update_tooltips)
        for event in (self.paired.params.events.lr, self.paired.params.events.hr, self.paired.params.events.factor):
            event.connect(self._update_tooltips)
        self._update_buttons()
        self._update_sample_offer()
        self._show_method_sections()
        self._on_layer_changed(self.input_params.layer)
        self._speed_timer.start()

    # ------------------------------------------------------------------------------------ helpers
    @property
    def workers(self) -> tuple:
        """The thread workers running now (empty when the panel is idle)."""
        return tuple(self._workers)

    def _start(self, func: Any, *args: Any, connect: dict, progress: Any = None, **kwargs: Any) -> Any:
        """Start a task and keep a reference to its worker until it finishes."""
        holder: dict = {}

        def forget() -> None:
            self._workers.discard(holder.get("worker"))

        connect = {name: _guarded(self, slot) for name, slot in connect.items()}
        finished = connect.get("finished", [])
        connect["finished"] = [*finished, forget]
        worker = start_task(func, *args, connect=connect, progress=progress, **kwargs)
        if worker is not None:
            holder["worker"] = worker
            self._workers.add(worker)
        return worker

    def set_status(self, text: str) -> None:
        """Show one line of status under the panel."""
        self.status_label.setText(text)

    def _say(self, status: TrainingStatus | ExportStatus, text: str) -> None:
        """Set the message of ``status`` and show it in the status line."""
        status.message = text
        self.set_status(text)

    def _report_error(self, err: BaseException, what: str = "napari-emsr") -> None:
        """Status line and an error notification; the core's messages are shown verbatim."""
        from napari.utils.notifications import show_error

        if isinstance(err, EMSRError):
            message = str(err)  # the core's messages say what to do
        else:
            logger.error("%s failed", what, exc_info=(type(err), err, err.__traceback__))
            step = NEXT_STEP.get(what, "try again; the details are in the log")
            message = f"{what} failed: {type(err).__name__}: {err}. What to do: {step}."
        self.set_status(message)
        show_error(message)

    def _quiet_error(self, err: BaseException) -> None:
        logger.warning("napari-emsr background task failed: %s", err)

    def current_layer(self) -> Any:
        """The picked image layer (:attr:`input_params` ``.layer``), or None."""
        name = self.input_params.layer
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def current_volume(self) -> Any:
        """The picked layer as a :class:`napari_emsr.io.Volume` with the voxel size of :attr:`input_params`.

        Raises
        ------
        InputError
            When no layer is picked, or the layer is not a single-channel 3D volume.
        """
        layer = self.current_layer()
        if layer is None:
            raise InputError(
                "no image layer to work on: open a 3D stack (File > Open) or the sample "
                "(File > Open Sample > napari-emsr), then pick it under Input"
            )
        return layer_to_volume(layer, spacing=self.input_params.spacing, unit=self.input_params.unit)

    def _interpolation_only(self) -> bool:
        return not _method(self.params.method).trains

    def _model_or_method(self) -> Any:
        """The model to apply: the method's name for interpolation, else the trained/loaded model."""
        if self._interpolation_only():
            return self.params.method
        if self.model is None:
            raise InputError(
                "no model yet: press Train (or Load model...), or pick the cubic method to interpolate only"
            )
        if self.model.config.get("apply") == "lateral":
            raise InputError(
                "the current model super-resolves xy planes (method paired): pick the method paired to apply it to "
                "an LR layer (Reconstruct, Export), or train (or load) a model of this method"
            )
        return self.model

    def _bind_keys(self) -> None:
        """Train and Stop from the keyboard while napari's canvas has the focus (the buttons' own shortcuts
        work while the panel has it)."""
        from qtpy.QtGui import QKeySequence, QShortcut

        from napari_emsr.plugin.widgets.train_widget import NAPARI_KEYS, STOP_SHORTCUT, TRAIN_SHORTCUT

        ref = weakref.ref(self)

        def press(button: str) -> Any:
            def pressed(_viewer: Any) -> None:
                panel = ref()
                if panel is not None and _alive(panel):
                    target = panel.train.train_button if button == "train" else panel.train.stop_button
                    if target.isEnabled():
                        target.click()

            return pressed

        for button, key in NAPARI_KEYS.items():
            self.viewer.bind_key(key, press(button), overwrite=True)
        self._keys = dict(NAPARI_KEYS)
        # NOTE: shortcuts of the panel only (a window-wide one clashes with napari's canvas, which then gets none).
        self.shortcuts = {}
        for button, sequence in (("train", TRAIN_SHORTCUT), ("stop", STOP_SHORTCUT)):
            shortcut = QShortcut(QKeySequence(sequence), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(partial(press(button), None))
            self.shortcuts[button] = shortcut

    def _update_tooltips(self, *_: Any) -> None:
        """Each button's tooltip says what it will do with the current layer, budget, device and choices."""
        layer = repr(self.input_params.layer) if self.input_params.layer else "the picked layer"
        params = self.params
        budget = f"{params.minutes:g} minutes" if params.budget == "minutes" else f"{params.steps} steps"
        device = "the best device here" if params.device == "auto" else params.device
        step = int(self.model.step) if self.model is not None else None
        self.train.set_tooltips(layer, budget, device, step)
        labels = ", ".join(PLANE_LABELS[p] for p in self.reconstruct_params.planes) or "(tick one)"
        self.reconstruct.button.setToolTip(
            f"Add lazy {labels} layers of {layer}: the planes you page through are restored in the background "
            "(cubic interpolation meanwhile); other views and 3D show interpolation, never a frozen napari"
            + (f"; {self.reconstruct.estimate_label.text()}" if self.reconstruct.estimate_label.text() else "")
        )
        self.models.save_button.setToolTip(
            "Save the model (weights and settings, one file read without unpickling) for emsr apply or Load model"
        )
        self.models.load_button.setToolTip("Load a model saved here or by emsr train; it becomes the current model")
        export = PLANE_LABELS[self.reconstruct_params.export_planes]
        self.export.export_button.setToolTip(
            f"Write the whole {export} volume of {layer} to OME-Zarr or TIFF (asks where), chunk by chunk in the "
            "background; a cancelled zarr export resumes when exported again to the same path"
            + (f"; {self.export.estimate_text}" if self.export.estimate_text else "")
        )
        self.export.cancel_button.setToolTip("Stop the export at the next chunk (nothing written is marked complete)")
        if self.paired.active:
            self._paired_tooltips(budget, device, step)

    def _paired_tooltips(self, budget: str, device: str, step: int | None) -> None:
        pair = self.paired.params
        hr = repr(pair.hr) if pair.hr else "the HR layer"
        lr = repr(pair.lr) if pair.lr else "the LR layer"
        self.train.set_tooltips(f"{hr} (with {lr} as its LR, or the recipe without one)", budget, device, step)
        self.reconstruct.button.setToolTip(
            f"Add a lazy layer of {lr}: its xy planes {pair.factor:g} times finer (or enhanced at the same "
            "resolution), restored in the background as you page through z; cubic interpolation meanwhile"
        )
        self.export.export_button.setToolTip(
            f"Write every xy plane of {lr}, super-resolved (or enhanced), to OME-Zarr or TIFF, chunk by chunk in the "
            "background; the pixel size is divided by s"
        )

    def _update_buttons(self, *_: Any) -> None:
        training = self.status.busy
        self.train.set_state(
            running=training, can_train=not self._interpolation_only(), can_resume=self.model is not None
        )
        self.models.set_has_model(self.model is not None and not training)
        self.models.load_button.setEnabled(not training)
        self._update_tooltips()

    # ------------------------------------------------------------------------ first minute: sample, budget
    def _update_sample_offer(self, *_: Any) -> None:
        """Offer the sample stack while the viewer holds no image layer."""
        from napari.layers import Image

        if _alive(self):
            self.sample_button.setVisible(not any(isinstance(layer, Image) for layer in self.viewer.layers))

    def open_sample(self) -> None:
        """Open napari-emsr's anisotropic sample through its npe2 sample contribution, and pick it."""
        before = set(self.viewer.layers)
        self.viewer.open_sample(*SAMPLE)
        added = [layer for layer in self.viewer.layers if layer not in before]
        if added:
            self.input.set_layer(added[0])

    def _add_budget_hint(self) -> None:
        """Put the recommended budget on the row under the method's budget field."""
        form = self.method.form
        row = next(
            (r for r in range(form.rowCount())
             if (item := form.itemAt(r, QFormLayout.ItemRole.FieldRole)) is not None and item.layout() is not None
             and item.layout().indexOf(self.method.budget_value) >= 0),
            form.rowCount() - 1,
        )
        form.insertRow(row + 1, self.budget_hint)  # the whole row: one line
        self.budget_hint.setVisible(False)

    def measure_speeds(self) -> None:
        """Measure, in workers, how fast this device trains and restores with the current choices (for the
        recommended budget and the estimates of Reconstruct and Export; :mod:`napari_emsr.plugin.estimate`)."""
        if not _alive(self) or self.status.busy or getattr(self, "_cleaned", False):
            return  # measured again when training ends (a measure now would compete with it)
        if self.paired.active:  # NOTE: the probes time isotropic training and restoration: not measured here
            self.budget_hint.setVisible(False)
            self.reconstruct.show_estimate("")
            self.export.show_estimate("")
            return
        if self._anisotropy_running:  # NOTE: timed alone, or the speed measured is the two tasks' share
            self._speed_timer.start()
            return
        self.measure_training_speed()
        self.measure_restore_speed()

    def measure_training_speed(self) -> Any:
        """Time a few training steps of the current method, network, patch and device on the picked layer.

        Returns
        -------
        worker or None
        """
        try:
            if self._interpolation_only():
                raise InputError("no training")
            volume = self.current_volume()
            config = self.training_config()
        except EMSRError:
            self.budget_hint.setVisible(False)
            return None
        key = self._training_key()
        if key == self._train_key:
            return None
        self._train_key = key
        self._speed_requests["train"] += 1
        request = self._speed_requests["train"]
        self.budget_hint.setText("Recommended here: measuring this device's training speed...")
        self.budget_hint.setVisible(True)
        return self._start(
            estimate.measure_training_speed,
            volume,
            config,
            connect={"returned": partial(self._on_train_speed, request), "errored": partial(self._on_speed_error,
                                                                                              "train", request)},
        )

    def _on_train_speed(self, request: int, speed: estimate.Speed) -> None:
        if request != self._speed_requests["train"]:
            return
        self.train_speed = speed
        default = int(_method(self.params.method).training_defaults().get("steps") or self.params.steps)
        kind, value, text, rule = estimate.recommend_budget(speed, default)
        self.recommended = (kind, value)
        self.budget_hint.setText(f"Recommended: {text} · <a href=\"use\">use it</a>")
        self.budget_hint.setVisible(True)
        self.budget_hint.setToolTip(f"Measured: {speed.how}: {speed.rate:.3g} steps/s. {rule}. 'use it' sets the "
                                    "budget.")
        self.budget_hint.setVisible(True)

    def _speed_from_training(self) -> None:
        """The training speed the run just measured (its last stage's steps and time) replaces the probe's."""
        if self.paired.active:  # the probe it replaces is not run for the paired method
            return
        status = self.status
        steps, spent = status.step - status.stage_first_step, status.elapsed - status.stage_started
        key = self._training_key()
        if steps < 2 or spent <= 0 or key is None:
            return
        from napari_emsr.device import resolve_device

        device = resolve_device(self.params.device)  # torch is loaded: it just trained
        speed = estimate.Speed(steps / spent, "training", device,
                               f"the last training run on this stack: {steps} steps in {spent:.0f} s on {device}")
        self._train_key = key
        self._speed_requests["train"] += 1  # a probe still running is out of date
        self._on_train_speed(self._speed_requests["train"], speed)

    def _training_key(self) -> tuple | None:
        """What a training speed depends on (None without a usable layer)."""
        try:
            volume = self.current_volume()
        except EMSRError:
            return None
        params = self.params
        return (self.input_params.layer, tuple(volume.data.shape), params.method, params.net, params.size,
                params.patch, params.device, round(self.input_params.factor, 4))

    def _on_speed_error(self, which: str, request: int, err: BaseException) -> None:
        if request != self._speed_requests[which]:
            return
        logger.info("%s speed not measured: %s", which, err)
        if which == "train":
            self._train_key = None
            self.budget_hint.setText(f"Recommended budget not measured: {err}")
        else:
            self._restore_key = None

    def use_recommended_budget(self) -> None:
        """Set the budget to the recommended one (the link next to the budget field)."""
        if self.recommended is None:
            return
        kind, value = self.recommended
        setattr(self.params, kind, int(value))
        self.params.budget = kind

    # ------------------------------------------------------------------------------------ estimates
    def measure_restore_speed(self) -> Any:
        """Time the model's network (or the interpolation) on planes of the picked stack's size, in a worker.

        Returns
        -------
        worker or None
        """
        try:
            volume = self.current_volume()
            model = self._model_or_method()
        except EMSRError:
            self._show_estimates()
            return None
        factor = float(model.factor) if not isinstance(model, str) else float(self.input_params.factor)
        shape = tuple(int(n) for n in volume.data.shape)
        key = (model if isinstance(model, str) else id(model), self.params.device, shape, round(factor, 4))
        if key == self._restore_key:
            return None
        self._restore_key = key
        self.restore_speed = None
        self._speed_requests["restore"] += 1
        request = self._speed_requests["restore"]
        self.reconstruct.show_estimate("timing this device...")
        return self._start(
            estimate.measure_restore_speed,
            model,
            shape,
            factor,
            self.params.device,
            volume,
            connect={"returned": partial(self._on_restore_speed, request),
                     "errored": partial(self._on_speed_error, "restore", request)},
        )

    def _on_restore_speed(self, request: int, speed: estimate.Speed) -> None:
        if request == self._speed_requests["restore"]:
            self.restore_speed = speed
            self._show_estimates()

    def _estimate_factor(self) -> float:
        model = self.model
        if model is not None and not self._interpolation_only():
            return float(model.factor)
        return float(self.input_params.factor)

    def _kind(self) -> str:
        return self.restore_speed.kind if self.restore_speed is not None else "network"

    def estimates(self) -> dict:
        """Seconds Reconstruct's blocks and Export should take here (empty before the speed is measured).

        Returns
        -------
        dict
            ``{"blocks": {planes: (seconds, planes per block)}, "export": (seconds, blocks), "how": str}``.
        """
        speed = self.restore_speed
        layer = self.current_layer()
        if speed is None or layer is None:
            return {}
        try:
            volume = self.current_volume()
        except EMSRError:
            return {}
        shape = tuple(int(n) for n in volume.data.shape)
        nz, ny, nx = shape
        factor = self._estimate_factor()
        zo = estimate.output_depth(nz, factor)
        kind = self._kind()
        blocks = {}
        lazy_chunks = {"xz": (1, min(nx, 1024)), "yz": (min(ny, 1024), 1), "fuse": (min(ny, 64), min(nx, 1024))}
        for planes, (cy, cx) in lazy_chunks.items():
            if kind == "network":
                work = estimate.chunk_work(zo, ny, nx, planes, (0, cy), (0, cx))
            else:
                work = zo * cy * cx
            blocks[planes] = (speed.seconds(work), cy if planes != "yz" else cx)
        export_planes = self.reconstruct_params.export_planes
        work, count = estimate.volume_work(shape, factor, export_planes, estimate.export_chunks(volume, export_planes),
                                           kind)
        how = (f"{speed.how}: {speed.rate / 1e6:.3g} M {'px' if kind == 'network' else 'voxels'}/s; the work "
               "counted is what the network restores (each chunk's planes with their margins), not reading, "
               "interpolating or writing")
        return {"blocks": blocks, "export": (speed.seconds(work), count), "how": how}

    def _show_estimates(self, *_: Any) -> None:
        """The Reconstruct box and the Export box say how long things take here."""
        if not _alive(self):
            return
        found = self.estimates()
        if not found:
            if self.restore_speed is None and self._restore_key is None:
                self.reconstruct.show_estimate("")
                self.export.show_estimate("")
            return
        blocks = found["blocks"]
        parts = []
        for planes in self.reconstruct_params.planes or ("xz",):
            seconds, n = blocks[planes]
            what = {"xz": "xz plane", "yz": "yz plane"}.get(planes, f"fused block ({n})")
            parts.append(f"{what} {_duration(seconds)}")
        paired = "fuse" in self.reconstruct_params.planes and not self._interpolation_only()
        self.reconstruct.show_estimate(
            "here: " + " · ".join(parts),
            f"Each new plane or block is restored in the background as you view it"
            f"{' (a fused block with its uncertainty)' if paired else ''}. Estimated from {found['how']}.",
        )
        seconds, count = found["export"]
        where = self.reconstruct_params.scheduler.strip()
        text = f"≈ {clock(seconds)} here, {count} block{'s' if count != 1 else ''}"
        tip = f"Export of {PLANE_LABELS[self.reconstruct_params.export_planes]}: estimated from {found['how']}."
        if where:
            tip += f" On {where}, the time left comes from the blocks as they arrive."
        self.export.show_estimate(text, tip)
        self._update_tooltips()

    def _learn_speed(self, planes: RestoredPlanes, note: BlockNote) -> None:
        """A block restored here is a better measure of this device's speed than the probe: the estimates
        follow it (blocks under a second say too little; the comparison's cubic layer says nothing of the
        network)."""
        speed = self.restore_speed
        if speed is None or speed.kind != "network" or note.seconds < 1.0 or planes.on_view is None:
            return
        work = estimate.block_work(planes, note.block, self._estimate_factor())
        self.restore_speed = estimate.Speed(
            work / note.seconds, "network", speed.device,
            f"the last block restored here ({work / 1e6:.3g} M network px in {note.seconds:.1f} s)",
        )
        self._show_estimates()

    def _block_estimate(self, planes: RestoredPlanes, block: tuple[int, ...]) -> float | None:
        """Seconds a block should take: as long as this layer's blocks took so far, else from the speed."""
        measured = [t for data in (planes, *planes.partners) for t in data.seconds]
        if measured:
            return float(np.mean(measured[-3:]))
        if self.restore_speed is None:
            return None
        kind = self._kind()
        return self.restore_speed.seconds(estimate.block_work(planes, block, self._estimate_factor(), kind))

    def _tick(self) -> None:
        """Once a second while something runs: the block's and the export's elapsed and remaining time."""
        if not _alive(self):
            return
        running = False
        if self._block_running is not None:
            running = True
            self.set_status(self._block_text())
        if self.export_status.busy:
            running = True
            self.export_status.elapsed = time.perf_counter() - self._export_t0
            self._export_eta()
        if not running:
            self._clock.stop()

    def _block_text(self) -> str:
        run = self._block_running or {}
        spent = time.perf_counter() - run["t0"]
        guess = run["estimate"]
        left = f", about {clock(max(0.0, guess - spent))} left" if guess is not None else ""
        more = self.block_queue.waiting()
        queued = f"; {more} more block{'s' if more != 1 else ''} asked for" if more else ""
        return (f"Restoring {run['label']}, {run['axis']} {run['first']}-{run['last']} ({run['planes']} planes) in the "
                f"background: {clock(spent)} elapsed{left}{queued}.")

    def _export_eta(self) -> None:
        pbar = getattr(self.export_worker, "pbar", None)
        if pbar is not None:
            pbar.events.eta(value=self.export_status.progress_text())

    # ------------------------------------------------------------------------------------- input
    def _on_layer_changed(self, name: str | None, *_: Any) -> None:
        from napari.utils.notifications import show_warning

        layer = self.current_layer()
        self.anisotropy = None
        self.input.set_anisotropy("-")
        if layer is None:
            self.set_status("Open a 3D stack (File > Open) or File > Open Sample > napari-emsr.")
            return
        if layer.ndim == 3 and all(str(label).lstrip("-").isdigit() for label in layer.axis_labels):
            # NOTE: napari's default labels ("-3", "-2", "-1") would name the rolled axis "-2": z is the stack's
            # anisotropic axis, so call them what they are.
            layer.axis_labels = AXIS_LABELS
        spacing, unit = layer_spacing(layer)
        self._following_layer = True
        try:
            self.input_params.unit = unit
            self.input_params.spacing = spacing
        finally:
            self._following_layer = False
        try:
            self.current_volume()
        except EMSRError as err:
            self.set_status(str(err))
            show_warning(str(err))
            return
        self.set_status(f"Input: {layer.name} {tuple(layer.data.shape)}, factor {self.input_params.factor:.2f}")
        self.measure_anisotropy()

    def _on_spacing_changed(self, *_: Any) -> None:
        if not self._following_layer:
            self.measure_anisotropy()

    def measure_anisotropy(self) -> Any:
        """Measure the input's anisotropy (and the section profile "auto" stands for) in a worker.

        Returns
        -------
        worker or None
        """
        try:
            volume = self.current_volume()
        except EMSRError:
            return None
        self._anisotropy_request += 1
        request = self._anisotropy_request
        self.input.set_anisotropy("measuring...")
        self.method.set_auto_note("profile", None)

        def done() -> None:
            self._anisotropy_running.discard(request)

        self._anisotropy_running.add(request)
        return self._start(
            anisotropy_task,
            volume,
            self.input_params.factor,
            connect={
                "returned": partial(self._on_anisotropy, request),
                "errored": partial(self._on_anisotropy_error, request),
                "finished": done,
            },
        )

    def _on_anisotropy(self, request: int, result: dict) -> None:
        if request != self._anisotropy_request:
            return
        self.anisotropy = dict(result) if isinstance(result, dict) else None
        ratio = result.get("ratio") if isinstance(result, dict) else None
        text = f"{ratio:.2f}" if isinstance(ratio, (int, float)) else "-"
        detail = ", ".join(f"{k} {v:.3g}" for k, v in result.items() if isinstance(v, float) and k != "ratio")
        self.input.set_anisotropy(text, detail)
        estimate = result.get("profile") if isinstance(result, dict) else None
        if estimate:
            self.method.set_auto_note("profile", estimate.get("label", estimate["profile"]), estimate.get("note", ""))

    def _on_anisotropy_error(self, request: int, err: BaseException) -> None:
        if request == self._anisotropy_request:
            self.input.set_anisotropy("n/a")
            logger.info("anisotropy not measured: %s", err)

    # ------------------------------------------------------------------------------------ training
    def _on_method_changed(self, name: str, *_: Any) -> None:
        self.params.use_method_defaults()
        self._update_buttons()
        self._restore_key = None if self._interpolation_only() else self._restore_key
        self._show_method_sections()
        if self.paired.active:
            self.paired.pair_changed()

    def _show_method_sections(self) -> None:
        """The paired method works on an LR and an HR layer (the Paired box instead of Input) and restores xy
        planes (no xz / yz / fused choices, no side-by-side comparison)."""
        paired = self.paired.active
        self.input.setVisible(not paired)
        self.paired_box.setVisible(paired)
        self.compare.setVisible(not paired)
        self.reconstruct.set_lateral(paired)
        self.export.set_lateral(paired)
        if paired:
            self.budget_hint.setVisible(False)
            self.reconstruct.show_estimate("")
            self.export.show_estimate("")
            self.reconstruct.show_quality("")

    def training_config(self) -> Any:
        """The :class:`napari_emsr.train.TrainConfig` the panel's parameters describe."""
        if self.paired.active:
            return self.params.to_config(float(self.paired.params.factor))
        return self.params.to_config(self.input_params.factor)

    def training_inputs(self) -> tuple[Any, Any]:
        """The volume to train on and the training configuration (for the paired method: the HR layer, with the
        LR layer as the method's ``lr_image``, :meth:`napari_emsr.plugin.paired.PairedFlow.training_inputs`)."""
        if self.paired.active:
            return self.paired.training_inputs()
        return self.current_volume(), self.training_config()

    def start_training(self, resume: bool = False) -> Any:
        """Train a new network (or, with ``resume``, the current model further) in a thread worker.

        Returns
        -------
        worker or None
            The training worker (None when nothing was started, or in synchronous mode).
        """
        if self.status.busy:
            return self.train_worker
        try:
            if self._interpolation_only():
                raise InputError(
                    f"method {self.params.method!r} needs no training: press Reconstruct to apply it"
                )
            volume, config = self.training_inputs()
            if resume and self.model is None:
                raise InputError("nothing to resume: train or load a model first")
        except EMSRError as err:
            self._report_error(err, "training")
            return None
        resume_model = self.model if resume else None
        if not resume:
            self.plot.clear_plot()
        self.session = TrainSession()
        self._last_stage = None
        start = int(resume_model.step) if resume_model is not None else 0
        status = self.status
        status.start_step, status.step = start, start
        status.total = start + int(config.steps or 0)
        status.loss = status.gain = None
        status.stage, status.stage_index, status.stage_count, status.elapsed = "", 0, 1, 0.0
        status.budget_seconds = float(config.minutes) * 60.0 if config.minutes else 0.0
        status.stage_started, status.stage_first_step = 0.0, start
        status.state = RUNNING
        self._say(status, "Preparing training (reading the volume, building the network)...")
        self.train_worker = self._start(
            train_task,
            self.session,
            volume,
            config,
            resume_model,
            None,
            connect={
                "yielded": self._on_train_update,
                "errored": partial(self._report_error, what="training"),
                "finished": self._on_train_finished,
            },
            progress={"desc": "napari-emsr training"},
        )
        return self.train_worker

    def stop_training(self) -> None:
        """Stop after the current step; the model trained so far is kept and buttons come back."""
        if self.session is not None and self.status.state == RUNNING:
            self.session.stop()
            self.status.state = STOPPING
            self._say(self.status, "Stopping after the current step...")

    def _on_train_update(self, update: TrainUpdate) -> None:
        # NOTE: adding a layer can process pending Qt events, which would run this slot re-entrantly and
        # out of order; updates are queued and handled strictly in step order.
        self._pending_updates.append(update)
        self._drain_train_updates()

    def _drain_train_updates(self) -> None:
        if self._handling_updates:
            return
        self._handling_updates = True
        try:
            while self._pending_updates:
                update = self._pending_updates.pop(0)
                if update is None:
                    self._finish_training()
                else:
                    self._handle_train_update(update)
        finally:
            self._handling_updates = False

    def _handle_train_update(self, update: TrainUpdate) -> None:
        ev = update.event
        stage_index = int(getattr(ev, "stage_index", 0))
        stage_count = int(getattr(ev, "stage_count", 1))
        last_stage = stage_index == stage_count - 1
        if self._last_stage is not None and stage_index != self._last_stage:
            # NOTE: each stage counts its own steps: a new stage starts a new curve and a new progress bar.
            self.plot.clear_plot()
        new_stage = stage_index != self._last_stage
        self._last_stage = stage_index
        start = update.start_step if last_stage else 0
        status = self.status
        status.stage, status.stage_index, status.stage_count = str(getattr(ev, "stage", "")), stage_index, stage_count
        if new_stage:
            status.stage_started, status.stage_first_step = float(ev.elapsed), int(ev.step)
        status.start_step, status.total, status.step = start, int(ev.total), int(ev.step)
        status.loss, status.elapsed = float(ev.loss), float(ev.elapsed)
        if ev.gain is not None:
            status.gain = float(ev.gain)
        self._advance_activity_bar(ev, start, new_stage)
        self.plot.add_points(ev.step, ev.loss, ev.gain)
        if ev.preview is not None:
            self._show_preview(ev.preview, update.preview_cubic)
        now = time.perf_counter()
        if ev.done or ev.gain is not None or now - self._last_redraw > REDRAW_INTERVAL:
            self._last_redraw = now
            self.plot.redraw()
            if status.state == RUNNING:
                self._say(status, self._progress_message())

    def _progress_message(self) -> str:
        status = self.status
        stage = f"{status.stage} ({status.stage_index + 1}/{status.stage_count}): " if status.stage_count > 1 else ""
        gain = f", gain over cubic {status.gain:+.2f} dB" if status.gain is not None else ""
        text = status.progress_text()[len(status.stage_prefix()) :]
        return f"{stage}{text}, loss {status.loss:.4g}{gain}"

    def _advance_activity_bar(self, ev: Any, start: int, new_stage: bool) -> None:
        """napari's activity-dock progress bar of the training worker: seconds with a time budget, else steps."""
        pbar = getattr(self.train_worker, "pbar", None)
        if pbar is None:
            return
        status = self.status
        if status.budget_seconds:
            total, done = int(round(status.budget_seconds)), int(ev.elapsed)
        else:
            total, done = ev.total - start, ev.step - start
        if new_stage and pbar.n and not status.budget_seconds:
            pbar.reset(total=total)
        if new_stage:
            stage = f": {status.stage_prefix().strip()}" if status.stage_count > 1 else ""
            pbar.set_description(f"napari-emsr training{stage}")
        if pbar.total != total:
            pbar.total = total
        if done > pbar.n:
            pbar.update(min(done, total) - pbar.n)
        # NOTE: napari's dock shows tqdm's "21/3000 [00:10<23:00, 2.1it/s]" here; steps mean little with a time
        # budget, so the panel's own words replace it after each update.
        pbar.events.eta(value=status.progress_text()[len(status.stage_prefix()) :])

    def _show_preview(self, preview: np.ndarray, cubic: np.ndarray | None) -> None:
        """Show the restored preview xz plane (and its cubic interpolation) beside the input (for the paired
        method: a held-out HR plane's LR input and its restoration, beside the HR layer)."""
        layer = self.current_layer()
        lateral = float(self.input_params.spacing[2])
        if self.paired.active:
            anchor = self.paired.preview_anchor()
            layer, lateral = anchor if anchor is not None else (None, lateral)
        if layer is None:
            return
        for slot, (name, data) in enumerate(((PREVIEW_CUBIC_LAYER, cubic), (PREVIEW_LAYER, preview))):
            if data is None:
                continue
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
            else:
                self.viewer.add_image(
                    data, **preview_layer_kwargs(layer, lateral, preview.shape[-1], slot, name)
                )
                self._label_preview(True)
        if not self.paired.active:
            self.input.set_layer(layer)

    def _label_preview(self, on: bool) -> None:
        """Say on the canvas which grey panel is which while the preview planes are beside the input."""
        overlay = self.viewer.text_overlay
        if on:
            overlay.text = "left: input · middle: cubic xz plane · right: restored xz plane (live preview)"
            if self.paired.active:
                overlay.text = ("left: input · middle: LR of a held-out HR plane (cubic) · right: restored (live "
                                "preview)")
            overlay.position = "top_center"
            overlay.font_size = 10
        if on or overlay.text.startswith("left: input"):
            overlay.visible = on

    def _on_train_finished(self) -> None:
        # None marks the end in the queue of updates, so the end is handled after the last update.
        self._pending_updates.append(None)
        self._drain_train_updates()

    def _finish_training(self) -> None:
        from napari_emsr.device import free_memory

        session = self.session
        model = session.final_model() if session is not None else None
        if session is not None:
            session.trainer = None
        self._speed_from_training()
        if model is not None:
            self._set_model(model)
            if self.paired.active:
                self.paired.after_training(model)
        self.train_worker = None
        self.plot.redraw()
        self.status.state = IDLE
        if model is not None:
            last = model.history[-1] if model.history else {}
            gain = (
                last.get("val_psnr", 0) - last.get("cubic_psnr", 0)
                if last.get("val_psnr") is not None
                else None
            )
            note = f", gain over cubic {gain:+.2f} dB" if gain is not None else ""
            self._say(self.status, f"Training ended at step {model.step}{note}. Reconstruct to see the whole volume.")
        free_memory()
        self._speed_timer.start()

    # ------------------------------------------------------------------------------------- model
    def _set_model(self, model: Any) -> None:
        self.model = model
        cfg = model.config
        if cfg.get("apply") == "lateral":
            self.models.set_info(f"{cfg.get('method')} / {cfg.get('net')} ({cfg.get('size')}), s = "
                                 f"{model.factor:.3g} (xy planes), step {model.step}")
        else:
            self.models.set_info(
                f"{cfg.get('method')} / {cfg.get('net')} ({cfg.get('size')}), F = {model.factor:.3g}, "
                f"axis {model.axis}, step {model.step}"
            )
        self._update_buttons()
        self._speed_timer.start()  # how fast this model restores here

    def save_model(self, path: str) -> Any:
        """Save the current model to ``path`` in a worker."""
        if self.model is None:
            self._report_error(InputError("no model to save yet: train or load one first"), "saving the model")
            return None
        return self._start(
            save_model_task,
            self.model,
            str(path),
            connect={
                "returned": lambda p: self.set_status(f"Model saved to {p}"),
                "errored": partial(self._report_error, what="saving the model"),
            },
        )

    def load_model(self, path: str) -> Any:
        """Load a model file in a worker; it becomes the current model."""
        from napari_emsr.methods import method_names

        def loaded(model: Any) -> None:
            self._set_model(model)
            method = model.config.get("method")
            if method in method_names():
                self.params.method = method
            self.set_status(f"Model loaded from {path}")

        return self._start(
            load_model_task,
            str(path),
            connect={"returned": loaded, "errored": partial(self._report_error, what="loading the model")},
        )

    # ------------------------------------------------------------------------------- reconstruct
    def reconstruct_layers(self, planes: list[str] | None = None) -> Any:
        """Add lazy layers of the reconstruction (xz-restored, yz-restored, fused) over the input.

        Parameters
        ----------
        planes : list of str, optional
            Among ``"xz"``, ``"yz"``, ``"fuse"``; default: :attr:`reconstruct_params` ``.planes``.
        """
        if self.paired.active:
            return self.paired.reconstruct()
        planes = list(planes or self.reconstruct_params.planes)
        try:
            if not planes:
                raise InputError("tick at least one of xz-restored, yz-restored, fused")
            layer = self.current_layer()
            volume = self.current_volume()
            model = self._model_or_method()
        except EMSRError as err:
            self._report_error(err, "reconstruction")
            return None
        factor = float(model.factor) if not isinstance(model, str) else float(self.input_params.factor)
        found = self.estimates().get("blocks", {})
        costs = ", ".join(
            f"a {PLANE_LABELS[p]} {'plane' if found[p][1] == 1 else 'block'} ≈ {_duration(found[p][0])}"
            for p in planes if p in found
        )
        self.set_status("Preparing the lazy reconstruction" + (f" (here {costs})..." if costs else "..."))
        if "fuse" in planes and not isinstance(model, str) and _runs_on_cpu(self.params.device):
            self._notify_fused_cost()
        self.reconstruct.button.setEnabled(False)
        return self._start(
            reconstruct_task,
            volume,
            model,
            planes,
            self.params.device,
            self.reconstruct_params.deband,
            connect={
                "returned": partial(self._on_reconstructed, layer, volume, factor),
                "errored": partial(self._report_error, what="reconstruction"),
                "finished": lambda: self.reconstruct.button.setEnabled(True),
            },
        )

    def _notify_fused_cost(self) -> None:
        """Say that a fused block is slow on a CPU (it is computed in the background; napari never waits)."""
        from napari.utils.notifications import show_info

        show_info(
            "napari-emsr: a fused plane needs the yz planes that cross it, so the fused layer restores 64 rows at "
            "a time: on a CPU each new block takes a while (benchmarks/bench_plane_latency.py --fused-viewer "
            "measures it). Blocks are computed in the background, cubic interpolation is shown meanwhile, and "
            "the activity dock shows (and cancels) what is being computed."
        )

    def _on_reconstructed(self, layer: Any, volume: Any, factor: float, results: list) -> None:
        show_xz = any(p in ("xz", "fuse") for p, *_ in results)
        flat = self.viewer.dims.ndisplay == 2
        if flat and self.viewer.dims.ndim >= 3:
            # NOTE: roll the dims BEFORE adding the layers, so that the first planes shown are the ones the
            # layers are chunked for (any other plane only shows interpolation, see lazy_layer).
            self.viewer.dims.order = paging_order(self.viewer.dims.ndim, "xz" if show_xz else "yz")
        interpolate = cubic_region(volume.data, factor)
        for preview in (PREVIEW_LAYER, PREVIEW_CUBIC_LAYER):
            if preview in self.viewer.layers:  # training's planes would sit beside the restored ones, unlabelled
                self.viewer.layers[preview].visible = False
        self._label_preview(False)
        added, made = [], {}
        for planes, array, _, joint in results:
            stand_in = None if planes == "uncertainty" else interpolate  # no interpolated stand-in for it
            made[planes] = RestoredPlanes(array, planes, stand_in, PLANE_LABELS[planes], *(joint or (None, 0)))
        if "uncertainty" in made:
            link(made["fuse"], made["uncertainty"])  # one network run fills a block of both
        for planes, _, out_spacing, _ in results:
            name = f"{layer.name} {PLANE_LABELS[planes]}"
            kwargs = reconstruction_layer_kwargs(
                layer,
                volume,
                out_spacing,
                name=name,
                spacing=self.input_params.spacing,
                unit=self.input_params.unit,
                metadata={"planes": planes, "input": layer.name},
            )
            if planes == "uncertainty":
                kwargs = uncertainty_layer_kwargs(kwargs)
            new = self._add_restored(name, made[planes], kwargs)
            # a yz layer seen in the xz view shows only interpolation: it stays hidden there
            new.visible = flat and not (show_xz and planes == "yz")
            if not flat and not (show_xz and planes == "yz"):
                self._hidden_in_3d.append(new)  # shown when the view goes back to 2D
            added.append(new)
        self.reconstructed_layers = added
        self.input.set_layer(layer)
        self.set_status(
            f"Added {', '.join(layer.name for layer in added)}: planes are restored in the background as you view "
            f"them ({'page through y for xz planes' if show_xz else 'page through x for yz planes'}); other views "
            "show cubic interpolation."
        )
        if "uncertainty" in made and not getattr(self, "_told_uncertainty", False):
            from napari.utils.notifications import show_info

            # NOTE: a notification, not only the status line: the layers' own lines replace it at once.
            self._told_uncertainty = True
            show_info(
                f"napari-emsr: {layer.name} uncertainty (hot colours over the fused layer) is bright where the xz "
                "and yz restorations disagree: trust those structures less. Hide it with its eye icon."
            )
        self.reconstruct.show_quality("")
        if not self._interpolation_only():
            self.measure_quality(volume, factor)

    # ------------------------------------------------------------------------------------ quality
    def measure_quality(self, volume: Any = None, factor: float | None = None) -> Any:
        """Reference-free measures of the input, cubic and the first restored layer, on a crop, in a worker.

        The crop is a few planes around the middle of the axis the layer is chunked along (the whole block for
        the fused layer), so this restores that much; :attr:`quality` holds the result, the Reconstruct box shows
        it with one line of reading, and a warning comes when the result bands.

        Returns
        -------
        worker or None
        """
        from napari_emsr.plugin.workers.tasks import quality_task

        layers = [
            layer for layer in self.reconstructed_layers
            if isinstance(layer.data, RestoredPlanes) and layer.data.planes != "uncertainty"
        ]
        if not layers:
            return None
        try:
            volume = volume if volume is not None else self.current_volume()
        except EMSRError:
            return None
        factor = float(factor if factor is not None else self.input_params.factor)
        data = min((layer.data for layer in layers), key=lambda d: max(d.chunks[d.axis]))  # the cheapest crop
        n = data.shape[data.axis]
        block = data.chunks[data.axis][0]
        centre = n // 2
        if block > 1:
            start = centre // block * block
            planes = slice(start, min(n, start + block))
        else:
            planes = slice(max(0, centre - 16), min(n, centre + 16))
        self.quality = None
        self.reconstruct.show_quality(f"Measuring quality (no ground truth) on {data.label}...")
        return self._start(
            quality_task,
            volume,
            data.dask,
            data.axis,
            planes,
            factor,
            connect={
                "returned": partial(self._on_quality, data.label),
                "errored": partial(self._on_quality_error),
            },
        )

    def _on_quality(self, label: str, result: dict) -> None:
        from napari.utils.notifications import show_warning

        from napari_emsr.plugin.workers.tasks import BANDING_WARNING

        self.quality = result
        inp, cubic, restored = result["input"], result["cubic"], result["restored"]
        axis = "zyx"[result["axis"]]
        bands = restored["banding"] < BANDING_WARNING
        text = (
            f"Quality (no ground truth): anisotropy input {inp['anisotropy']:.2f} → cubic {cubic['anisotropy']:.2f} "
            f"→ restored {restored['anisotropy']:.2f}; banding cubic {cubic['banding']:.2f}, restored "
            f"{restored['banding']:.2f}" + (": the result BANDS" if bands else "") + " (1 is ideal for both)"
        )
        deband = result.get("deband")
        if deband is not None:
            from napari_emsr.deband import BANDED

            # NOTE: which way was chosen and why (issue 11): the network's own output measured on the probe
            text += (
                f". Deband: the network's output banded {deband['banding']:.2f}, so the planes between sections "
                "are filtered to the sections' detail (untick deband to see it as it is)"
                if deband["active"] else
                f". Deband: not needed, the network's output banded {deband['banding']:.2f} (≥ {BANDED}): "
                "left as it is"
            )
        tip = (
            f"Measured on {label}, {axis} {result['start']}-{result['stop'] - 1}. Anisotropy: lateral / axial "
            "resolution from the power spectra (napari_emsr.metrics.anisotropy), 1 = as sharp along z as across. "
            "Banding: least / most detailed position between sections (napari_emsr.metrics.section_banding), "
            f"1 = as much detail between sections as at them; below {BANDING_WARNING} the planes between sections "
            "are visibly softer than the sections."
        )
        self.reconstruct.show_quality(text, tip)
        if bands:
            show_warning(
                f"napari-emsr: the {label} result bands (banding {restored['banding']:.2f}, 1 = none): the planes "
                "between sections have less detail than the sections. Train longer, or try another Sections profile."
            )

    def _on_quality_error(self, err: BaseException) -> None:
        logger.info("quality not measured: %s", err)
        self.reconstruct.show_quality(f"Quality not measured: {err} (press Reconstruct again to retry).")

    def _add_restored(self, name: str, data: RestoredPlanes, kwargs: dict, tell: bool = True) -> Any:
        """Add a layer of ``data`` (or give it to the restored layer of that name); ``tell``: say what it shows."""
        on_wanted, on_view = _weak_emitters(self)
        data.on_wanted, data.on_view = on_wanted, on_view if tell else None
        self.block_queue.add(data)
        return self._replace_layer_data(name, data, kwargs) or self.viewer.add_image(data, **kwargs)

    def _replace_layer_data(self, name: str, data: RestoredPlanes, kwargs: dict) -> Any:
        """Give an existing restored layer of that name its new data (a Reconstruct again); None when there is none.

        Replacing the data keeps the user's display settings and is much quicker than removing and adding a
        layer (napari collects garbage on removal: most of a second here).
        """
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        old = getattr(existing, "data", None)
        if not isinstance(old, RestoredPlanes):
            if existing is not None:
                self.viewer.layers.remove(existing)
            return None
        self.block_queue.discard(old)
        existing.visible = False
        existing.metadata = kwargs["metadata"]
        existing.scale, existing.translate = kwargs["scale"], kwargs["translate"]
        existing.data = data
        return existing

    # ------------------------------------------------------------------------------------ compare
    def _restored_for(self, layer: Any, planes: str) -> Any:
        """The restored layer of ``layer`` made for ``planes`` (or the fused one), or None."""
        for candidate in (planes, "fuse"):
            name = f"{layer.name} {PLANE_LABELS[candidate]}"
            if name in self.viewer.layers and isinstance(self.viewer.layers[name].data, RestoredPlanes):
                return self.viewer.layers[name]
        return None

    def _cubic_for(self, layer: Any) -> Any:
        name = f"{layer.name} cubic"
        found = self.viewer.layers[name] if name in self.viewer.layers else None
        return found if found is not None and isinstance(found.data, RestoredPlanes) else None

    def show_side_by_side(self, planes: str = "xz") -> Any:
        """Show the input, its cubic interpolation and the restored volume side by side in napari's grid.

        The three share napari's dims and camera, so they show the same plane at the same zoom; each cell is
        labelled with its layer's name, and the current plane is written on the canvas. The view is rolled to
        ``planes`` (those the restoration is made for). A missing restored or cubic layer is made first (lazily,
        in a worker).

        Parameters
        ----------
        planes : str
            ``"xz"`` (page through y) or ``"yz"`` (page through x).

        Returns
        -------
        worker or None
            The worker that builds missing layers (None when none was needed, or on an error).
        """
        try:
            layer = self.current_layer()
            volume = self.current_volume()
            restored = self._restored_for(layer, planes)
            model = self._model_or_method() if restored is None else None
        except EMSRError as err:
            self._report_error(err, "comparing")
            return None
        jobs = []
        if restored is None:
            jobs.append((model, planes, PLANE_LABELS[planes]))
        if self._cubic_for(layer) is None:
            jobs.append(("cubic", "xz", "cubic"))
        if not jobs:
            self._arrange_side_by_side(layer, planes)
            return None
        factor = float(model.factor) if model is not None and not isinstance(model, str) else self.input_params.factor
        self.set_status("Preparing the comparison...")
        return self._start(
            compare_task,
            volume,
            jobs,
            self.params.device,
            connect={
                "returned": partial(self._on_compare_ready, layer, volume, factor, planes),
                "errored": partial(self._report_error, what="comparing"),
            },
        )

    def _on_compare_ready(self, layer: Any, volume: Any, factor: float, planes: str, results: list) -> None:
        if layer not in self.viewer.layers:
            return
        self.viewer.dims.ndisplay = 2
        self.viewer.dims.order = paging_order(self.viewer.dims.ndim, planes)
        interpolate = cubic_region(volume.data, factor)
        for label, made_for, array, out_spacing in results:
            name = f"{layer.name} {label}"
            kwargs = reconstruction_layer_kwargs(
                layer, volume, out_spacing, name=name, spacing=self.input_params.spacing,
                unit=self.input_params.unit, metadata={"planes": made_for, "input": layer.name},
            )
            data = RestoredPlanes(array, made_for, interpolate, label)
            added = self._add_restored(name, data, kwargs, tell=label != "cubic")
            if label != "cubic":
                self.reconstructed_layers = [*self.reconstructed_layers, added]
        self._arrange_side_by_side(layer, planes)

    def _arrange_side_by_side(self, layer: Any, planes: str) -> None:
        viewer = self.viewer
        cubic, restored = self._cubic_for(layer), self._restored_for(layer, planes)
        if cubic is None or restored is None:
            return
        trio = (layer, cubic, restored)
        viewer.dims.ndisplay = 2
        viewer.dims.order = paging_order(viewer.dims.ndim, planes)
        self._hidden_in_3d = []
        for other in viewer.layers:
            other.visible = other in trio
        self._label_preview(False)
        # NOTE: napari's grid fills its cells in layer-list order (hidden layers take none): moved to the end in
        # this order, they read input | cubic | restored from left to right.
        for member in trio:
            viewer.layers.move(viewer.layers.index(member), len(viewer.layers))
        viewer.grid.stride = 1
        viewer.grid.shape = (1, 3)
        viewer.grid.enabled = True
        for member in trio:
            member.name_overlay.visible = True
            member.name_overlay.font_size = 9
        viewer.canvas.overlays["current_slice"].visible = True
        self._fit_camera(layer)
        self.comparing = trio
        paged = "y" if planes == "xz" else "x"
        self.set_status(
            f"Side by side: {layer.name} | cubic | {restored.name}, same {planes} plane and zoom; page through "
            f"{paged} with the slider. Flip cubic / restored compares them in one view."
        )

    def _fit_camera(self, layer: Any) -> None:
        """Fit napari's camera to ``layer`` (reset_view would fit every layer, the training's preview planes
        placed beside the input included, and leave the planes small in their grid cells)."""
        self.viewer.fit_to_view(layers=[layer])

    def flip_compare(self) -> None:
        """Swap cubic and restored in one view (napari's grid off), at the same plane."""
        trio = self.comparing
        if trio is None or any(member not in self.viewer.layers for member in trio):
            layer = self.current_layer()
            cubic = self._cubic_for(layer) if layer is not None else None
            restored = None
            if layer is not None:
                restored = self._restored_for(layer, "xz") or self._restored_for(layer, "yz")
            if cubic is None or restored is None:
                self._report_error(InputError("nothing to flip yet: press Side by side first"), "comparing")
                return
            trio = self.comparing = (layer, cubic, restored)
        layer, cubic, restored = trio
        self.viewer.grid.enabled = False
        show_cubic = restored.visible or not cubic.visible
        layer.visible = False
        cubic.visible, restored.visible = show_cubic, not show_cubic
        for member in (cubic, restored):
            member.name_overlay.visible = True
        shown = cubic if show_cubic else restored
        self._fit_camera(shown)
        self.set_status(f"Showing {shown.name} (Flip again for {(restored if show_cubic else cubic).name}).")

    # ------------------------------------------------------------------------- restored blocks, off the GUI thread
    def _on_ndisplay(self, event: Any) -> None:
        """Hide the restored layers in 3D (they are restored plane by plane), show them again in 2D."""
        if not _alive(self):
            return
        if self.viewer.dims.ndisplay == 3:
            hidden = [
                layer for layer in self.viewer.layers if isinstance(layer.data, RestoredPlanes) and layer.visible
            ]
            for layer in hidden:
                layer.visible = False
            self._hidden_in_3d = hidden
            if hidden:
                self.set_status(
                    f"3D view: {', '.join(layer.name for layer in hidden)} hidden (restored plane by plane, they "
                    "would show only interpolation in 3D); they come back in 2D. Export to see the result in 3D."
                )
        else:
            for layer in self._hidden_in_3d:
                if layer in self.viewer.layers:
                    layer.visible = True
            self._hidden_in_3d = []

    def _pump_blocks(self) -> None:
        """Start the block worker when a restored layer asks for blocks and none runs."""
        if self.block_worker is not None or not self.block_queue.pending() or not _alive(self):
            return
        self.block_worker = self._start(
            block_task,
            self.block_queue,
            connect={
                "yielded": self._on_block_note,
                "errored": partial(self._report_error, what="restoring a block"),
                "aborted": self._on_blocks_cancelled,
                "finished": self._on_blocks_finished,
            },
            progress={"desc": "napari-emsr: restoring planes"},
        )

    def _on_block_note(self, note: BlockNote) -> None:
        planes = note.planes
        if planes is None:
            return
        first, last = planes.block_span(note.block)
        axis = "zyx"[planes.axis]
        pbar = getattr(self.block_worker, "pbar", None)
        quiet = planes.on_view is None  # the cubic layer of a comparison: nothing worth a status line
        # a block of the fused layer is one of its uncertainty too: "fused + uncertainty" whichever asked first
        names = [planes.label, *(p.label for p in planes.partners)]
        label = " + ".join(sorted(names, key=lambda name: name == "uncertainty"))
        if note.value is None:
            guess = self._block_estimate(planes, note.block)
            if pbar is not None:
                eta = f" (≈ {_duration(guess)})" if guess is not None else ""
                pbar.set_description(f"napari-emsr: restoring {label} {axis} {first}-{last}{eta}")
            if not quiet:
                self._status_before_block = self.status_label.text()
                self._block_running = {"t0": time.perf_counter(), "estimate": guess, "label": label, "axis": axis,
                                       "first": first, "last": last, "planes": last - first + 1}
                self.set_status(self._block_text())
                self._clock.start()
            return
        if planes.store(note.block, note.value):
            for layer in self.viewer.layers:
                if layer.data is planes and layer.visible:
                    layer.refresh()
        if note.partner:  # filled with the block just reported
            return
        self._block_running = None
        if pbar is not None:
            pbar.update(1)
        self._learn_speed(planes, note)
        if quiet:
            return
        if note.seconds >= 1.0:
            self.set_status(f"{label}: {axis} {first}-{last} restored in {note.seconds:.1f} s.")
        else:  # a quick block: the line goes back to what it said (not "restoring" this very block)
            before = getattr(self, "_status_before_block", "")
            self.set_status(planes.describe(RESTORED) if before == planes.describe(COMPUTING) else before)

    def _on_blocks_cancelled(self, *_: Any) -> None:
        self._block_running = None
        self.block_queue.clear()
        self.set_status("Restoring cancelled: the layers show interpolation where no block was restored.")

    def _on_blocks_finished(self) -> None:
        self.block_worker = None
        self._block_running = None
        self._pump_blocks()  # asked for while the last block was computed

    def cancel_blocks(self) -> None:
        """Stop restoring blocks after the one being computed (the activity dock's cancel does the same)."""
        self.block_queue.clear()
        if self.block_worker is not None:
            self.block_worker.quit()

    def _on_layer_view(self, planes: RestoredPlanes, view: str) -> None:
        """Say what a restored layer shows when that changes: interpolation or nothing outside its planes."""
        from napari.utils.notifications import show_info

        if not _alive(self):
            return
        visible = any(layer.data is planes and layer.visible for layer in self.viewer.layers)
        if not visible:
            return
        text = planes.describe(view)
        self.set_status(text)
        if view in (INTERPOLATED, NOTHING):
            told = (id(planes), view)
            if told not in self._told_views:
                self._told_views.add(told)
                show_info(f"napari-emsr: {text}")
        elif view == COMPUTING:
            self._told_views = {t for t in self._told_views if t[0] != id(planes)}

    def _on_layer_removed(self, event: Any) -> None:
        data = getattr(event.value, "data", None)
        if isinstance(data, RestoredPlanes):
            self.block_queue.discard(data)

    # ------------------------------------------------------------------------------------- export
    def export_volume(self, path: str, planes: str | None = None) -> Any:
        """Reconstruct the whole volume and write it to ``path`` (OME-Zarr or TIFF) in a worker.

        Parameters
        ----------
        path : str
            Output path; the suffix picks the format.
        planes : str, optional
            ``"fuse"``, ``"xz"`` or ``"yz"``; default: :attr:`reconstruct_params` ``.export_planes``.
        """
        if self.export_status.busy:
            return self.export_worker
        if self.paired.active:
            return self.paired.export(path)
        planes = planes or self.reconstruct_params.export_planes
        try:
            volume = self.current_volume()
            model = self._model_or_method()
        except EMSRError as err:
            self._report_error(err, "export")
            return None
        scheduler = self.reconstruct_params.scheduler.strip()
        found = self.estimates() if planes == self.reconstruct_params.export_planes else {}
        guess = found["export"][0] if found and not scheduler else 0.0
        where = f" on {scheduler}" if scheduler else ""
        told = f" (estimated {clock(guess)} here)" if guess else ""
        return self.run_export(
            export_task,
            (volume, model, str(path), planes, self.params.device, scheduler, self.reconstruct_params.deband),
            path,
            total=found["export"][1] if found else 1,
            guess=guess,
            message=f"Exporting to {path}{where}{told}...",
        )

    def run_export(self, task: Any, args: tuple, path: Any, *, total: int, guess: float, message: str) -> Any:
        """Start ``task(job, *args)`` in a worker as the export: its status, bar, clock and cancellation (the
        isotropic export and the paired one, :meth:`napari_emsr.plugin.paired.PairedFlow.export`, both)."""
        job = ExportJob(report=self.export_progress.emit)
        self.export_job = job
        status = self.export_status
        status.path, status.done, status.total = str(path), 0, total
        status.elapsed, status.estimate, status.first_done, status.first_count = 0.0, guess, 0.0, 0
        self._export_t0 = time.perf_counter()
        status.state = RUNNING
        self._say(status, message)
        self._clock.start()
        worker = self._start(
            task,
            job,
            *args,
            connect={
                "returned": lambda p: self._say(
                    self.export_status, f"Exported to {p} in {clock(time.perf_counter() - self._export_t0)}"
                ),
                "errored": self._on_export_error,
                "finished": self._on_export_finished,
            },
            progress={"desc": "napari-emsr export"},
        )
        self.export_worker = worker
        if worker is not None:
            # NOTE: the activity dock's cancel button quits the worker; the job then stops at the next chunk.
            job.is_aborted = lambda: bool(getattr(worker, "abort_requested", False))
        return worker

    def cancel_export(self) -> None:
        """Stop the export at the next chunk (a zarr export can be resumed later)."""
        if self.export_job is not None:
            self.export_job.cancel()
            self.export_status.state = STOPPING
            self._say(self.export_status, "Cancelling the export...")

    def _on_export_progress(self, done: int, total: int) -> None:
        status = self.export_status
        status.elapsed = time.perf_counter() - self._export_t0
        if done and not status.first_count:
            status.first_done, status.first_count = status.elapsed, int(done)
        status.total = int(total)
        status.done = int(done)
        if status.busy and done:
            self.set_status(f"Exporting to {status.path}: {status.progress_text()}")
        pbar = getattr(self.export_worker, "pbar", None)
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            if done > pbar.n:
                pbar.update(done - pbar.n)
        self._export_eta()

    def _on_export_error(self, err: BaseException) -> None:
        if isinstance(err, ExportCancelled):
            from napari.utils.notifications import show_info

            self._say(self.export_status, str(err))
            show_info(str(err))
        elif str(err).startswith("--scheduler"):
            where = self.reconstruct_params.scheduler.strip()
            detail = str(err).split(":", 1)[1].strip() if ":" in str(err) else str(err)
            self._report_error(InputError(
                f"export on {where!r}: {detail}. Check the address in Export's 'On' field (is the scheduler "
                "running and reachable from here?), or clear the field to export in this process"
            ), "export")
        else:
            self._report_error(err, "export")

    def _on_export_finished(self) -> None:
        self.export_worker = None
        self.export_job = None
        self.export_status.state = IDLE

    # ------------------------------------------------------------------------------------ cleanup
    def cleanup(self) -> None:
        """Ask running tasks to stop (called when the panel closes)."""
        self._cleaned = True
        for timer in (self._speed_timer, self._clock, self.paired.timer):
            timer.stop()
        if self.session is not None:
            self.session.stop()
        if self.export_job is not None:
            self.export_job.cancel()
        self.cancel_blocks()
        for key in getattr(self, "_keys", {}).values():
            self.viewer.bind_key(key, None)
        for event, slot in (
            (self.viewer.layers.events.removed, self._on_layer_removed),
            (self.viewer.dims.events.ndisplay, self._on_ndisplay),
            (self.viewer.layers.events.inserted, self._update_sample_offer),
            (self.viewer.layers.events.removed, self._update_sample_offer),
        ):
            try:
                event.disconnect(slot)
            except (RuntimeError, TypeError, ValueError):
                pass

    def closeEvent(self, event: Any) -> None:  # Qt's name
        self.cleanup()
        self._closed = True
        super().closeEvent(event)
