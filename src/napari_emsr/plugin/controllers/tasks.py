"""Thread workers that stop mattering when the panel closes, and error messages that say what to do."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from napari_emsr.errors import EMSRError
from napari_emsr.plugin.workers.runner import start_task

logger = logging.getLogger(__name__)

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


#: What Reconstruct and Export say while the first training runs (there is no model to apply yet).
TRAINING_FIRST = ("no model yet: the first one comes when training ends (or press Stop to keep what it has learned so "
                  "far), then Reconstruct or Export")

def alive(widget: Any) -> bool:
    """Whether the Qt side of ``widget`` still exists (a closed viewer deletes it before workers end)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return not getattr(widget, "_closed", False)


def error_message(err: BaseException, what: str) -> str:
    """The core's message verbatim, or ``"<what> failed: ... What to do: ..."`` for any other error."""
    if isinstance(err, EMSRError):
        return str(err)  # the core's messages say what to do
    logger.error("%s failed", what, exc_info=(type(err), err, err.__traceback__))
    step = NEXT_STEP.get(what, "try again; the details are in the log")
    return f"{what} failed: {type(err).__name__}: {err}. What to do: {step}."


class TaskRunner:
    """Starts tasks in napari thread workers and keeps them until they finish; their slots do nothing once
    ``owner`` (the panel) is gone.

    Parameters
    ----------
    owner : QWidget
        The widget whose life the slots follow.
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.running: set = set()

    def guarded(self, slot: Callable) -> Callable:
        """``slot``, doing nothing once the owner is gone."""

        def run(*args: Any) -> None:
            if alive(self.owner):
                slot(*args)

        return run

    def start(self, func: Callable, *args: Any, connect: dict, progress: Any = None, **kwargs: Any) -> Any:
        """Start ``func`` in a worker (:func:`napari_emsr.plugin.workers.runner.start_task`); the worker or None."""
        if getattr(self.owner, "_cleaned", False) or not alive(self.owner):
            # NOTE: closing the viewer removes its layers, which would start measuring the next one: a worker
            # started then outlives the Qt objects it reports to
            return None
        holder: dict = {}

        def forget() -> None:
            self.running.discard(holder.get("worker"))

        slots = {}
        for name, slot in connect.items():
            listed = list(slot) if isinstance(slot, (list, tuple)) else [slot]
            slots[name] = [self.guarded(s) for s in listed]
        slots["finished"] = [*slots.get("finished", []), forget]
        worker = start_task(func, *args, connect=slots, progress=progress, **kwargs)
        if worker is not None:
            holder["worker"] = worker
            self.running.add(worker)
        return worker
