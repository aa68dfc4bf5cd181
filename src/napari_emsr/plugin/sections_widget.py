"""The *Inspect sections* dock widget: how was z cut? Real axial planes next to simulated ones, as layers.

Self-supervised training is only as good as its picture of how the sections were cut. This widget runs
:func:`napari_emsr.sections.compare_sections` on a picked image layer (and, optionally, a saved model: its learned
degradation or the profile it was trained with) in a thread worker and adds one layer: real xz planes of the
stack, then lateral planes degraded by each candidate profile (point, slab, Gaussian, the fitted profile, the
model's), side by side along x and interpolated onto the isotropic grid, so a person sees which simulation looks
like the real sections. The label under the button gives each candidate's spectral distance to the real planes
(lower is closer) and noise level; ``emsr info --degradation`` writes the same comparison to files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

#: Columns of background between the kinds in the side-by-side layer.
GAP = 8


def side_by_side(result: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The real and simulated planes of a :func:`~napari_emsr.sections.compare_sections` result, interpolated onto
    the isotropic grid and put side by side along x: (planes, z, kinds x (width + GAP)) float32, and the kinds in
    their order (``real`` first)."""
    from napari_emsr.sections import _upsample

    f = result["factor"]
    names = ["real", *result["simulated"]]
    stacks = [_upsample(result["real"], f)] + [_upsample(result["simulated"][n], f) for n in result["simulated"]]
    k, z, w = stacks[0].shape
    out = np.full((k, z, len(stacks) * (w + GAP) - GAP), np.nan, np.float32)
    for i, s in enumerate(stacks):
        out[:, :, i * (w + GAP) : i * (w + GAP) + w] = s
    return np.nan_to_num(out, nan=float(np.nanmin(out))), names


def summary(result: dict[str, Any]) -> str:
    """One line per kind: its spectral distance to the real planes and its noise, and which is closest."""
    lines = []
    for name, st in result["stats"].items():
        d = st["distance"]
        lines.append(f"{name}: " + ("the stack's own xz planes" if d is None else f"distance {d:.3f}")
                     + f", noise {st['noise']:.3f}")
    fit = result.get("fit") or {}
    if result.get("closest"):
        lines.append(f"closest to the real sections: {result['closest']} (lower distance = closer spectrum along z)")
    if fit.get("thickness") is not None:
        lines.append(f"the fitted profile (what auto trains with): {fit['label']}"
                     + (f" (FWHM {fit['fwhm']:.2f} F)" if fit["fwhm"] else "")
                     + ("" if fit.get("lateral_lines", "yx") == "yx"
                        else f"; z matched to lateral lines along {fit['lateral_lines']} alone (the distances above "
                             "use the same lines)")
                     + ("" if fit.get("reliable", True) else f"; not reliable: {fit.get('note')}"))
    return "\n".join(lines)


class SectionsWidget(QWidget):
    """Pick a stack (and optionally a model file), press *Compare*: a layer shows real and simulated sections.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (npe2 passes it).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The anisotropic stack whose sections to inspect (z is the first axis)")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("optional: a model file (.emsr.pt)")
        self.model_edit.setToolTip("Adds the model's own degradation: its learned one (profile learned) or the "
                                   "profile it was trained with")
        browse = QPushButton("…")
        browse.setToolTip("Pick a model file")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model_edit)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Stack", self.layer_combo)
        form.addRow("Model", row)
        self.button = QPushButton("Compare sections")
        self.button.setToolTip("Real xz planes of the stack next to lateral planes degraded by each candidate "
                               "section profile, as one layer (runs in the background)")
        self.button.clicked.connect(self.compare)
        self.label = QLabel("Pick a stack and press Compare sections.")
        self.label.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.button)
        lay.addWidget(self.label)
        lay.addStretch(1)
        self.result: dict[str, Any] | None = None
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    def _refresh(self, *_: Any) -> None:
        from napari.layers import Image

        current = self.layer_combo.currentText()
        names = [ly.name for ly in self.viewer.layers
                 if isinstance(ly, Image) and ly.ndim == 3 and not ly.name.startswith("sections:")]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "napari-emsr models (*.pt);;All files (*)")
        if path:
            self.model_edit.setText(path)

    def compare(self) -> Any:
        """Start the comparison in a thread worker; the layer is added when it returns. Returns the worker."""
        from napari.utils.notifications import show_error

        from napari_emsr.errors import InputError

        from .layers import layer_to_volume
        from .workers.runner import start_task

        name = self.layer_combo.currentText()
        if not name:
            show_error("No 3D image layer to inspect: open a stack (File > Open, or drag a TIFF / OME-Zarr in) first")
            return None
        try:
            vol = layer_to_volume(self.viewer.layers[name])
            factor = float(vol.factor)
            if factor <= 1.0:
                raise InputError(f"layer {name!r} has F = 1 (isotropic voxels): set its z voxel size in the "
                                 "reconstruction panel or the file's metadata; there is no axial degradation "
                                 "to inspect")
            model_path = self.model_edit.text().strip()
            if model_path and not Path(model_path).is_file():
                raise InputError(f"no model file at {model_path}: pick one with … or clear the field")
        except InputError as e:
            show_error(str(e))
            return None
        self.button.setEnabled(False)
        self.label.setText(f"Comparing the sections of {name!r} (F = {factor:.2f}) …")
        self.worker = start_task(_compare, vol.data, factor, model_path or None,
                            connect={"returned": self._done, "errored": self._failed})
        return self.worker

    def _done(self, result: dict[str, Any]) -> None:
        self.result = result
        data, names = side_by_side(result)
        src = self.viewer.layers[self.layer_combo.currentText()] if self.layer_combo.currentText() else None
        lateral = float(src.scale[-1]) if src is not None else 1.0
        title = "sections: " + " | ".join(names)
        if title in self.viewer.layers:
            self.viewer.layers.remove(title)
        self.viewer.add_image(data, name=title, scale=(1.0, lateral, lateral), contrast_limits=(0.0, 1.0),
                              metadata={"kinds": names, "axes": "plane, z, kinds x width"})
        self.label.setText(f"Layer {title!r}: left to right {', '.join(names)}; scroll through the planes.\n"
                           + summary(result))
        self.button.setEnabled(True)

    def _failed(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        self.button.setEnabled(True)
        self.label.setText(f"Failed: {exc}")
        show_error(f"Comparing the sections failed: {exc}. Check the stack's z voxel size (F) and the model file.")


def _compare(data: Any, factor: float, model_path: str | None) -> dict[str, Any]:
    from napari_emsr.sections import compare_sections

    model = None
    if model_path:
        from napari_emsr.model import load_model

        model = load_model(model_path)
    return compare_sections(data, factor, model=model)
