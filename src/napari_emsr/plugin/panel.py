"""The napari-emsr dock panel: pick a layer, train, watch, stop, resume, reconstruct lazily, save, export.

The panel is layout and wiring. Its parameters and status are evented dataclasses, and what it learns and makes
while it runs is one evented :class:`~napari_emsr.plugin.state.RuntimeState` (:mod:`napari_emsr.plugin.state`);
sub-widgets show them (:mod:`napari_emsr.plugin.widgets`); controllers do one job each, with their own workers
(:mod:`napari_emsr.plugin.controllers`); the picked method's flow supplies what differs between the isotropic and
the paired method (:mod:`napari_emsr.plugin.flows`). Controllers and flows reach the panel only through the small
:class:`~napari_emsr.plugin.host.Host` protocol. Everything the panel does, a script can do with its public
methods and by setting its parameters::

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
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QLabel, QMessageBox, QPushButton, QScrollArea, QVBoxLayout, QWidget

from napari_emsr.errors import InputError
from napari_emsr.plugin.controllers.blocks import BlockPump
from napari_emsr.plugin.controllers.compare import CompareController
from napari_emsr.plugin.controllers.estimates import EstimatesController, method_of
from napari_emsr.plugin.controllers.export import ExportController
from napari_emsr.plugin.controllers.inputs import InputController
from napari_emsr.plugin.controllers.models import ModelController
from napari_emsr.plugin.controllers.preview import PREVIEW_CUBIC_LAYER, PREVIEW_LAYER, PreviewController
from napari_emsr.plugin.controllers.quality import QualityController
from napari_emsr.plugin.controllers.tasks import NEXT_STEP, TRAINING_FIRST, TaskRunner, alive, error_message
from napari_emsr.plugin.controllers.training import TrainingController
from napari_emsr.plugin.flows.isotropic import IsotropicFlow
from napari_emsr.plugin.flows.paired import PairedFlow
from napari_emsr.plugin.host import Flow
from napari_emsr.plugin.layers import layer_to_volume
from napari_emsr.plugin.state import (
    ExportStatus,
    InputParameters,
    PairedParameters,
    ReconstructParameters,
    RuntimeState,
    TrainingParameters,
    TrainingStatus,
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
from napari_emsr.plugin.widgets.train_widget import NAPARI_KEYS, STOP_SHORTCUT, TRAIN_SHORTCUT, TrainWidget
from napari_emsr.plugin.workers.tasks import list_devices_task, net_sizes_task

logger = logging.getLogger(__name__)

__all__ = ["EMSRWidget", "NEXT_STEP", "PREVIEW_CUBIC_LAYER", "PREVIEW_LAYER"]


def ask_yes_no(parent: QWidget, question: str) -> bool:
    """A Qt question box; True for Yes."""
    answer = QMessageBox.question(parent, "napari-emsr", question,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


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
        Which reconstructions Reconstruct adds and Export writes (and whether to judge on held-out sections).
    status : TrainingStatus
        Where training is (state, step, loss, gain over cubic, stage, message).
    export_status : ExportStatus
        Where the export is.
    runtime : RuntimeState
        The model, the measured speeds, the measures and the layers made (also readable as the panel's own
        attributes: ``panel.model``, ``panel.quality`` ...).
    ask : callable
        ``ask(question) -> bool``: how the panel asks before work estimated above half an hour (a Qt question
        box; a script or a test may answer instead).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.input_params = InputParameters()
        self.params = TrainingParameters()
        self.params.use_method_defaults()
        self.reconstruct_params = ReconstructParameters()
        self.status = TrainingStatus()
        self.export_status = ExportStatus()
        self.runtime = RuntimeState()
        self.ask: Callable[[str], bool] = partial(ask_yes_no, self)
        self.tasks = TaskRunner(self)
        self._build_widgets(napari_viewer)
        self._build_controllers(napari_viewer)
        self._layout()
        self._wire(napari_viewer)
        self._bind_keys()
        self.start(list_devices_task, connect={"returned": self.device.set_devices, "errored": self._quiet})
        self.start(net_sizes_task, connect={"returned": self.method.set_net_sizes, "errored": self._quiet})
        self._update_buttons()
        self.inputs.update_sample_offer()
        self._show_flow()
        self.inputs.layer_changed(self.input_params.layer)
        self.estimator.schedule()
        # NOTE: closing the viewer deletes the panel without a close event: its timers (not Qt children of it)
        # would go on ticking into deleted widgets. A plain function, not a slot of the panel, still runs then.
        cleanup = self.cleanup
        self.destroyed.connect(lambda *_: cleanup(gone=True))

    # ------------------------------------------------------------------------------------ construction
    def _build_widgets(self, viewer: Any) -> None:
        self.input = InputWidget(viewer, self.input_params)
        self.paired_params = PairedParameters()
        self.paired_box = PairedWidget(viewer, self.paired_params)
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

    def _build_controllers(self, viewer: Any) -> None:
        self.inputs = InputController(self, self.input, self.method, self.sample_button)
        self.estimator = EstimatesController(
            self, self.budget_hint, self.reconstruct, self.export,
            busy=lambda: self.status.busy or bool(self.inputs.running) or self.quality_ctl.heldout_worker is not None,
        )
        self.models_ctl = ModelController(self, self.models)
        self.blocks = BlockPump(self, self.estimator)
        self.preview = PreviewController(viewer)
        self.quality_ctl = QualityController(self, self.reconstruct, self.plot)
        self.exporter = ExportController(self, self.export_status)
        self.comparer = CompareController(self, self.blocks)
        self.trainer = TrainingController(self, self.status, self.plot, self.preview, self.estimator,
                                          self.models_ctl.set_model)
        self.isotropic = IsotropicFlow(self, self.input, self.blocks, self.estimator, self.quality_ctl,
                                       self.exporter)
        self.paired = PairedFlow(self, self.paired_params, self.paired_box, self.blocks, self.exporter,
                                 self.reconstruct.button)
        #: The flows by the kind of the method's application (:attr:`napari_emsr.methods.Application.kind`).
        self.flows: dict[str, Flow] = {"axial": self.isotropic, "lateral": self.paired}

    def _layout(self) -> None:
        self.train.layout().addWidget(self.plot)
        # NOTE: compact for a 1600 x 1150 window: the device is a row of the method's form, comparing a row of
        # the reconstruct box, and the status line stays below the scrolled sections, always in sight.
        self.method.form.addRow(self.device)
        form = self.method.form
        row = next(
            (r for r in range(form.rowCount())
             if (item := form.itemAt(r, QFormLayout.ItemRole.FieldRole)) is not None and item.layout() is not None
             and item.layout().indexOf(self.method.budget_value) >= 0),
            form.rowCount() - 1,
        )
        form.insertRow(row + 1, self.budget_hint)  # the whole row, under the budget field
        self.budget_hint.setVisible(False)
        self.reconstruct.layout().addWidget(self.compare)
        self.compare.layout().addWidget(self.reconstruct.heldout_check)  # under the quality line, in the same row
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
        self.fit_rows()

    def rows_width(self) -> int:
        """The width the panel needs to show its widest row unscrolled (with a vertical scroll bar beside it)."""
        body = self.scroll.widget()
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        return int(body.minimumSizeHint().width() + bar + 2 * self.scroll.frameWidth())

    def fit_rows(self) -> None:
        """Never narrower than the rows: a dock narrower than its rows scrolls sideways and cuts buttons off."""
        self.setMinimumWidth(self.rows_width())
        self.updateGeometry()

    def minimumSizeHint(self) -> Any:  # Qt's name
        from qtpy.QtCore import QSize

        hint = super().minimumSizeHint()
        return QSize(max(hint.width(), self.rows_width()), hint.height())

    def _wire(self, viewer: Any) -> None:
        ip, p, rp, rt = self.input_params, self.params, self.reconstruct_params, self.runtime
        ip.events.layer.connect(self.inputs.layer_changed)
        ip.events.spacing.connect(self.inputs.spacing_changed)
        p.events.method.connect(self._on_method_changed)
        self.status.events.state.connect(self._update_buttons)
        self.export_status.events.state.connect(self._update_buttons)
        rt.events.model.connect(self._on_model)
        rt.events.restore_speed.connect(self._update_tooltips)
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
        self.paired_box.register_requested.connect(self.paired.register)
        for event in (p.events.method, p.events.net, p.events.size, p.events.patch, p.events.device, ip.events.layer,
                      ip.events.spacing):
            event.connect(self.estimator.schedule)
        for event in (rp.events.planes, rp.events.export_planes, rp.events.scheduler):
            event.connect(self.estimator.show)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._update_sample_offer)
        for event in (p.events.method, p.events.budget, p.events.steps, p.events.minutes, p.events.device,
                      ip.events.layer, rp.events.planes, rp.events.export_planes, self.paired_params.events.lr,
                      self.paired_params.events.hr, self.paired_params.events.factor):
            event.connect(self._update_tooltips)

    def _bind_keys(self) -> None:
        """Train and Stop from the keyboard while napari's canvas has the focus (the buttons' own shortcuts
        work while the panel has it)."""
        from qtpy.QtGui import QKeySequence, QShortcut

        ref = weakref.ref(self)

        def press(button: str) -> Any:
            def pressed(_viewer: Any) -> None:
                panel = ref()
                if panel is not None and alive(panel):
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

    # ------------------------------------------------------------------------------------ Host
    @property
    def flow(self) -> Flow:
        """The flow of the picked method."""
        app = method_of(self.params.method).application
        return self.flows.get(app.kind if app is not None else "axial", self.isotropic)

    def start(self, func: Callable, *args: Any, connect: dict, progress: Any = None, **kwargs: Any) -> Any:
        """Start a task in a worker and keep it until it finishes (:class:`TaskRunner`)."""
        return self.tasks.start(func, *args, connect=connect, progress=progress, **kwargs)

    def set_status(self, text: str) -> None:
        """Show one line of status under the panel."""
        self.status_label.setText(text)

    def status_text(self) -> str:
        return self.status_label.text()

    def report_error(self, err: BaseException, what: str = "napari-emsr") -> None:
        """Status line and an error notification; the core's messages are shown verbatim."""
        from napari.utils.notifications import show_error

        message = error_message(err, what)
        self.set_status(message)
        show_error(message)

    def confirm(self, question: str) -> bool:
        """Ask before long work (:attr:`ask`)."""
        return bool(self.ask(question))

    def current_layer(self) -> Any:
        """The picked image layer (:attr:`input_params` ``.layer``), or None."""
        name = self.input_params.layer
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

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
        shape = tuple(getattr(layer.data, "shape", ()))
        if len(shape) > 3 and not getattr(layer, "rgb", False) and any(int(s) > 1 for s in shape[:-3]):
            # NOTE: the library's message names channel= and --channel, which the panel does not have
            raise InputError(
                f"the layer {layer.name!r} has {len(shape)} axes (shape {shape}); the panel works "
                "on 3D stacks: split it into 3D layers (right-click the layer > Split Stack) and pick one"
            )
        return layer_to_volume(layer, spacing=self.input_params.spacing, unit=self.input_params.unit)

    def interpolation_only(self) -> bool:
        return not method_of(self.params.method).trains

    def model_or_method(self) -> Any:
        """The model to apply: the method's name for interpolation, else the trained/loaded model."""
        if self.interpolation_only():
            return self.params.method
        model = self.runtime.model
        if model is None:
            if self.status.busy:
                raise InputError(TRAINING_FIRST)
            raise InputError(
                "no model yet: press Train (or Load model...), or pick the cubic method to interpolate only"
            )
        from napari_emsr.methods import METHODS

        app = getattr(METHODS.get(str(model.config.get("method"))), "application", None)
        if app is not None and app.lateral:
            name = model.config.get("method")
            raise InputError(
                f"the current model super-resolves xy planes (method {name}): pick the method {name} to apply it to "
                "an LR layer (Reconstruct, Export), or train (or load) a model of this method"
            )
        return self._in_stack_range(model)

    def _in_stack_range(self, model: Any) -> Any:
        """``model`` for the picked stack's intensities (:meth:`napari_emsr.model.EMSRModel.for_range`: a copy in
        the stack's own range when it lies far from the model's, said once), from the range the input's measure
        read in its worker (nothing is read here, on the GUI thread; before that measure, the model as it is)."""
        found = (self.runtime.anisotropy or {}).get("intensities")
        if found is None:
            return model
        cached = vars(self).get("_scaled")  # (model, range, the model for it)
        if cached is not None and cached[0] is model and cached[1] == tuple(found):
            return cached[2]
        from napari.utils.notifications import show_warning

        from napari_emsr.model import Normalisation

        scaled, note = model.for_range(Normalisation(*found))
        self._scaled = (model, tuple(found), scaled)
        if note:
            show_warning(f"napari-emsr: {note}")
        return scaled

    # ------------------------------------------------------------------------------------ what scripts call
    @property
    def workers(self) -> tuple:
        """The thread workers running now (empty when the panel is idle)."""
        return tuple(self.tasks.running)

    def training_config(self) -> Any:
        """The :class:`napari_emsr.train.TrainConfig` the panel's parameters describe."""
        return self.flow.training_inputs()[1]

    def start_training(self, resume: bool = False) -> Any:
        """Train a new network (or, with ``resume``, the current model further) in a thread worker."""
        return self.trainer.start(resume=resume)

    def stop_training(self) -> None:
        """Stop after the current step; the model trained so far is kept."""
        self.trainer.stop()

    def reconstruct_layers(self, planes: list[str] | None = None) -> Any:
        """Add lazy layers of the result over the input (the flow's: xz / yz / fused, or finer xy planes)."""
        return self.flow.reconstruct(planes)

    def export_volume(self, path: str, planes: str | None = None) -> Any:
        """Write the whole result to ``path`` (OME-Zarr or TIFF) in a worker."""
        if self.export_status.busy:
            return self.exporter.worker
        return self.flow.export(path, planes)

    def cancel_export(self) -> None:
        """Stop the export at the next task (a zarr export can be resumed later)."""
        self.exporter.cancel()

    def show_side_by_side(self, planes: str = "xz") -> Any:
        """Input, cubic and restored side by side in napari's grid (:meth:`CompareController.side_by_side`)."""
        return self.comparer.side_by_side(planes)

    def flip_compare(self) -> None:
        """Swap cubic and restored in one view."""
        self.comparer.flip()

    def save_model(self, path: str) -> Any:
        """Save the current model to ``path`` in a worker."""
        return self.models_ctl.save(path)

    def load_model(self, path: str) -> Any:
        """Load a model file in a worker; it becomes the current model."""
        return self.models_ctl.load(path)

    def measure_quality(self, volume: Any = None, factor: float | None = None) -> Any:
        """Reference-free measures of the last reconstruction, in a worker."""
        return self.quality_ctl.measure(volume, factor)

    def judge_heldout(self) -> Any:
        """Judge the current model on the picked stack's held-out sections, in a worker."""
        return self.quality_ctl.judge()

    def measure_speeds(self) -> None:
        """Measure how fast this device trains and restores with the current choices."""
        self.estimator.measure_speeds()

    def estimates(self) -> dict:
        """Seconds Reconstruct's blocks and Export should take here (:meth:`EstimatesController.estimates`)."""
        return self.estimator.estimates()

    def use_recommended_budget(self) -> None:
        """Set the budget to the recommended one."""
        self.estimator.use_recommended_budget()

    def open_sample(self) -> None:
        """Open napari-emsr's anisotropic sample and pick it."""
        self.inputs.open_sample()

    def cancel_blocks(self) -> None:
        """Stop restoring blocks after the one being computed."""
        self.blocks.cancel()

    # NOTE: the runtime state and the controllers' workers, readable as the panel's (scripts and tests read them).
    model = property(lambda self: self.runtime.model, lambda self, m: self.models_ctl.set_model(m))
    anisotropy = property(lambda self: self.runtime.anisotropy)
    quality = property(lambda self: self.runtime.quality)
    heldout = property(lambda self: self.runtime.heldout)
    comparing = property(lambda self: self.runtime.comparing)
    reconstructed_layers = property(lambda self: self.runtime.reconstructed_layers)
    train_speed = property(lambda self: self.runtime.train_speed)
    restore_speed = property(lambda self: self.runtime.restore_speed)
    recommended = property(lambda self: self.runtime.recommended)
    session = property(lambda self: self.trainer.session)
    train_worker = property(lambda self: self.trainer.worker)
    export_worker = property(lambda self: self.exporter.worker)
    export_job = property(lambda self: self.exporter.job)
    export_progress = property(lambda self: self.exporter.progress)
    block_worker = property(lambda self: self.blocks.worker)
    block_queue = property(lambda self: self.blocks.queue)

    # ------------------------------------------------------------------------------------ reactions
    def _quiet(self, err: BaseException) -> None:
        import logging

        logging.getLogger(__name__).warning("napari-emsr background task failed: %s", err)

    def _update_sample_offer(self, *_: Any) -> None:
        if alive(self):
            self.inputs.update_sample_offer()

    def _on_method_changed(self, *_: Any) -> None:
        self.params.use_method_defaults()
        self.exporter.reset()  # the last export was of another method's result
        if self.interpolation_only():
            self.estimator.restore_key = None
        self._update_buttons()
        self._show_flow()
        self.flow.picked()

    def _show_flow(self) -> None:
        """The picked method's flow supplies its input box and says what applies (the others are hidden)."""
        flow = self.flow
        for box in {id(f.box): f.box for f in (self.isotropic, *self.flows.values())}.values():
            box.setVisible(box is flow.box)
        self.compare.setVisible(flow.compares)
        self.reconstruct.set_lateral(flow.lateral)
        self.export.set_lateral(flow.lateral)
        if not flow.measures_speed:
            self.estimator.clear()
            self.quality_ctl.clear()
        self.fit_rows()  # another flow shows other rows

    def _on_model(self, *_: Any) -> None:
        self.exporter.reset()  # the last export was of another model's result
        self._update_buttons()
        self.estimator.schedule()  # how fast this model restores here

    def _update_buttons(self, *_: Any) -> None:
        training = self.status.busy
        model = self.runtime.model
        self.train.set_state(running=training, can_train=not self.interpolation_only(), can_resume=model is not None)
        self.models.set_has_model(model is not None and not training)
        self.models.load_button.setEnabled(not training)
        self._update_tooltips()

    def _update_tooltips(self, *_: Any) -> None:
        """Each button's tooltip says what it will do with the current inputs, budget, device and choices."""
        p = self.params
        budget = f"{p.minutes:g} minutes" if p.budget == "minutes" else f"{p.steps} steps"
        device = "the best device here" if p.device == "auto" else p.device
        step = int(self.runtime.model.step) if self.runtime.model is not None else None
        tips = self.flow.tooltips(budget, device)
        self.train.set_tooltips(tips.train, budget, device, step)
        estimate = self.reconstruct.estimate_label.text() if self.flow.measures_speed else ""
        self.reconstruct.button.setToolTip(tips.reconstruct + (f"; {estimate}" if estimate else ""))
        self.models.save_button.setToolTip(
            "Save the model (weights and settings, one file read without unpickling) for emsr apply or Load model"
        )
        self.models.load_button.setToolTip("Load a model saved here or by emsr train; it becomes the current model")
        export = self.export.estimate_text if self.flow.measures_speed else ""
        self.export.export_button.setToolTip(tips.export + (f"; {export}" if export else ""))
        self.export.cancel_button.setToolTip("Stop the export at the next chunk (nothing written is marked complete)")

    # ------------------------------------------------------------------------------------ cleanup
    def cleanup(self, gone: bool = False) -> None:
        """Ask running tasks to stop (called when the panel closes, or when the viewer closing deletes it:
        ``gone``, its widgets already deleted; an export stopped then is said in the log, the one place left)."""
        if vars(self).get("_cleaned", False):  # NOTE: not getattr: on a deleted panel Qt's lookup raises
            return
        self._cleaned = True
        if gone:
            self._closed = True
            if self.export_status.busy:
                from napari_emsr.outputs import resumable

                path = self.export_status.path
                logger.warning("napari-emsr: the viewer closed during the export to %s; it stops at the next chunk, "
                               "unfinished (%s)", path, "export it again to resume it" if resumable(path) else
                               "a TIFF appears only once complete: export it again")
        self.estimator.stop()
        self.paired.timer.stop()
        if self.trainer.session is not None:
            self.trainer.session.stop()
        self.exporter.close()
        self.blocks.close()
        self.inputs.close()
        for key in vars(self).get("_keys", {}).values():
            self.viewer.bind_key(key, None)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            try:
                event.disconnect(self._update_sample_offer)
            except (RuntimeError, TypeError, ValueError):
                pass

    def closeEvent(self, event: Any) -> None:  # Qt's name
        self.cleanup()
        self._closed = True
        super().closeEvent(event)
