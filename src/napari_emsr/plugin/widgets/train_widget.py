"""Train / Stop / Resume buttons, a progress bar and a status line."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class TrainWidget(QGroupBox):
    """Buttons that start, stop and resume training, with its progress.

    Signals
    -------
    train_requested(), stop_requested(), resume_requested()
        The buttons were pressed.
    """

    train_requested = Signal()
    stop_requested = Signal()
    resume_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Training", parent)
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("Train a new network on the input layer")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step; the model trained so far is kept")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Train the current model further, continuing its step count")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m steps")
        self.progress_bar.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        buttons = QHBoxLayout()
        for button in (self.train_button, self.stop_button, self.resume_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)

        self.train_button.clicked.connect(self.train_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        self.resume_button.clicked.connect(self.resume_requested)
        self.set_state(running=False, can_train=True, can_resume=False)

    def set_state(self, *, running: bool, can_train: bool, can_resume: bool) -> None:
        """Enable the buttons that make sense now."""
        self.train_button.setEnabled(not running and can_train)
        self.resume_button.setEnabled(not running and can_train and can_resume)
        self.stop_button.setEnabled(running)

    def set_progress(self, step: int, total: int | None) -> None:
        """Show ``step`` of ``total`` (an unknown total gives a busy bar)."""
        if total:
            self.progress_bar.setFormat("%v / %m steps")
            self.progress_bar.setRange(0, int(total))
            self.progress_bar.setValue(min(int(step), int(total)))
        else:
            self.progress_bar.setRange(0, 0)

    def set_status(self, text: str) -> None:
        """One line of status (also the place where errors are repeated)."""
        self.status_label.setText(text)
