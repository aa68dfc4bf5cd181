"""How long things take, said before they start and while they run; the first minute's offers; what to do next."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PREVIEW_EVERY = 3  # the shared panel fixture (conftest.py) previews every 3 steps here
TIMEOUT = 120_000  # ms


def _notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def test_reconstruct_and_export_say_how_long_before_and_while(panel, qtbot, tmp_path):
    from napari_emsr.plugin import estimate
    from napari_emsr.reconstruct import export_chunks

    viewer = panel.viewer
    panel.start_training()
    qtbot.waitUntil(lambda: not panel.status.busy and panel.model is not None, timeout=TIMEOUT)
    # after training, the model's network is timed here, and both boxes say what it means
    qtbot.waitUntil(lambda: panel.restore_speed is not None, timeout=TIMEOUT)
    speed = panel.restore_speed
    assert speed.kind == "network" and speed.device == "cpu" and speed.rate > 0
    assert "timed forward pass" in speed.how
    # the training speed now comes from the run itself
    assert panel.train_speed.how.startswith("the last training run on this stack: ")
    assert "the last training run" in panel.budget_hint.toolTip() and panel.budget_hint.isVisibleTo(panel)
    panel.reconstruct_params.planes = ("xz", "fuse")
    label = panel.reconstruct.estimate_label
    text = label.text()
    assert label.isVisibleTo(panel)
    assert re.fullmatch(r"here: xz plane [\d.e-]+ s · fused block \(64\) ([\d.e-]+ s|\d+:\d\d)", text), text
    assert "timed forward pass" in label.toolTip() and "with its uncertainty" in label.toolTip()
    assert text in panel.reconstruct.button.toolTip()
    volume = panel.current_volume()
    _, blocks = estimate.volume_work(volume.data.shape, 4.0, "fuse", export_chunks(volume, "fuse"))
    # the export's estimate: a chunk of the export's own pipeline (fused, debanded, its chunks) timed here
    qtbot.waitUntil(lambda: panel.estimates().get("export_timed"), timeout=TIMEOUT)
    timed = panel.estimator.timed_export[1]
    assert timed.chunks == blocks and timed.seconds > timed.once > 0 and timed.scale >= 1
    export_text = panel.export.estimate_text
    assert re.fullmatch(rf"≈ \d+:\d\d here, {blocks} blocks?", export_text), export_text
    assert panel.export.progress_bar.text() == export_text  # in the bar until an export starts
    assert "a fused chunk of" in panel.export.progress_bar.toolTip() and "timed here" in \
        panel.export.progress_bar.toolTip()
    # the fused block costs what its network pixels cost at the measured speed
    found = panel.estimates()
    nz, ny, nx = volume.data.shape
    zo = estimate.output_depth(nz, 4.0)
    fused_work = 64 * zo * nx + nx * zo * min(ny, 64 + 32)
    assert found["blocks"]["fuse"][0] == pytest.approx(fused_work / speed.rate)
    assert found["export"] == (pytest.approx(timed.seconds), blocks)

    # Reconstruct: the status line says the block's cost before it starts, the time left while it runs
    panel.reconstruct_params.planes = ("fuse",)
    panel.reconstruct_layers()
    assert "(here a fused block ≈ " in panel.status_label.text()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 2, timeout=TIMEOUT)
    fused = panel.reconstructed_layers[0]
    qtbot.waitUntil(lambda: fused.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT)
    y = (int(round(viewer.dims.point[1] / 10.0)) + 64) % fused.data.shape[1]
    seen = []
    viewer.dims.set_point(1, y * 10.0)
    qtbot.waitUntil(lambda: seen.append(panel.status_label.text()) or "left" in seen[-1], timeout=TIMEOUT)
    assert re.search(r"Restoring fused \+ uncertainty, y \d+-\d+ \(\d+ planes\) in the background: \d+:\d\d elapsed, "
                     r"about \d+:\d\d left", seen[-1]), seen[-1]
    qtbot.waitUntil(lambda: fused.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT)
    # the block restored here measured the speed again: the estimates follow it
    block_seconds = (fused.data.seconds + panel.reconstructed_layers[1].data.seconds)[-1]
    if block_seconds >= 1.0:
        assert "fuse" in panel.estimates()["timed"] and panel.restore_speed.how == speed.how  # the probe stays
        assert "the last fused block restored here (64 planes" in panel.reconstruct.estimate_label.toolTip()
        assert panel.estimates()["blocks"]["fuse"][0] == pytest.approx(block_seconds, rel=0.6)
    found = panel.estimates()

    # Export: the estimate before, blocks and time left while it runs, the time it took at the end
    panel.reconstruct_params.export_planes = "fuse"
    out = tmp_path / "iso.ome.zarr"
    texts = []
    panel.export_status.events.done.connect(lambda *_: texts.append(panel.export.progress_bar.text()))
    worker = panel.export_volume(str(out))
    status = panel.export_status
    assert status.estimate == pytest.approx(found["export"][0], rel=1e-6) and status.total == blocks
    assert "estimated" in panel.status_label.text()
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    assert status.done == status.total == blocks  # as many blocks as estimated
    assert texts and all(re.search(r"\d+/\d+ blocks · \d+:\d\d elapsed, about \d+:\d\d left", t) for t in texts)
    assert re.fullmatch(rf"Exported to {re.escape(str(out))} in \d+:\d\d", status.message)


def test_export_time_left_comes_from_the_measured_rate():
    from napari_emsr.plugin.state import ExportStatus

    status = ExportStatus(state="running", total=10, estimate=100.0)
    status.elapsed = 10.0
    assert status.seconds_left() == pytest.approx(90.0)
    assert status.progress_text() == "0/10 blocks · 0:10 elapsed, estimated 1:30 left"
    status.done, status.first_done, status.first_count, status.elapsed = 1, 30.0, 1, 30.0  # a slow first block
    assert status.seconds_left() == pytest.approx(270.0)
    status.done, status.elapsed = 3, 50.0  # 10 s a block since the first one
    assert status.seconds_left() == pytest.approx(70.0)
    assert status.progress_text() == "3/10 blocks · 0:50 elapsed, about 1:10 left"


def test_recommended_budget_for_this_device(panel, qtbot):
    from napari_emsr.plugin.estimate import Speed, recommend_budget

    params = panel.params
    qtbot.waitUntil(lambda: panel.train_speed is not None, timeout=TIMEOUT)
    speed = panel.train_speed
    assert speed.kind == "training" and speed.rate > 0 and f"{params.net} (tiny), patch 32" in speed.how
    hint = panel.budget_hint
    assert hint.isVisibleTo(panel) and hint.text().startswith("Recommended: ")
    assert f"({speed.rate:.2g} steps/s)" in hint.text() and "on cpu" in hint.toolTip()
    # next to the budget field: the row right under it in the method's form
    form = panel.method.form
    from qtpy.QtWidgets import QFormLayout

    row, role = form.getWidgetPosition(hint)
    assert role == QFormLayout.ItemRole.SpanningRole
    above = form.itemAt(row - 1, QFormLayout.ItemRole.FieldRole).layout()
    assert above is not None and above.indexOf(panel.method.budget_value) >= 0
    kind, value = panel.recommended
    params.budget, params.steps = "steps", 1
    hint.linkActivated.emit("use")
    assert params.budget == kind and getattr(params, kind) == value
    assert panel.method.budget_value.value() == value
    # a new network size is timed again
    params.size = "small"
    qtbot.waitUntil(lambda: f"{params.net} (small)" in (panel.train_speed.how if panel.train_speed else ""),
                    timeout=TIMEOUT)
    # the rule: the method's steps when they take at most an hour here, else an hour
    assert recommend_budget(Speed(10.0, "training", "cpu", ""), 3000)[:3] == ("steps", 3000, "3000 steps ≈ 5:00 "
                                                                               "here (10 steps/s)")
    kind, value, text, rule = recommend_budget(Speed(0.5, "training", "cpu", ""), 3000)
    assert (kind, value, text) == ("minutes", 60, "60 min ≈ 1800 steps here (0.5 steps/s)") and "1:40:00" in rule


def test_an_empty_viewer_offers_the_sample(make_napari_viewer, qtbot):
    from qtpy.QtCore import Qt

    from napari_emsr.plugin._widget import EMSRWidget

    viewer = make_napari_viewer()
    panel = EMSRWidget(viewer)
    viewer.window.add_dock_widget(panel, name="napari-emsr")
    try:
        assert panel.sample_button.isVisibleTo(panel)
        assert "File > Open Sample" in panel.sample_button.toolTip()
        qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
        assert [layer.name for layer in viewer.layers] == ["medulla anisotropic"]
        assert panel.input_params.layer == "medulla anisotropic"
        np.testing.assert_allclose(panel.input_params.spacing, (40, 10, 10))
        assert not panel.sample_button.isVisibleTo(panel)
        viewer.layers.clear()
        assert panel.sample_button.isVisibleTo(panel)
    finally:
        panel.cleanup()
        qtbot.waitUntil(lambda: not panel.workers, timeout=TIMEOUT)


def test_every_error_notification_says_what_to_do(panel, qtbot, tmp_path):
    import napari_emsr.plugin as plugin_package
    from napari_emsr.plugin._widget import NEXT_STEP

    # every task name the panel, its controllers and flows report errors under has a next step for errors that are
    # not the core's
    source = "\n".join(f.read_text() for f in Path(plugin_package.__file__).parent.rglob("*.py"))
    named = set(re.findall(r'what="([^"]+)"', source)) | set(re.findall(r'report_error\([^,]+, "([^"]+)"\)', source))
    assert named and named <= set(NEXT_STEP), named - set(NEXT_STEP)
    panel.start_training()
    qtbot.waitUntil(lambda: not panel.status.busy and panel.model is not None, timeout=TIMEOUT)
    # an error that is not the core's: writing a model into a file where a folder should be
    (tmp_path / "file").write_text("")
    before = len(_notifications())
    worker = panel.save_model(str(tmp_path / "file" / "model.emsr.pt"))
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    new = _notifications()[before:]
    assert any("saving the model failed" in m and "What to do: pick a folder you can write to" in m for m in new), new
    # the panel's own refusals say what to do
    panel.reconstruct_params.planes = ()
    for action, words in (
        (panel.reconstruct_layers, "tick at least one"),
        (panel.flip_compare, "press Side by side first"),
    ):
        before = len(_notifications())
        action()
        assert any(words in m for m in _notifications()[before:])
