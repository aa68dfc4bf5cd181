"""Export: one export at a time in a worker, its status, progress bars, time left and cancellation."""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from napari_emsr.errors import InputError
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.state import IDLE, RUNNING, STOPPING, ExportStatus, clock
from napari_emsr.plugin.workers.export_worker import ExportCancelled, ExportJob

#: Work estimated to take longer than this (seconds) is started only once the user said yes.
CONFIRM_ABOVE = 30 * 60


class _Progress(QObject):
    #: (done, total) from the export worker thread; Qt queues it to the main thread.
    progress = Signal(int, int)


class ExportController:
    """Runs the flows' export tasks.

    Parameters
    ----------
    host : Host
        The panel.
    status : ExportStatus
        Where the export is (the Export box shows it).
    """

    def __init__(self, host: Host, status: ExportStatus):
        self.host = host
        self.status = status
        self.job: ExportJob | None = None
        self.worker: Any = None
        self.t0 = 0.0
        self.closed = False  # the panel closed: the worker's last reports find no widgets to show them
        self.signals = _Progress()
        self.progress = self.signals.progress
        self.progress.connect(self.on_progress)
        self.clock = QTimer()
        self.clock.setInterval(1000)
        self.clock.timeout.connect(self._tick)

    def say(self, text: str) -> None:
        self.status.message = text
        self.host.set_status(text)

    def run(self, task: Any, args: tuple, path: Any, *, total: int, guess: float, message: str) -> Any:
        """Start ``task(job, *args)`` in a worker as the export: its status, bar, clock and cancellation (the
        flows' exports all come here).

        Returns
        -------
        worker or None
        """
        status = self.status
        if status.busy:
            return self.worker
        if guess > CONFIRM_ABOVE and not self.host.confirm(
            f"This export should take about {clock(guess)} here. Start it?"
        ):
            self.say(f"Export not started (it should take about {clock(guess)} here).")
            return None
        job = ExportJob(report=self.progress.emit)
        self.job = job
        status.path, status.done, status.total = str(path), 0, total
        status.elapsed, status.estimate, status.first_done, status.first_count = 0.0, guess, 0.0, 0
        self.t0 = time.perf_counter()
        status.state = RUNNING
        self.say(message)
        self.clock.start()
        worker = self.host.start(
            task, job, *args,
            connect={"returned": lambda p: self.say(f"Exported to {p} in {clock(time.perf_counter() - self.t0)}"),
                     "errored": self.on_error, "finished": self.on_finished},
            progress={"desc": "napari-emsr export"},
        )
        self.worker = worker
        if worker is not None:
            # NOTE: the activity dock's cancel button quits the worker; the job then stops at the next task.
            job.is_aborted = lambda: bool(getattr(worker, "abort_requested", False))
        return worker

    def reset(self) -> None:
        """Forget the last export's outcome (another method or model would write something else); the bar shows
        the estimate again. Nothing changes while an export runs."""
        status = self.status
        if status.busy:
            return
        status.total, status.path, status.message = 0, "", ""
        status.elapsed, status.estimate, status.first_done, status.first_count = 0.0, 0.0, 0.0, 0
        status.done = 0

    def cancel(self) -> None:
        """Stop the export at the next task it computes (a zarr export can be resumed later)."""
        if self.job is not None:
            self.job.cancel()
            self.status.state = STOPPING
            self.say("Cancelling the export...")
            self._eta("cancelling")

    def on_progress(self, done: int, total: int) -> None:
        if self.closed:
            return
        status = self.status
        status.elapsed = time.perf_counter() - self.t0
        if done and not status.first_count:
            status.first_done, status.first_count = status.elapsed, int(done)
        status.total = int(total)
        status.done = int(done)
        if status.state == RUNNING and done:
            self.host.set_status(f"Exporting to {status.path}: {status.progress_text()}")
        pbar = getattr(self.worker, "pbar", None)
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            if done > pbar.n:
                pbar.update(done - pbar.n)
        if status.state == RUNNING:
            self._eta(status.progress_text())

    def _eta(self, text: str) -> None:
        pbar = getattr(self.worker, "pbar", None)
        if pbar is not None:
            pbar.events.eta(value=text)

    def _tick(self) -> None:
        """Once a second while the export runs: its elapsed and remaining time."""
        if self.status.state != RUNNING:
            self.clock.stop()
            return
        self.status.elapsed = time.perf_counter() - self.t0
        self._eta(self.status.progress_text())

    def on_error(self, err: BaseException) -> None:
        from napari.utils.notifications import show_info

        if isinstance(err, ExportCancelled):
            self.say(str(err))
            show_info(str(err))
        elif str(err).startswith("--scheduler"):
            where = self.host.reconstruct_params.scheduler.strip()
            detail = str(err).split(":", 1)[1].strip() if ":" in str(err) else str(err)
            self.host.report_error(InputError(
                f"export on {where!r}: {detail}. Check the address in Export's 'On' field (is the scheduler "
                "running and reachable from here?), or clear the field to export in this process"
            ), "export")
        else:
            self.host.report_error(err, "export")

    def on_finished(self) -> None:
        self.clock.stop()
        self.worker = None
        self.job = None
        self.status.elapsed = time.perf_counter() - self.t0
        self.status.state = IDLE

    def close(self) -> None:
        """Stop the export (the panel closes)."""
        self.closed = True
        self.clock.stop()
        if self.job is not None:
            self.job.cancel()
