"""Start, stop and resume training, with its progress (bound to the panel's training status)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_emsr.plugin.state import TrainingStatus


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
        self.train_button.setToolTip("Train a new network on the input layer")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step; the model trained so far is kept")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Train the current model further, continuing its step count")
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
