"""The napari-emsr dock panel: pick a layer, train, watch, stop, resume, reconstruct lazily, save, export.

The panel only wires sub-widgets (``napari_emsr.plugin.widgets``) to the core (``train``, ``reconstruct``, ``io``,
``model``) through thread workers (``napari_emsr.plugin.workers``). Every long task runs off the GUI thread; the
viewer is touched only in slots that Qt runs on the main thread (``yielded``, ``returned``, ``finished``).
Errors appear as napari notifications carrying the core's messages verbatim, and in the status line.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin.widgets.device_widget import DeviceWidget
from napari_emsr.plugin.widgets.export_widget import ExportWidget
from napari_emsr.plugin.widgets.input_widget import InputWidget
from napari_emsr.plugin.widgets.method_widget import MethodWidget
from napari_emsr.plugin.widgets.model_widget import ModelWidget
from napari_emsr.plugin.widgets.plot_widget import LossPlotWidget
from napari_emsr.plugin.widgets.reconstruct_widget import LABELS, ReconstructWidget
from napari_emsr.plugin.widgets.train_widget import TrainWidget
from napari_emsr.plugin.workers.export_worker import ExportCancelled, ExportJob, export_task
from napari_emsr.plugin.workers.runner import start_task
from napari_emsr.plugin.workers.tasks import (
    anisotropy_task,
    list_devices_task,
    load_model_task,
    reconstruct_task,
    save_model_task,
)
from napari_emsr.plugin.workers.train_worker import TrainSession, TrainUpdate, train_task

logger = logging.getLogger(__name__)

PREVIEW_LAYER = "emsr preview"
PREVIEW_CUBIC_LAYER = "emsr preview cubic"
#: Seconds between redraws of the plot and status line while training (events may come much faster).
REDRAW_INTERVAL = 0.25


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


class EMSRWidget(QWidget):
    """Isotropic reconstruction of an anisotropic EM stack, in one dock panel.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it).

    Attributes
    ----------
    model : napari_emsr.model.EMSRModel or None
        The trained or loaded model.
    train_worker, export_worker : worker or None
        The running training / export worker.
    reconstructed_layers : list
        The layers added by the last Reconstruct.
    """

    #: (done, total) from the export worker thread; Qt queues it to the main thread.
    export_progress = Signal(int, int)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model: Any = None
        self.session: TrainSession | None = None
        self.train_worker: Any = None
        self.export_worker: Any = None
        self.export_job: ExportJob | None = None
        self.reconstructed_layers: list = []
        self.val_every: int | None = None
        self.preview_every: int | None = None
        self._training = False
        self._exporting = False
        self._last_redraw = 0.0
        self._anisotropy_request = 0
        self._workers: set = set()
        self._pending_updates: list[TrainUpdate | None] = []
        self._handling_updates = False

        self.input = InputWidget(napari_viewer)
        self.method = MethodWidget()
        self.device = DeviceWidget()
        self.train = TrainWidget()
        self.plot = LossPlotWidget()
        self.reconstruct = ReconstructWidget()
        self.models = ModelWidget()
        self.export = ExportWidget()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.train.layout().addWidget(self.plot)

        body = QWidget()
        column = QVBoxLayout(body)
        for part in (
            self.input,
            self.method,
            self.device,
            self.train,
            self.reconstruct,
            self.models,
            self.export,
        ):
            column.addWidget(part)
        column.addWidget(self.status_label)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self.setMinimumWidth(440)

        self.input.layer_changed.connect(self._on_layer_changed)
        self.input.geometry_changed.connect(self._measure_anisotropy)
        self.method.method_changed.connect(lambda _: self._update_buttons())
        self.train.train_requested.connect(self.start_training)
        self.train.stop_requested.connect(self.stop_training)
        self.train.resume_requested.connect(partial(self.start_training, resume=True))
        self.reconstruct.reconstruct_requested.connect(self.reconstruct_layers)
        self.models.save_requested.connect(self.save_model)
        self.models.load_requested.connect(self.load_model)
        self.export.export_requested.connect(self.export_volume)
        self.export.cancel_requested.connect(self.cancel_export)
        self.export_progress.connect(self._on_export_progress)
        # "Compute planes in the background" is napari's own asynchronous-rendering setting: show it, follow it.
        from napari.settings import get_settings

        self._napari_settings = get_settings()
        self.reconstruct.set_background(self._napari_settings.experimental.async_)
        self.reconstruct.background_toggled.connect(self._set_background_slicing)
        self._napari_settings.experimental.events.async_.connect(self._on_async_setting)

        self._start(
            list_devices_task, connect={"returned": self.device.set_devices, "errored": self._quiet_error}
        )
        self._on_layer_changed(self.input.current_layer())

    # ------------------------------------------------------------------------------------ helpers
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

    def _report_error(self, err: BaseException, what: str = "napari-emsr") -> None:
        """Status line and an error notification; the core's messages are shown verbatim."""
        from napari.utils.notifications import show_error

        if isinstance(err, EMSRError):
            message = str(err)
        else:
            logger.error("%s failed", what, exc_info=(type(err), err, err.__traceback__))
            message = f"{what} failed: {type(err).__name__}: {err}"
        self.set_status(message)
        show_error(message)

    def _quiet_error(self, err: BaseException) -> None:
        logger.warning("napari-emsr background task failed: %s", err)

    def current_volume(self) -> Any:
        """The picked layer as a :class:`napari_emsr.io.Volume` with the voxel size shown in the panel.

        Raises
        ------
        InputError
            When no layer is picked, or the layer is not a single-channel 3D volume.
        """
        from napari_emsr.io import as_volume

        layer = self.input.current_layer()
        if layer is None:
            raise InputError(
                "no image layer to work on: open a 3D stack (File > Open) or the sample "
                "(File > Open Sample > napari-emsr), then pick it under Input"
            )
        if getattr(layer, "rgb", False):
            raise InputError(
                f"layer {layer.name!r} is an RGB image {tuple(layer.data.shape)}; "
                "napari-emsr needs a single-channel "
                "3D stack (z, y, x): convert it to greyscale first"
            )
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        return as_volume(data, spacing=self.input.spacing(), unit=self.input.unit())

    def _interpolation_only(self) -> bool:
        return not self.method.trains()

    def _model_or_method(self) -> Any:
        """The model to apply: the method's name for interpolation, else the trained/loaded model."""
        if self._interpolation_only():
            return self.method.method()
        if self.model is None:
            raise InputError(
                "no model yet: press Train (or Load model...), or pick the cubic method to interpolate only"
            )
        return self.model

    def _update_buttons(self) -> None:
        trains = self.method.trains()
        self.train.set_state(running=self._training, can_train=trains, can_resume=self.model is not None)
        self.models.set_has_model(self.model is not None and not self._training)
        self.models.load_button.setEnabled(not self._training)
        self.export.set_running(self._exporting)

    # ------------------------------------------------------------------------------------- input
    def _on_layer_changed(self, layer: Any) -> None:
        from napari.utils.notifications import show_warning

        if layer is None:
            self.set_status("Open a 3D stack (File > Open) or File > Open Sample > napari-emsr.")
            return
        try:
            self.current_volume()
        except EMSRError as err:
            self.set_status(str(err))
            self.input.set_anisotropy("-")
            show_warning(str(err))
            return
        self.set_status(f"Input: {layer.name} {tuple(layer.data.shape)}, factor {self.input.factor():.2f}")
        self._measure_anisotropy()

    def _measure_anisotropy(self) -> None:
        try:
            volume = self.current_volume()
        except EMSRError:
            return
        self._anisotropy_request += 1
        request = self._anisotropy_request
        self.input.set_anisotropy("measuring...")
        self.method.set_estimated_profile(None)
        self._start(
            anisotropy_task,
            volume,
            self.input.factor(),
            connect={
                "returned": partial(self._on_anisotropy, request),
                "errored": partial(self._on_anisotropy_error, request),
            },
        )

    def _on_anisotropy(self, request: int, result: dict) -> None:
        if request != self._anisotropy_request:
            return
        ratio = result.get("ratio") if isinstance(result, dict) else None
        text = f"{ratio:.2f}" if isinstance(ratio, (int, float)) else "-"
        detail = ", ".join(f"{k} {v:.3g}" for k, v in result.items() if isinstance(v, float) and k != "ratio")
        self.input.set_anisotropy(text)
        self.input.anisotropy_label.setToolTip(detail)
        if isinstance(result, dict) and result.get("profile"):
            self.method.set_estimated_profile(result["profile"])

    def _on_anisotropy_error(self, request: int, err: BaseException) -> None:
        if request == self._anisotropy_request:
            self.input.set_anisotropy("n/a")
            logger.info("anisotropy not measured: %s", err)

    # ------------------------------------------------------------------------------------ training
    def training_config(self) -> Any:
        """The :class:`napari_emsr.train.TrainConfig` the panel's fields describe."""
        from napari_emsr.train import TrainConfig

        kwargs = self.method.config_kwargs()
        budget = kwargs.get("steps") or 0
        every = max(1, min(100, budget // 20)) if budget else None
        return TrainConfig(
            factor=self.input.factor(),
            device=self.device.device(),
            val_every=self.val_every or min(50, every or 50),
            preview_every=self.preview_every or every or 100,
            **kwargs,
        )

    def start_training(self, resume: bool = False) -> Any:
        """Train a new network (or, with ``resume``, the current model further) in a thread worker.

        Returns
        -------
        worker or None
            The training worker (None when nothing was started, or in synchronous mode).
        """
        if self._training:
            return self.train_worker
        try:
            if self._interpolation_only():
                raise InputError(
                    f"method {self.method.method()!r} needs no training: press Reconstruct to apply it"
                )
            volume = self.current_volume()
            config = self.training_config()
            if resume and self.model is None:
                raise InputError("nothing to resume: train or load a model first")
        except EMSRError as err:
            self._report_error(err, "training")
            return None
        resume_model = self.model if resume else None
        if not resume:
            self.plot.clear_plot()
        self.session = TrainSession()
        self._training = True
        self._update_buttons()
        self.train.set_progress(0, config.steps)
        self.set_status("Preparing training (reading the volume, building the network)...")
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
        if self.session is not None and self._training:
            self.session.stop()
            self.set_status("Stopping after the current step...")

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
        self.train.progress_bar.setRange(update.start_step, max(ev.total, update.start_step + 1))
        self.train.progress_bar.setValue(ev.step)
        pbar = getattr(self.train_worker, "pbar", None)
        if pbar is not None:
            total = ev.total - update.start_step
            if pbar.total != total:
                pbar.total = total
            done = ev.step - update.start_step
            if done > pbar.n:
                pbar.update(done - pbar.n)
        self.plot.add_points(ev.step, ev.loss, ev.gain)
        if ev.preview is not None:
            self._show_preview(ev.preview, update.preview_cubic)
        now = time.perf_counter()
        if ev.done or ev.gain is not None or now - self._last_redraw > REDRAW_INTERVAL:
            self._last_redraw = now
            self.plot.redraw()
            gain = f", gain over cubic {ev.gain:+.2f} dB" if ev.gain is not None else ""
            self.set_status(f"step {ev.step} / {ev.total}, loss {ev.loss:.4g}{gain}")

    def _show_preview(self, preview: np.ndarray, cubic: np.ndarray | None) -> None:
        """Show the restored preview xz plane (and its cubic interpolation) beside the input."""
        layer = self.input.current_layer()
        if layer is None:
            return
        _, _, sx = self.input.spacing()
        ty, tx = (float(t) for t in layer.translate[-2:])
        width = layer.data.shape[-1] * float(layer.scale[-1])
        gap = 0.05 * width
        plane_width = preview.shape[-1] * sx
        limits = tuple(layer.contrast_limits)
        placed = (
            (PREVIEW_CUBIC_LAYER, cubic, tx + width + gap),
            (PREVIEW_LAYER, preview, tx + width + plane_width + 2 * gap),
        )
        for name, data, x0 in placed:
            if data is None:
                continue
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
            else:
                self.viewer.add_image(
                    data,
                    name=name,
                    scale=(sx, sx),
                    translate=(ty, x0),
                    contrast_limits=limits,
                    colormap="gray",
                    units=tuple(layer.units[-2:]),
                    metadata={"emsr": "preview xz plane (rows: z at the lateral spacing, columns: x)"},
                )
        self.input.set_layer(layer)

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
        if model is not None:
            self._set_model(model)
        self._training = False
        self.train_worker = None
        self.plot.redraw()
        self._update_buttons()
        if model is not None:
            last = model.history[-1] if model.history else {}
            gain = (
                last.get("val_psnr", 0) - last.get("cubic_psnr", 0)
                if last.get("val_psnr") is not None
                else None
            )
            note = f", gain over cubic {gain:+.2f} dB" if gain is not None else ""
            self.set_status(
                f"Training ended at step {model.step}{note}. Reconstruct to see the whole volume."
            )
        free_memory()

    # ------------------------------------------------------------------------------------- model
    def _set_model(self, model: Any) -> None:
        self.model = model
        cfg = model.config
        self.models.set_info(
            f"{cfg.get('method')} / {cfg.get('net')} ({cfg.get('size')}), F = {model.factor:.3g}, "
            f"axis {model.axis}, step {model.step}"
        )
        self._update_buttons()

    def save_model(self, path: str) -> Any:
        """Save the current model to ``path`` in a worker."""
        if self.model is None:
            self._report_error(InputError("no model to save yet: train or load one first"), "saving")
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

        def loaded(model: Any) -> None:
            self._set_model(model)
            self.method.set_values(method=model.config.get("method", self.method.method()))
            self.set_status(f"Model loaded from {path}")

        return self._start(
            load_model_task,
            str(path),
            connect={"returned": loaded, "errored": partial(self._report_error, what="loading the model")},
        )

    # ------------------------------------------------------------------------------- reconstruct
    def reconstruct_layers(self, planes: list[str] | None = None) -> Any:
        """Add lazy layers of the reconstruction (xz-restored, yz-restored, fused) over the input."""
        planes = list(planes or self.reconstruct.planes())
        try:
            if not planes:
                raise InputError("tick at least one of xz-restored, yz-restored, fused")
            layer = self.input.current_layer()
            volume = self.current_volume()
            model = self._model_or_method()
        except EMSRError as err:
            self._report_error(err, "reconstruction")
            return None
        self.set_status("Preparing the lazy reconstruction...")
        if "fuse" in planes and not isinstance(model, str) and _runs_on_cpu(self.device.device()):
            from napari.utils.notifications import show_info

            # NOTE: measured (bench_plane_latency.py --fused-viewer, 2-core CPU, rescnn/small, 253 x 250 x 250):
            # a new fused block of 64 rows takes 36 s; napari slices in its main thread unless its asynchronous
            # rendering is on: off, the event loop stalled 35 s; on, its delay stayed under 60 ms.
            if self._napari_settings.experimental.async_:
                tail = "napari stays usable meanwhile (planes are computed in the background)."
            else:
                tail = (
                    "napari waits meanwhile: tick 'Compute planes in the background' to keep it usable, or "
                    "browse with xz-restored and export the fused volume."
                )
            show_info(
                "napari-emsr: a fused plane needs the yz planes that cross it, so the fused layer computes 64 rows "
                "at a time: on a CPU the first view of each block takes a while (35 s for 250 x 250 planes on 2 "
                "cores); " + tail
            )
        self.reconstruct.button.setEnabled(False)
        return self._start(
            reconstruct_task,
            volume,
            model,
            planes,
            self.device.device(),
            connect={
                "returned": partial(self._on_reconstructed, layer, volume),
                "errored": partial(self._report_error, what="reconstruction"),
                "finished": lambda: self.reconstruct.button.setEnabled(True),
            },
        )

    def _on_reconstructed(self, layer: Any, volume: Any, results: list) -> None:
        spacing_in = np.asarray(self.input.spacing(), float)
        show_xz = any(p in ("xz", "fuse") for p, _, _ in results)
        flat = self.viewer.dims.ndisplay == 2
        if flat and self.viewer.dims.ndim >= 3:
            # NOTE: roll the dims BEFORE adding the layers: in the default xy view one plane of an xz-chunked
            # array needs every chunk, i.e. the whole volume. xz (and fused) planes are chunked along y, so
            # the user pages through y; yz planes along x.
            order = (1, 0, 2) if show_xz else (2, 0, 1)
            lead = tuple(range(self.viewer.dims.ndim - 3))
            self.viewer.dims.order = lead + tuple(len(lead) + a for a in order)
        added = []
        for planes, array, out_spacing in results:
            # NOTE: the core works in nm; scale the output like the input layer (whatever its unit).
            if out_spacing is not None and volume.spacing is not None:
                scale = tuple(np.asarray(out_spacing, float) / np.asarray(volume.spacing, float) * spacing_in)
            else:
                scale = (spacing_in[2], spacing_in[1], spacing_in[2])
            name = f"{layer.name} {LABELS[planes]}"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            new = self.viewer.add_image(
                array,
                name=name,
                scale=scale,
                translate=tuple(layer.translate[-3:]),
                contrast_limits=tuple(layer.contrast_limits),
                multiscale=False,
                colormap="gray",
                units=tuple(layer.units[-3:]),
                # NOTE: napari's Image constructor slices the middle xy plane of a visible layer with its own
                # default dims order, which for an xz-chunked array is every chunk: the whole volume. Hidden,
                # it computes nothing; it is shown once it follows the viewer's (rolled) dims.
                visible=False,
                metadata={
                    "spacing": tuple(float(s) for s in scale),
                    "unit": self.input.unit(),
                    "source": (layer.metadata or {}).get("source"),
                    "emsr": {"planes": planes, "input": layer.name},
                },
            )
            # a yz layer seen in the xz view would need every chunk: it stays hidden there
            new.visible = not (flat and show_xz and planes == "yz")
            added.append(new)
        self.reconstructed_layers = added
        self.input.set_layer(layer)
        self.set_status(
            f"Added {', '.join(layer.name for layer in added)}: planes are computed as you view them "
            f"({'page through y for xz planes' if show_xz else 'page through x for yz planes'})."
        )

    # ------------------------------------------------------------------------------------- export
    def export_volume(self, path: str, planes: str | None = None) -> Any:
        """Reconstruct the whole volume and write it to ``path`` (OME-Zarr or TIFF) in a worker."""
        if self._exporting:
            return self.export_worker
        planes = planes or self.export.planes()
        try:
            volume = self.current_volume()
            model = self._model_or_method()
        except EMSRError as err:
            self._report_error(err, "export")
            return None
        job = ExportJob(report=self.export_progress.emit)
        self.export_job = job
        self._exporting = True
        self._update_buttons()
        self.export.set_progress(0, 1)
        self.set_status(f"Exporting to {path}...")
        worker = self._start(
            export_task,
            job,
            volume,
            model,
            str(path),
            planes,
            self.device.device(),
            connect={
                "returned": lambda p: self.set_status(f"Exported to {p}"),
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
            self.set_status("Cancelling the export...")

    def _on_export_progress(self, done: int, total: int) -> None:
        self.export.set_progress(done, total)
        pbar = getattr(self.export_worker, "pbar", None)
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            if done > pbar.n:
                pbar.update(done - pbar.n)

    def _on_export_error(self, err: BaseException) -> None:
        if isinstance(err, ExportCancelled):
            from napari.utils.notifications import show_info

            self.set_status(str(err))
            show_info(str(err))
        else:
            self._report_error(err, "export")

    def _on_export_finished(self) -> None:
        self._exporting = False
        self.export_worker = None
        self.export_job = None
        self._update_buttons()

    # ------------------------------------------------------------------------------------ cleanup
    def _set_background_slicing(self, on: bool) -> None:
        self._napari_settings.experimental.async_ = bool(on)

    def _on_async_setting(self, event: Any) -> None:
        if _alive(self):
            self.reconstruct.set_background(bool(event.value))

    def cleanup(self) -> None:
        """Ask running tasks to stop (called when the panel closes)."""
        self._napari_settings.experimental.events.async_.disconnect(self._on_async_setting)
        if self.session is not None:
            self.session.stop()
        if self.export_job is not None:
            self.export_job.cancel()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.cleanup()
        self._closed = True
        super().closeEvent(event)
