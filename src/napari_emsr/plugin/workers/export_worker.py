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

    def progress(self, done: int, total: int) -> None:
        """The core's progress callback: report, then raise :class:`ExportCancelled` if cancelled."""
        if self._report is not None:
            self._report(int(done), int(total))
        if self.cancelled:
            raise ExportCancelled("export cancelled; run it again with the same path to resume")


@contextmanager
def stop_between_tasks(job: ExportJob) -> Iterator[None]:
    """Check ``job``'s cancel flag before and after each dask task this thread computes, so that a cancel
    stops the export within one task instead of one whole block (a block is many tasks).

    Dask's local callbacks are process-wide: the check raises only in the thread that runs the export.
    """
    from dask.callbacks import Callback

    me = threading.get_ident()

    def check(*_: Any) -> None:
        if threading.get_ident() == me and job.cancelled:
            raise ExportCancelled("export cancelled; run it again with the same path to resume")

    with Callback(pretask=check, posttask=check):
        yield


def stopping_copy(model: Any, device: str, job: ExportJob) -> Any:
    """A copy of ``model`` whose network checks ``job``'s cancel flag before each batch of planes, so that a cancel
    stops the export within one batch (a block of a fused export is one long task). The panel's own model (its
    layers restore blocks with it meanwhile) is left as it is. An interpolation method's name is returned as is.
    """
    if isinstance(model, str) or not hasattr(model, "network"):
        return model
    from napari_emsr.device import resolve_device

    own = model.copy()

    def check(_module: Any, _inputs: Any) -> None:
        if job.cancelled:
            raise ExportCancelled("export cancelled; run it again with the same path to resume")

    own.network(resolve_device(device)).register_forward_pre_hook(check)
    return own


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
    if spec is None:  # NOTE: on a cluster the model is sent to the workers: no hook of this process goes with it
        model = stopping_copy(model, device, job)
    # NOTE: while the client is open it is dask's default scheduler in this whole process.
    with open_client(spec), stop_between_tasks(job):
        out = export(volume, model, path, planes=planes, device=device, overwrite=False, progress=job.progress,
                     deband=deband)
    return str(out)


def export_lateral_task(job: ExportJob, volume: Any, model: Any, path: str, enhance: bool, device: str) -> str:
    """Write a paired model's lateral result of ``volume`` to ``path``
    (:func:`napari_emsr.lateral_apply.export_lateral`); returns the path written."""
    from napari_emsr.lateral_apply import export_lateral

    model = stopping_copy(model, device, job)
    with stop_between_tasks(job):
        return str(export_lateral(volume, model, path, enhance=enhance, device=device, overwrite=False,
                                  progress=job.progress))
