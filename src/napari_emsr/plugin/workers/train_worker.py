"""The training task: runs :class:`napari_emsr.train.Trainer` in a thread worker and yields its events.

The trainer is built inside the worker (building it reads the volume and may take seconds). A
:class:`TrainSession`, made on the main thread, is how the widget reaches it: ``session.stop()`` asks the
trainer to stop after the current step, and ``session.model`` is the model trained so far, after a stop too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class TrainUpdate:
    """What the worker yields: the trainer's event, and (once, with the first preview) the cubic plane.

    Attributes
    ----------
    event : napari_emsr.train.TrainEvent
        Step, total, loss, validation scores, maybe a preview plane.
    start_step : int
        The step this run started from (non-zero when resuming).
    preview_cubic : numpy.ndarray or None
        The cubic interpolation of the preview plane, sent with the first preview.
    """

    event: Any
    start_step: int = 0
    preview_cubic: np.ndarray | None = None


class TrainSession:
    """Shared between the widget (main thread) and one training worker.

    Attributes
    ----------
    trainer : napari_emsr.train.Trainer or None
        Set by the worker once built.
    model : napari_emsr.model.EMSRModel or None
        The model when the worker ended (see :meth:`final_model`).
    """

    def __init__(self) -> None:
        self.trainer: Any = None
        self.model: Any = None
        self.stop_requested = False

    def stop(self) -> None:
        """Ask training to stop after the current step (safe from any thread)."""
        self.stop_requested = True
        trainer = self.trainer
        if trainer is not None:
            trainer.stop()

    def final_model(self) -> Any:
        """The model trained so far, or None when the trainer was never built."""
        if self.model is None and self.trainer is not None:
            self.model = self.trainer.model
        return self.model


class TimedLooks:
    """Validation and preview at a rate tied to time when the budget is in minutes.

    The trainer validates every ``val_every`` steps and previews every ``preview_every`` steps; how many steps a
    minute holds depends on the device and the network, so a short CPU run could end before the first of
    either. With a time budget, the worker also validates (and shows a preview) when ``every`` seconds passed
    without one (a tenth of the budget, between 5 and 60 s), between two trainer steps. These extra looks are
    for the plot and the preview only: the trainer's keep-best and its history use its own validations.

    Parameters
    ----------
    minutes : float or None
        The time budget (None: a step budget; nothing is added).
    """

    def __init__(self, minutes: float | None) -> None:
        import time

        self._now = time.perf_counter
        self.every = min(60.0, max(5.0, float(minutes) * 6.0)) if minutes else None
        self._last_val = self._last_preview = self._now()

    def look(self, trainer: Any, event: Any) -> None:
        """Add a validation and a preview to ``event`` (a restoring step) when one is due."""
        from napari_emsr.train import RESTORE_STAGE

        if self.every is None or event.done or getattr(event, "stage", RESTORE_STAGE) != RESTORE_STAGE:
            return
        now = self._now()
        if event.val_psnr is not None:
            self._last_val = now
        elif now - self._last_val >= self.every and getattr(trainer, "pairs", None) is not None:
            event.val_psnr, event.cubic_psnr = trainer.validate(), trainer.cubic_psnr
            self._last_val = self._now()
        if event.preview is not None:
            self._last_preview = now
        elif now - self._last_preview >= self.every and getattr(trainer, "pairs", None) is not None:
            event.preview = trainer.preview()
            self._last_preview = self._now()


def preview_input(trainer: Any) -> np.ndarray:
    """The plane the preview restores, as its network input, in input intensity units: the interpolated xz plane,
    or for a lateral method (paired) the held-out LR plane interpolated onto the HR grid."""
    pairs = getattr(trainer, "pairs", None)
    app = getattr(getattr(trainer, "method", None), "application", None)
    if app is not None and app.lateral and hasattr(pairs, "preview"):
        return trainer.norm.invert(np.asarray(pairs.preview(), np.float32))
    return trainer.preview_input()


def cpu_threads() -> int:
    """Threads torch may use on the CPU while the GUI runs: all cores but one (at least one)."""
    return max(1, (os.cpu_count() or 2) - 1)


def train_task(
    session: TrainSession,
    volume: Any,
    config: Any,
    resume: Any = None,
    preview_index: int | None = None,
) -> Iterator[TrainUpdate]:
    """Build the trainer and yield one :class:`TrainUpdate` per trainer event; return the final model.

    Parameters
    ----------
    session : TrainSession
        Receives the trainer (so the widget can stop it) and the final model.
    volume : napari_emsr.io.Volume
        The anisotropic input.
    config : napari_emsr.train.TrainConfig
        Training options. On the CPU, ``threads`` defaults to all cores but one so the GUI keeps a core.
    resume : napari_emsr.model.EMSRModel, optional
        Continue training this model (its step count continues).
    preview_index : int, optional
        y index of the previewed xz plane.

    Yields
    ------
    TrainUpdate
    """
    from napari_emsr.device import free_memory, resolve_device
    from napari_emsr.train import Trainer

    device = resolve_device(config.device)
    if device == "cpu" and not config.threads:
        # NOTE: leave one core to the GUI thread (see benchmarks/bench_gui_responsiveness.py).
        config = dataclasses.replace(config, threads=cpu_threads())
    trainer = Trainer(volume, config, resume=resume, preview_index=preview_index)
    session.trainer = trainer
    if session.stop_requested:
        trainer.stop()
    start = int(trainer.start_step)
    sent_cubic = False
    clock = TimedLooks(config.minutes)
    try:
        for event in trainer.run():
            clock.look(trainer, event)
            cubic = None
            if event.preview is not None and not sent_cubic:
                cubic = np.asarray(preview_input(trainer), np.float32)
                sent_cubic = True
            yield TrainUpdate(event, start, cubic)
    finally:
        session.model = trainer.model
        trainer.net.to("cpu")
        free_memory(device)
    return session.model
