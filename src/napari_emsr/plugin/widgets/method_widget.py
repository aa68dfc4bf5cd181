"""Method, training budget, patch size and network: the training parameters of the panel."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from napari_emsr.degrade import PROFILE_DESCRIPTIONS

NET_SIZES = ("tiny", "small", "base")
SECTION_PROFILES = ("auto", "point", "slab", "gaussian", "mixed")
BUDGET_KINDS = ("steps", "minutes")


def _int_spin(value: int, minimum: int, maximum: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class MethodWidget(QGroupBox):
    """Method picker (with its one-line description and defaults), budget, patch size and network.

    Signals
    -------
    method_changed(str)
        The picked method's name.
    """

    method_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Method", parent)
        from napari_emsr.methods import METHODS, method_names
        from napari_emsr.nets import DESCRIPTIONS, net_names

        self._methods = METHODS
        self.method_combo = QComboBox()
        self.method_combo.addItems(method_names())
        self.description_label = QLabel()
        self.description_label.setWordWrap(True)
        self.defaults_label = QLabel()
        self.defaults_label.setWordWrap(True)
        self.defaults_label.setStyleSheet("color: gray")

        self.budget_kind = QComboBox()
        self.budget_kind.addItems(BUDGET_KINDS)
        self.budget_value = _int_spin(3000, 1, 10_000_000, 100)
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget_value)
        budget_row.addWidget(self.budget_kind)
        self.patch_box = _int_spin(64, 8, 1024, 8)
        self.patch_box.setToolTip("Side of the square lateral training patches (pixels)")
        self.net_combo = QComboBox()
        for name in net_names():
            self.net_combo.addItem(name)
            self.net_combo.setItemData(
                self.net_combo.count() - 1, DESCRIPTIONS.get(name, ""), Qt.ItemDataRole.ToolTipRole
            )
        self.size_combo = QComboBox()
        self.size_combo.addItems(NET_SIZES)
        self.size_combo.setToolTip(
            "Network size: tiny for a quick CPU try, base for the best quality on a GPU"
        )

        self.profile_combo = QComboBox()
        for value in SECTION_PROFILES:
            self.profile_combo.addItem(value, value)
            self.profile_combo.setItemData(
                self.profile_combo.count() - 1, PROFILE_DESCRIPTIONS.get(value, ""), Qt.ItemDataRole.ToolTipRole
            )
        self.profile_combo.setToolTip(
            "How the z sections were cut. auto: estimated from the stack when a layer is picked "
            "(point for FIB-SEM-like thin samples, slab for serial sections)"
        )

        net_row = QHBoxLayout()
        net_row.addWidget(self.net_combo)
        net_row.addWidget(self.size_combo)
        form = QFormLayout(self)
        form.addRow("Method", self.method_combo)
        form.addRow(self.description_label)
        form.addRow(self.defaults_label)
        form.addRow("Budget", budget_row)
        form.addRow("Patch", self.patch_box)
        form.addRow("Network", net_row)
        form.addRow("Sections", self.profile_combo)

        self.budget_kind.currentTextChanged.connect(self._on_budget_kind)
        self.method_combo.currentTextChanged.connect(self._on_method)
        self._on_method(self.method_combo.currentText())

    def _on_budget_kind(self, kind: str) -> None:
        if kind == "minutes":
            self.budget_value.setSingleStep(1)
            self.budget_value.setValue(min(self.budget_value.value(), 30))
        else:
            self.budget_value.setSingleStep(100)

    def _on_method(self, name: str) -> None:
        method = self._methods[name]
        self.description_label.setText(method.description)
        defaults = dict(method.defaults)
        shown = {k: v for k, v in defaults.items()}
        if method.net:
            shown = {"net": f"{method.net} ({method.size})", **shown}
        self.defaults_label.setText(
            "defaults: " + ", ".join(f"{k} {v}" for k, v in shown.items()) if shown else "no training"
        )
        if method.net:
            self.net_combo.setCurrentText(method.net)
        if method.size:
            self.size_combo.setCurrentText(method.size)
        if "patch" in defaults:
            self.patch_box.setValue(int(defaults["patch"]))
        if "steps" in defaults and self.budget_kind.currentText() == "steps":
            self.budget_value.setValue(int(defaults["steps"]))
        for widget in (
            self.budget_value, self.budget_kind, self.patch_box, self.net_combo, self.size_combo, self.profile_combo
        ):
            widget.setEnabled(method.trains)
        self.method_changed.emit(name)

    # -- values ---------------------------------------------------------------------------------------
    def method(self) -> str:
        """The picked method's name."""
        return self.method_combo.currentText()

    def trains(self) -> bool:
        """Whether the picked method learns (False for interpolation)."""
        return self._methods[self.method()].trains

    def set_values(self, **values: Any) -> None:
        """Set fields by name: method, steps, minutes, patch, net, size."""
        if "method" in values:
            self.method_combo.setCurrentText(values["method"])
        if values.get("steps") is not None:
            self.budget_kind.setCurrentText("steps")
            self.budget_value.setValue(int(values["steps"]))
        if values.get("minutes") is not None:
            self.budget_kind.setCurrentText("minutes")
            self.budget_value.setValue(int(values["minutes"]))
        if "patch" in values:
            self.patch_box.setValue(int(values["patch"]))
        if "net" in values:
            self.net_combo.setCurrentText(values["net"])
        if "size" in values:
            self.size_combo.setCurrentText(values["size"])
        if "profile" in values:
            index = self.profile_combo.findData(values["profile"])
            if index < 0:
                raise ValueError(f"unknown section profile {values['profile']!r}: one of {SECTION_PROFILES}")
            self.profile_combo.setCurrentIndex(index)

    def profile(self) -> str:
        """The section profile training assumes ("auto" estimates it from the stack)."""
        return str(self.profile_combo.currentData())

    def set_estimated_profile(self, estimate: dict | None) -> None:
        """Show what "auto" stands for on the current stack (a :class:`~napari_emsr.degrade.ProfileEstimate` dict)."""
        index = self.profile_combo.findData("auto")
        if estimate is None:
            self.profile_combo.setItemText(index, "auto")
            self.profile_combo.setItemData(index, PROFILE_DESCRIPTIONS["auto"], Qt.ItemDataRole.ToolTipRole)
            return
        self.profile_combo.setItemText(index, f"auto: {estimate['profile']}")
        self.profile_combo.setItemData(index, estimate.get("note", ""), Qt.ItemDataRole.ToolTipRole)

    def config_kwargs(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields this widget sets."""
        kwargs: dict[str, Any] = {
            "method": self.method(),
            "patch": self.patch_box.value(),
            "net": self.net_combo.currentText(),
            "size": self.size_combo.currentText(),
            "profile": self.profile(),
        }
        if self.budget_kind.currentText() == "minutes":
            kwargs["minutes"] = float(self.budget_value.value())
        else:
            kwargs["steps"] = int(self.budget_value.value())
        return kwargs
