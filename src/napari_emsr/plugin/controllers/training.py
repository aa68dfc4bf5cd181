"""Training: start, stop and resume a worker, follow its events into the training status, the loss plot, napari's
activity bar and the live preview, and keep the model it ends with."""

from __future__ import annotations

import math
import time
from typing import Any

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.state import IDLE, RUNNING, STOPPING, TrainingStatus, clock
from napari_emsr.plugin.workers.train_worker import TrainSession, TrainUpdate, train_task

#: Seconds between redraws of the plot and status line while training (events may come much faster).
REDRAW_INTERVAL = 0.25
#: Work estimated to take longer than this (seconds) is started only once the user said yes.
CONFIRM_ABOVE = 30 * 60


class TrainingController:
    """Runs one training at a time and follows it.

    Parameters
    ----------
    host : Host
        The panel.
    status : TrainingStatus
        Where training is (the Train box shows it).
    plot : LossPlotWidget
        The loss and gain plot.
    preview : PreviewController
        The live preview planes.
    estimates : EstimatesController
        How long a training should take here; it learns the speed from each run.
    set_model : callable
        Called with the model a run ends with.
    """

    def __init__(self, host: Host, status: TrainingStatus, plot: Any, preview: Any, estimates: Any, set_model: Any):
        self.host = host
        self.status = status
        self.plot = plot
        self.preview = preview
        self.estimates = estimates
        self.set_model = set_model
        self.session: TrainSession | None = None
        self.worker: Any = None
        self.pending: list[TrainUpdate | None] = []
        self.handling = False
        self.last_stage: int | None = None
        self.last_redraw = 0.0

    def say(self, text: str) -> None:
        self.status.message = text
        self.host.set_status(text)

    def start(self, resume: bool = False) -> Any:
        """Train a new network (or, with ``resume``, the current model further) in a thread worker.

        Returns
        -------
        worker or None
            The training worker (None when nothing was started, or in synchronous mode).
        """
        host = self.host
        if self.status.busy:
            return self.worker
        model = host.runtime.model
        try:
            if host.interpolation_only():
                raise InputError(f"method {host.params.method!r} needs no training: press Reconstruct to apply it")
            volume, config = host.flow.training_inputs()
            if resume and model is None:
                raise InputError("nothing to resume: train or load a model first")
        except EMSRError as err:
            host.report_error(err, "training")
            return None
        seconds = self.estimates.training_seconds(config)
        if seconds is not None and seconds > CONFIRM_ABOVE and not host.confirm(
            f"This training should take about {clock(seconds)} here. Start it?"
        ):
            self.say(f"Training not started (it should take about {clock(seconds)} here): lower the budget, or "
                     "press Train again and answer yes.")
            return None
        resume_model = model if resume else None
        if not resume:
            self.plot.clear_plot()
        self.session = TrainSession()
        self.last_stage = None
        start = int(resume_model.step) if resume_model is not None else 0
        status = self.status
        status.start_step, status.step = start, start
        status.total = start + int(config.steps or 0)
        status.loss = status.gain = None
        status.stage, status.stage_index, status.stage_count, status.elapsed = "", 0, 1, 0.0
        status.budget_seconds = float(config.minutes) * 60.0 if config.minutes else 0.0
        status.stage_started, status.stage_first_step = 0.0, start
        status.state = RUNNING
        self.say("Preparing training (reading the volume, building the network)...")
        index = int(volume.data.shape[1]) // 2  # the previewed xz plane: the middle one
        flow = host.flow
        self.preview.begin(flow.preview_anchor(), flow.preview_input(volume, config, index),
                           flow.preview_text.format(y=index), index)
        self.worker = host.start(
            train_task, self.session, volume, config, resume_model, index,
            connect={"yielded": self.on_update, "errored": lambda err: host.report_error(err, what="training"),
                     "finished": self.on_finished},
            progress={"desc": "napari-emsr training"},
        )
        return self.worker

    def stop(self) -> None:
        """Stop after the current step; the model trained so far is kept and buttons come back."""
        if self.session is not None and self.status.state == RUNNING:
            self.session.stop()
            self.status.state = STOPPING
            self.say("Stopping after the current step...")

    # ------------------------------------------------------------------------------------ events
    def on_update(self, update: TrainUpdate) -> None:
        # NOTE: adding a layer can process pending Qt events, which would run this slot re-entrantly and
        # out of order; updates are queued and handled strictly in step order.
        self.pending.append(update)
        self._drain()

    def on_finished(self) -> None:
        # None marks the end in the queue of updates, so the end is handled after the last update.
        self.pending.append(None)
        self._drain()

    def _drain(self) -> None:
        if self.handling:
            return
        self.handling = True
        try:
            while self.pending:
                update = self.pending.pop(0)
                if update is None:
                    self._finish()
                else:
                    self._handle(update)
        finally:
            self.handling = False

    def _handle(self, update: TrainUpdate) -> None:
        ev = update.event
        stage_index = int(getattr(ev, "stage_index", 0))
        stage_count = int(getattr(ev, "stage_count", 1))
        last_stage = stage_index == stage_count - 1
        if self.last_stage is not None and stage_index != self.last_stage:
            # NOTE: each stage counts its own steps: a new stage starts a new curve and a new progress bar.
            self.plot.clear_plot()
        new_stage = stage_index != self.last_stage
        self.last_stage = stage_index
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
            self.preview.show(ev.preview, update.preview_cubic)
        now = time.perf_counter()
        if ev.done or ev.gain is not None or now - self.last_redraw > REDRAW_INTERVAL:
            self.last_redraw = now
            self.plot.redraw()
            if status.state == RUNNING:
                self.say(self.progress_message())

    def progress_message(self) -> str:
        status = self.status
        stage = f"{status.stage} ({status.stage_index + 1}/{status.stage_count}): " if status.stage_count > 1 else ""
        gain = f", gain over cubic {status.gain:+.2f} dB" if status.gain is not None else ""
        text = status.progress_text()[len(status.stage_prefix()):]
        return f"{stage}{text}, loss {status.loss:.4g}{gain}"

    def _advance_activity_bar(self, ev: Any, start: int, new_stage: bool) -> None:
        """napari's activity-dock progress bar of the training worker: seconds with a time budget, else steps."""
        pbar = getattr(self.worker, "pbar", None)
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
        pbar.events.eta(value=status.progress_text()[len(status.stage_prefix()):])

    def _finish(self) -> None:
        from napari_emsr.device import free_memory

        session = self.session
        model = session.final_model() if session is not None else None
        device = getattr(getattr(session, "trainer", None), "device", None) or self.host.params.device
        if session is not None:
            session.trainer = None
        self.estimates.from_training(self.status)
        self.preview.end()
        if model is not None:
            self.set_model(model)
            self.host.flow.after_training(model)
        self.worker = None
        self.plot.redraw()
        self.status.state = IDLE
        if model is not None:
            last = model.history[-1] if model.history else {}
            gain = last.get("val_psnr", 0) - last.get("cubic_psnr", 0) if last.get("val_psnr") is not None else None
            # NOTE: a flat stack validates to NaN: no figure then, rather than "+nan dB"
            note = f", gain over cubic {gain:+.2f} dB" if gain is not None and math.isfinite(gain) else ""
            self.say(f"Training ended at step {model.step}{note}. Reconstruct to see the whole volume.")
        free_memory(None if device == "auto" else device)  # NOTE: nothing on the CPU (a GC pause on the GUI thread)
        self.estimates.schedule()
