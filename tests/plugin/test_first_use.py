"""Rough edges a first-time user met in the panel: estimates after a yz comparison, the preview's label, the
comparison's label after the layers change, a dock narrower than its rows, tooltips that name papers by number,
and an export's outcome shown for another method. A real viewer, real tiny trainings and exports."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

PREVIEW_EVERY = 2
TIMEOUT = 120_000  # ms
PLUGIN = Path(__file__).resolve().parents[2] / "src" / "napari_emsr" / "plugin"


def _restored_once(layer):
    return layer.data.view == "restored" and bool(layer.data.seconds)


def test_after_a_yz_comparison_the_estimates_follow_the_pipeline_chosen(panel, qtbot, tmp_path):
    viewer = panel.viewer
    said = []
    viewer.text_overlay.events.text.connect(lambda event: said.append(viewer.text_overlay.text))
    panel.start_training()
    qtbot.waitUntil(lambda: not panel.status.busy and panel.model is not None, timeout=TIMEOUT)
    # the preview's label: short, it names the plane (a third of the canvas each for three words)
    preview = [text for text in said if "sections" in text]
    assert preview and all(len(text) < 60 for text in preview), preview
    assert preview[0] == f"xz plane y={panel.current_volume().data.shape[1] // 2}: sections | cubic | restored"

    # a yz side by side: its one-plane yz blocks are timed, the export's estimate is not made of them
    qtbot.waitUntil(lambda: panel.restore_speed is not None, timeout=TIMEOUT)
    panel.show_side_by_side("yz")
    qtbot.waitUntil(lambda: panel.comparing is not None, timeout=TIMEOUT)
    restored = panel.comparing[2]
    assert restored.name.endswith("yz-restored") and panel.comparer.labels() == "input | cubic | restored"
    qtbot.waitUntil(lambda: _restored_once(restored) and panel.block_worker is None, timeout=TIMEOUT)
    x = (int(round(viewer.dims.point[2] / 10.0)) + 40) % restored.data.shape[2]
    viewer.dims.set_point(2, x * 10.0)  # a second yz plane, timed too
    qtbot.waitUntil(lambda: len(restored.data.seconds) >= 2 and panel.block_worker is None, timeout=TIMEOUT)
    panel.estimator.show()
    found = panel.estimates()
    text = panel.reconstruct.estimate_label.text()
    assert text.startswith("here: xz plane ")
    if "yz" in found["timed"]:  # a block of a second or more: the label names the direction it timed
        assert "yz plane" in text and "(timed)" in text.split("yz plane")[1]
        assert "xz plane" not in text.split("·")[0] or "(timed)" not in text.split("·")[0]
    panel.reconstruct_params.export_planes = "xz"
    # the export's estimate: a chunk of its pipeline (xz planes now) timed here, not the yz blocks
    qtbot.waitUntil(lambda: panel.estimates().get("export_timed"), timeout=TIMEOUT)
    assert "a chunk of xz planes" in panel.estimates()["export_how"]
    guess = panel.estimates()["export"][0]
    out = tmp_path / "iso.ome.zarr"
    t0 = time.perf_counter()
    worker = panel.export_volume(str(out))
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    took = time.perf_counter() - t0
    assert panel.export_status.done == panel.export_status.total
    assert took / 3 <= guess <= took * 3, (guess, took, found)
    assert panel.export.progress_bar.text().startswith("done ")

    # a fused Reconstruct adds layers and changes the grid: the comparison's label goes
    assert panel.comparer.labels() == "input | cubic | restored"
    panel.reconstruct_params.planes = ("fuse",)
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: any(layer.name.endswith("fused") for layer in viewer.layers), timeout=TIMEOUT)
    overlay = viewer.canvas.overlays["text"]
    assert panel.comparing is None and not (overlay.visible and "cubic" in overlay.text)
    assert panel.comparer.labels() == ""
    # Side by side again labels the cells again; turning the grid off takes the label away
    panel.show_side_by_side("xz")
    qtbot.waitUntil(lambda: panel.comparing is not None, timeout=TIMEOUT)
    assert panel.comparer.labels() == "input | cubic | restored"
    viewer.grid.enabled = False
    assert panel.comparing is None and not overlay.visible

    # another model: the Export bar no longer shows the last export's outcome
    path = tmp_path / "model.emsr.pt"
    worker = panel.save_model(str(path))
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    assert path.exists()
    model = panel.model
    panel.load_model(str(path))
    qtbot.waitUntil(lambda: panel.model is not model, timeout=TIMEOUT)
    assert panel.export_status.done == 0 and not panel.export.progress_bar.text().startswith("done ")


def test_the_export_bar_forgets_an_export_of_another_method(panel, qtbot, tmp_path):
    panel.params.method = "cubic"
    worker = panel.export_volume(str(tmp_path / "cubic.ome.zarr"))
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    bar = panel.export.progress_bar
    assert bar.text().startswith("done ") and " blocks in " in bar.text(), bar.text()
    panel.params.method = "paired"
    assert panel.export_status.done == 0 and "done" not in bar.text() and "blocks in" not in bar.text()
    assert panel.export_status.message == ""


@pytest.mark.parametrize("method", ["isotropic", "paired"])
def test_the_docked_panel_is_as_wide_as_its_rows(make_napari_viewer, qtbot, method):
    from napari_emsr.plugin._widget import EMSRWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-emsr", "medulla_anisotropic")
    panel = EMSRWidget(viewer)
    panel.params.method = method
    viewer.window.add_dock_widget(panel, name="napari-emsr", area="right")
    window = viewer.window._qt_window
    window.resize(1600, 1150)
    qtbot.wait(300)
    try:
        body = panel.scroll.widget()
        assert panel.minimumSizeHint().width() <= panel.width()
        assert body.minimumSizeHint().width() <= panel.scroll.viewport().width()
        assert not panel.scroll.horizontalScrollBar().isVisible()
        # and the panel leaves most of the window to the canvas
        assert panel.width() <= window.width() // 2, (panel.width(), body.minimumSizeHint().width())
    finally:
        panel.cleanup()
        qtbot.waitUntil(lambda: not panel.workers, timeout=TIMEOUT)


def test_no_plugin_string_names_a_paper_by_its_number():
    found = []
    for path in sorted(PLUGIN.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "paper 00" in node.value:
                found.append(f"{path.relative_to(PLUGIN)}:{node.lineno}")
    assert len(list(PLUGIN.rglob("*.py"))) > 20
    assert not found, found
