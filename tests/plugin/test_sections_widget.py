"""The *Inspect sections* widget with a real viewer: real and simulated sections as a layer (issue 9, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

TIMEOUT = 120_000  # ms


@pytest.fixture
def inspector(make_napari_viewer):
    from napari_emsr.plugin.sections_widget import SectionsWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-emsr", "medulla_anisotropic")
    widget = SectionsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Inspect sections")
    return widget


def _wait(widget, qtbot):
    qtbot.waitUntil(lambda: widget.button.isEnabled(), timeout=TIMEOUT)


def test_compare_adds_real_and_simulated_sections_side_by_side(inspector, qtbot):
    viewer = inspector.viewer
    source = viewer.layers[inspector.layer_combo.currentText()]
    assert inspector.compare() is not None or inspector.result is not None
    _wait(inspector, qtbot)
    added = [ly for ly in viewer.layers if ly.name.startswith("sections:")]
    assert len(added) == 1
    layer = added[0]
    kinds = layer.metadata["kinds"]
    assert kinds[0] == "real" and "fitted" in kinds and "point" in kinds
    r = inspector.result
    k, m, w = r["real"].shape
    assert layer.data.shape[0] == k
    assert layer.data.shape[2] == len(kinds) * (w + 8) - 8  # one column of planes per kind, a gap between
    # the real column is the stack's own xz planes, interpolated onto the isotropic grid (z ~ (m - 1) F + 1)
    assert abs(layer.data.shape[1] - ((m - 1) * r["factor"] + 1)) <= 1
    real_col = layer.data[:, :, :w]
    assert np.isfinite(layer.data).all() and real_col.std() > 0.01
    assert layer.scale[-1] == pytest.approx(source.scale[-1])
    text = inspector.label.text()
    assert "closest to the real sections" in text and "fitted profile" in text
    fit = r["fit"]  # the fit's own label, with its FWHM where it has one
    assert f"(what auto trains with): {fit['label']}" in text and fit["label"] in ("point", (
        f"slab {fit['thickness']:.2f} F, edges {fit['softness']:.2f} F"))
    assert (f"(FWHM {fit['fwhm']:.2f} F)" in text) == (fit["label"] != "point")
    assert all(f"{n}:" in text for n in kinds if n != "real")
    # comparing again replaces the layer instead of piling up copies
    inspector.compare()
    _wait(inspector, qtbot)
    assert len([ly for ly in viewer.layers if ly.name.startswith("sections:")]) == 1


def test_a_model_adds_its_own_degradation(inspector, qtbot, tmp_path):
    from napari_emsr.plugin.layers import layer_to_volume
    from napari_emsr.train import TrainConfig, Trainer

    vol = layer_to_volume(inspector.viewer.layers[inspector.layer_combo.currentText()])
    cfg = TrainConfig(steps=2, patch=32, size="tiny", device="cpu", val_every=2, preview_every=0,
                      options={"profile": "slab"})
    trainer = Trainer(vol, cfg)
    for _ in trainer.run():
        pass
    path = tmp_path / "m.emsr.pt"
    trainer.model.save(path)
    inspector.model_edit.setText(str(path))
    inspector.compare()
    _wait(inspector, qtbot)
    assert "model" in inspector.result["simulated"]
    assert "model:" in inspector.label.text()


def test_bad_input_says_what_to_do_and_adds_nothing(inspector, qtbot):
    from napari.utils.notifications import notification_manager

    viewer = inspector.viewer
    inspector.model_edit.setText("/nonexistent/model.emsr.pt")
    assert inspector.compare() is None
    assert any("no model file" in str(n.message) for n in notification_manager.records)
    inspector.model_edit.setText("")
    viewer.layers.clear()
    assert inspector.layer_combo.count() == 0
    assert inspector.compare() is None
    assert any("open a stack" in str(n.message) for n in notification_manager.records)
    iso = viewer.add_image(np.random.default_rng(0).random((16, 32, 32), dtype=np.float32), name="iso")
    assert inspector.layer_combo.currentText() == iso.name
    assert inspector.compare() is None
    assert any("F = 1" in str(n.message) for n in notification_manager.records)
    assert not [ly for ly in viewer.layers if ly.name.startswith("sections:")]
