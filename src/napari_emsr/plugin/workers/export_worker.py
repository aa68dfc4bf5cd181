"""The export task: write the isotropic volume chunk by chunk, reporting progress, cancellable."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from napari_emsr.errors import EMSRError


class ExportCancelled(EMSRError):
    """The user cancelled the export; what was written stays resumable and is not marked complete."""


class ExportJob:
    """Cancel flag and progress callback shared between the widget and one export worker.

    Parameters
    ----------
    report : callable, optional
        Called as ``report(done, total)`` from the worker thread (connect it to a Qt signal so the slot
        runs on the main thread).
    """

    def __init__(self, report: Callable[[int, int], Any] | None = None) -> None:
        self._cancel = threading.Event()
        self._report = report
        #: Extra cancel test, e.g. whether the activity dock quit the worker.
        self.is_aborted: Callable[[], bool] = lambda: False

    def cancel(self) -> None:
        """Ask the export to stop at the next chunk."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (or the worker was quit)."""
        return self._cancel.is_set() or self.is_aborted()

    def check(self) -> bool:
        """The core's ``stop`` hook (checked before each block and each batch of planes): raises
        :class:`ExportCancelled` if cancelled, else False."""
        if self.cancelled:
            raise ExportCancelled("export cancelled; run it again with the same path to resume")
        return False

    def progress(self, done: int, total: int) -> None:
        """The core's progress callback: report, then raise :class:`ExportCancelled` if cancelled."""
        if self._report is not None:
            self._report(int(done), int(total))
        if self.cancelled:
            raise ExportCancelled("export cancelled; run it again with the same path to resume")


def _ended(callback: tuple) -> bool:
    """Whether a dask callback (start, start_state, pretask, posttask, finish) is the check of an ended export."""
    running = getattr(callback[2], "running", None)
    return running is not None and not running[0]


@contextmanager
def stop_between_tasks(job: ExportJob) -> Iterator[None]:
    """Check ``job``'s cancel flag before and after each dask task this thread computes, so that a cancel
    stops the export within one task instead of one whole block (a block is many tasks).

    Dask's local callbacks are process-wide: the check raises only in the thread that runs the export, and only
    while it does. (Each dask computation takes the process's callbacks for its own time and puts back what it
    took when it ends: a computation in another thread that began during an export can put this check back after
    the export has ended, where a later task of the pooled thread that ran it, a training, would meet it.)
    """
    from dask.callbacks import Callback

    me = threading.get_ident()
    running = [True]

    def check(*_: Any) -> None:
        if running[0] and threading.get_ident() == me and job.cancelled:
            raise ExportCancelled("export cancelled; run it again with the same path to resume")

    check.running = running  # type: ignore[attr-defined]
    # the checks of ended exports such a computation put back: dropped (each holds its job, and the panel)
    Callback.active -= {cb for cb in Callback.active if _ended(cb)}
    try:
        with Callback(pretask=check, posttask=check):
            yield
    finally:
        running[0] = False


def export_task(
    job: ExportJob, volume: Any, model: Any, path: str, planes: str, device: str, scheduler: str = "",
    deband: bool = True,
) -> str:
    """Reconstruct ``volume`` with ``model`` and write it to ``path``; returns the path written.

    ``scheduler``: where the chunks are computed: ``""`` here, else a dask scheduler address or ``local:N``
    (:func:`napari_emsr.cluster.open_client`, which is closed again when the export ends).
    """
    from napari_emsr.cluster import check_spec, open_client
    from napari_emsr.reconstruct import export

    spec = scheduler.strip() or None
    check_spec(spec)
    if not isinstance(model, str):  # NOTE: here too (not only once the input's range was measured): in a worker
        model, _ = model.for_stack(volume.data)
    # NOTE: while the client is open it is dask's default scheduler in this whole process. On a cluster the
    # engine goes to the workers without the stop hook: the export stops between the tasks of this process.
    with open_client(spec), stop_between_tasks(job):
        out = export(volume, model, path, planes=planes, device=device, overwrite=False, progress=job.progress,
                     deband=deband, stop=job.check)
    return str(out)


def export_lateral_task(job: ExportJob, volume: Any, model: Any, path: str, enhance: bool, device: str) -> str:
    """Write a paired model's lateral result of ``volume`` to ``path``
    (:func:`napari_emsr.methods.paired.apply.export_lateral`); returns the path written."""
    model, _ = model.for_stack(volume.data)  # another bit depth or scaling: in the stack's own range
    from napari_emsr.methods.paired.apply import export_lateral

    with stop_between_tasks(job):
        return str(export_lateral(volume, model, path, enhance=enhance, device=device, overwrite=False,
                                  progress=job.progress, stop=job.check))
