"""Start, stop and resume training, with its progress (bound to the panel's training status)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_emsr.plugin.state import TrainingStatus

#: Keyboard shortcuts of Train and Stop, in Qt's words and in napari's (napari's own use Ctrl+Shift+T for the
#: theme): the panel binds them on the viewer (napari's canvas takes the keys when it has the focus) and as
#: shortcuts of the panel itself (when one of its fields has it).
TRAIN_SHORTCUT, STOP_SHORTCUT = "Ctrl+Shift+Return", "Ctrl+Shift+X"
NAPARI_KEYS = {"train": "Control-Shift-Enter", "stop": "Control-Shift-X"}


class TrainWidget(QGroupBox):
    """Buttons that start, stop and resume training, and a progress bar that follows a :class:`TrainingStatus`.

    Parameters
    ----------
    status : TrainingStatus
        Its step, start step and total drive the progress bar.

    Signals
    -------
    train_requested(), stop_requested(), resume_requested()
        The buttons were pressed.
    """

    train_requested = Signal()
    stop_requested = Signal()
    resume_requested = Signal()

    def __init__(self, status: TrainingStatus, parent: QWidget | None = None):
        super().__init__("Training", parent)
        self.status = status
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.set_tooltips("the picked layer", "the budget", "the picked device", None)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("not started")
        self.progress_bar.setValue(0)

        buttons = QHBoxLayout()
        for button in (self.train_button, self.stop_button, self.resume_button):
            buttons.addWidget(button)
        self.column = QVBoxLayout(self)
        self.column.addLayout(buttons)
        self.column.addWidget(self.progress_bar)

        self.train_button.clicked.connect(self.train_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        self.resume_button.clicked.connect(self.resume_requested)
        for event in (status.events.step, status.events.total, status.events.start_step, status.events.elapsed):
            event.connect(self._show_progress)
        self.set_state(running=False, can_train=True, can_resume=False)

    def set_tooltips(self, layer: str, budget: str, device: str, model_step: int | None) -> None:
        """Say in each button's tooltip what it will do with the current choices."""
        self.train_button.setToolTip(
            f"Train a new network on {layer} for {budget} on {device}; the loss, the gain over cubic and a "
            f"preview plane are shown as it goes ({TRAIN_SHORTCUT})"
        )
        self.stop_button.setToolTip(
            f"Stop after the current step; the model trained so far is kept and can be resumed ({STOP_SHORTCUT})"
        )
        start = f"from step {model_step}" if model_step is not None else "(train or load a model first)"
        self.resume_button.setToolTip(f"Train the current model further {start}, for {budget} more")

    def set_state(self, *, running: bool, can_train: bool, can_resume: bool) -> None:
        """Enable the buttons that make sense now."""
        self.train_button.setEnabled(not running and can_train)
        self.resume_button.setEnabled(not running and can_train and can_resume)
        self.stop_button.setEnabled(running)

    def _show_progress(self, *_: Any) -> None:
        """Seconds out of the budget with a time budget, else ``step`` between ``start_step`` and ``total`` (an
        unknown total gives a busy bar); the text names the stage and the time left
        (:meth:`TrainingStatus.progress_text`)."""
        status = self.status
        if status.budget_seconds:
            self.progress_bar.setRange(0, max(1, int(round(status.budget_seconds))))
            self.progress_bar.setValue(min(int(status.elapsed), int(round(status.budget_seconds))))
        elif status.total:
            self.progress_bar.setRange(int(status.start_step), max(int(status.total), int(status.start_step) + 1))
            self.progress_bar.setValue(min(int(status.step), int(status.total)))
        else:
            self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat(status.progress_text().replace("%", "%%"))
