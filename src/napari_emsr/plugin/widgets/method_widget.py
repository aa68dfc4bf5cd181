"""Method, its options, training budget, patch size and network: the training parameters of the panel.

Every picker reads a registry: methods from :func:`napari_emsr.methods.method_names`, their options from the
method's declared :class:`~napari_emsr.methods.Option` s (a drop-down for each option with choices), networks
from :func:`napari_emsr.nets.net_names` and their sizes from :func:`napari_emsr.nets.net_sizes` (handed in by
:meth:`MethodWidget.set_net_sizes`, since reading them imports torch). A method added to the registry shows up
here without a change to this file. The widget shows a :class:`~napari_emsr.plugin.state.TrainingParameters`
and writes the user's edits to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from napari_emsr.plugin.state import BUDGET_KINDS, TrainingParameters


def _int_spin(value: int, minimum: int, maximum: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class _RegistryCombo(QComboBox):
    """A drop-down that reads its registry again each time it opens (a method registered later shows up)."""

    def __init__(self, refresh: Callable[[], Any], parent: QWidget | None = None):
        super().__init__(parent)
        self._refresh = refresh

    def showPopup(self) -> None:  # Qt's name
        self._refresh()
        super().showPopup()


def _on_pick(combo: QComboBox, apply: Callable[[Any], Any]) -> None:
    """Call ``apply`` with the data of the item the user picks in ``combo``."""
    combo.currentIndexChanged.connect(lambda _: apply(combo.currentData()))


def _select(combo: QComboBox, value: Any, label: str | None = None) -> None:
    """Pick the item whose data is ``value``, adding it when the combo does not hold it yet."""
    index = combo.findData(value)
    if index < 0:
        combo.addItem(label or str(value), value)
        index = combo.count() - 1
    if combo.currentIndex() != index:
        combo.setCurrentIndex(index)


class MethodWidget(QGroupBox):
    """Method picker (with its one-line description and defaults), its options, budget, patch size and network.

    Parameters
    ----------
    params : TrainingParameters
        What the widget shows and edits.

    Attributes
    ----------
    option_combos : dict
        Option name -> its drop-down, for the picked method's options with choices.
    """

    def __init__(self, params: TrainingParameters, parent: QWidget | None = None):
        super().__init__("Method", parent)
        from napari_emsr.nets import net_names

        self.params = params
        self.option_combos: dict[str, QComboBox] = {}
        self._auto_notes: dict[str, tuple[str, str]] = {}
        self._net_sizes: dict[str, tuple[str, ...]] = {}

        self.method_combo = _RegistryCombo(self.refresh_methods)
        self.method_combo.setToolTip("The reconstruction method (methods registered by other packages appear too)")
        self.description_label = QLabel()
        self.description_label.setWordWrap(True)
        self.defaults_label = QLabel()  # not shown: its text is the description's tooltip

        self.budget_kind = QComboBox()
        for kind in BUDGET_KINDS:
            self.budget_kind.addItem(kind, kind)
        self.budget_value = _int_spin(1, 1, 10_000_000, 100)
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget_value)
        budget_row.addWidget(self.budget_kind)
        self.patch_box = _int_spin(params.patch, 8, 1024, 8)
        self.patch_box.setToolTip("Side of the square lateral training patches (pixels)")
        self.net_combo = QComboBox()
        descriptions = _net_descriptions()
        for name in net_names():
            self.net_combo.addItem(name, name)
            tip = descriptions.get(name, "")
            self.net_combo.setItemData(self.net_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.size_combo = QComboBox()
        self.size_combo.setToolTip("Network size: tiny for a quick CPU try, base for the best quality on a GPU")
        net_row = QHBoxLayout()
        net_row.addWidget(self.net_combo)
        net_row.addWidget(self.size_combo)

        self.form = QFormLayout(self)
        self.form.addRow("Method", self.method_combo)
        self.form.addRow(self.description_label)
        self.form.addRow("Budget", budget_row)
        self.form.addRow("Patch", self.patch_box)
        self.form.addRow("Network", net_row)

        # Qt -> parameters
        _on_pick(self.method_combo, lambda name: setattr(params, "method", name))
        _on_pick(self.budget_kind, lambda kind: setattr(params, "budget", kind))
        self.budget_value.valueChanged.connect(self._on_budget_value)
        self.patch_box.valueChanged.connect(lambda value: setattr(params, "patch", int(value)))
        _on_pick(self.net_combo, lambda name: setattr(params, "net", name))
        self.size_combo.currentIndexChanged.connect(self._on_size_picked)
        # parameters -> Qt
        params.events.method.connect(self._show_method)
        params.events.budget.connect(self._show_budget)
        params.events.steps.connect(self._show_budget)
        params.events.minutes.connect(self._show_budget)
        params.events.patch.connect(lambda patch: self.patch_box.setValue(int(patch)))
        params.events.net.connect(self._show_net)
        params.events.size.connect(self._show_size)
        params.events.options.connect(self._show_options)
        self.refresh()

    # -- parameters -> Qt -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show every field of the parameters, and the methods registered now."""
        self.refresh_methods()
        self._show_method(self.params.method)
        self._show_budget()
        self.patch_box.setValue(int(self.params.patch))
        self._show_net(self.params.net)

    def _show_method(self, name: str, *_: Any) -> None:
        from napari_emsr.methods import get_method

        if self.method_combo.findData(name) < 0:
            self._fill_methods()  # registered after the panel opened
        method = get_method(name)
        _select(self.method_combo, name)
        self.description_label.setText(method.description)
        defaults = method.training_defaults()
        shown = {"net": f"{method.net} ({method.size})", **defaults} if method.net else defaults
        text = "defaults: " + ", ".join(f"{k} {v}" for k, v in shown.items()) if method.trains else "no training"
        # NOTE: a tooltip, not a line of its own: the panel must fit a 1600 x 1150 window.
        self.defaults_label.setText(text)
        self.description_label.setToolTip(text)
        self.method_combo.setToolTip(f"The reconstruction method ({text}); methods registered by other packages "
                                     "appear too")
        self._build_options(method)
        for widget in (self.budget_value, self.budget_kind, self.patch_box, self.net_combo, self.size_combo):
            widget.setEnabled(method.trains)

    def refresh_methods(self) -> None:
        """Offer the methods registered now; when the picked one is gone, the first one is picked."""

        names = self._fill_methods()
        if names and self.params.method not in names:
            self.params.method = names[0]

    def _fill_methods(self) -> list[str]:
        from napari_emsr.methods import method_names

        names = method_names()
        if names != [self.method_combo.itemData(i) for i in range(self.method_combo.count())]:
            blocked = self.method_combo.blockSignals(True)
            self.method_combo.clear()
            for name in names:
                self.method_combo.addItem(name, name)
            self.method_combo.setCurrentIndex(max(self.method_combo.findData(self.params.method), 0))
            self.method_combo.blockSignals(blocked)
        return names

    def _show_budget(self, *_: Any) -> None:
        kind = self.params.budget
        _select(self.budget_kind, kind)
        self.budget_value.blockSignals(True)
        if kind == "minutes":
            self.budget_value.setSingleStep(1)
            self.budget_value.setValue(int(self.params.minutes))
        else:
            self.budget_value.setSingleStep(100)
            self.budget_value.setValue(int(self.params.steps))
        self.budget_value.blockSignals(False)

    def _on_budget_value(self, value: int) -> None:
        setattr(self.params, "minutes" if self.params.budget == "minutes" else "steps", int(value))

    def _show_net(self, name: str | None, *_: Any) -> None:
        if name:
            _select(self.net_combo, name)
        self._fill_sizes()

    def _fill_sizes(self) -> None:
        sizes = self._net_sizes.get(self.params.net or "", ())
        blocked = self.size_combo.blockSignals(True)
        self.size_combo.clear()
        for size in sizes:
            self.size_combo.addItem(size, size)
        self.size_combo.blockSignals(blocked)
        if self.params.size:
            self._show_size(self.params.size)

    def _show_size(self, size: str | None, *_: Any) -> None:
        if size:
            blocked = self.size_combo.blockSignals(True)
            _select(self.size_combo, size)
            self.size_combo.blockSignals(blocked)

    def _on_size_picked(self, index: int) -> None:
        size = self.size_combo.currentData()
        if size:
            self.params.size = size

    def set_net_sizes(self, sizes: Mapping[str, Sequence[str]]) -> None:
        """Offer, for each network, the sizes :func:`napari_emsr.nets.net_sizes` names (network -> sizes)."""
        self._net_sizes = {name: tuple(values) for name, values in sizes.items()}
        self._fill_sizes()

    # -- method options -------------------------------------------------------------------------------
    def _build_options(self, method: Any) -> None:
        """One drop-down per option with choices of ``method`` (none for a method without options)."""
        for combo in self.option_combos.values():
            self.form.removeRow(combo)
        self.option_combos = {}
        for option in method.options:
            if not option.choices:
                continue
            combo = QComboBox()
            for choice in option.choices:
                combo.addItem(str(choice), choice)
                tip = dict(option.descriptions).get(choice, "")
                combo.setItemData(combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
            combo.setToolTip(option.help)
            combo.setEnabled(method.trains)
            _on_pick(combo, partial(self.params.set_option, option.name))
            self.form.addRow(option.label or option.name, combo)
            self.option_combos[option.name] = combo
        self._show_options(self.params.options)

    def _show_options(self, options: Mapping[str, Any], *_: Any) -> None:
        for name, combo in self.option_combos.items():
            if name in options:
                blocked = combo.blockSignals(True)
                index = combo.findData(options[name])
                if index >= 0:
                    combo.setCurrentIndex(index)
                combo.blockSignals(blocked)
            self._show_auto_note(name)

    def set_auto_note(self, option: str, value: str | None, note: str = "") -> None:
        """Show what ``"auto"`` stands for in option ``option`` on the current stack (``"auto: point"``).

        Parameters
        ----------
        option : str
            The option's name (e.g. ``"profile"``).
        value : str or None
            What auto picks (None: unknown, the item shows plain ``auto``).
        note : str
            Why (the item's tooltip).
        """
        if value is None:
            self._auto_notes.pop(option, None)
        else:
            self._auto_notes[option] = (str(value), note)
        self._show_auto_note(option)

    def _show_auto_note(self, option: str) -> None:
        combo = self.option_combos.get(option)
        index = combo.findData("auto") if combo is not None else -1
        if index < 0:
            return
        from napari_emsr.methods import get_method

        declared = get_method(self.params.method).option(option)
        if option in self._auto_notes:
            value, note = self._auto_notes[option]
            combo.setItemText(index, f"auto: {value}")
            combo.setItemData(index, note, Qt.ItemDataRole.ToolTipRole)
        else:
            combo.setItemText(index, "auto")
            tip = dict(declared.descriptions).get("auto", "") if declared is not None else ""
            combo.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)


def _net_descriptions() -> dict[str, str]:
    """One line per network for the picker's tooltips (the registry's, when it offers them)."""
    from napari_emsr import nets

    return dict(getattr(nets, "DESCRIPTIONS", {}))
