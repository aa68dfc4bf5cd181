"""The uncertainty layer: after a fused Reconstruct, where the xz and yz restorations disagree, lazily."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PREVIEW_EVERY = 3  # the shared panel fixture (conftest.py) previews every 3 steps here
TIMEOUT = 120_000  # ms


def _notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def test_a_fused_reconstruct_shows_where_xz_and_yz_disagree(panel, qtbot):
    from napari_emsr.reconstruct import reconstruct

    viewer = panel.viewer
    panel.start_training()
    qtbot.waitUntil(lambda: not panel.status.busy and panel.model is not None, timeout=TIMEOUT)
    panel.reconstruct_params.planes = ("fuse",)
    before = len(_notifications())
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 2, timeout=TIMEOUT)
    fused, unc = panel.reconstructed_layers
    assert unc.name == "medulla anisotropic uncertainty"
    assert unc.colormap.name == "inferno" and unc.blending == "additive" and unc.visible
    assert viewer.layers.index(unc) > viewer.layers.index(fused)  # drawn over the fused layer
    np.testing.assert_allclose(unc.scale, fused.scale)
    told = [m for m in _notifications()[before:] if "uncertainty (hot colours over the fused layer)" in m]
    assert len(told) == 1 and "where the xz and yz restorations disagree" in told[0]
    # the plane on screen: one block, computed once in the background, fills both layers
    qtbot.waitUntil(
        lambda: fused.data.view == unc.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT
    )
    assert fused.data.computed + unc.data.computed == 1
    y = int(round(viewer.dims.point[1] / 10.0))
    volume = panel.current_volume()
    # the network's two restorations as they come (the fused layer is their debanded mean)
    xz = np.asarray(reconstruct(volume, panel.model, planes="xz", device="cpu", deband=False)[:, y, :], np.int32)
    yz = np.asarray(reconstruct(volume, panel.model, planes="yz", device="cpu", deband=False)[:, y, :], np.int32)
    shown = np.asarray(unc._slice.image.view, np.int32)
    assert shown.shape == xz.shape
    assert np.abs(shown - np.abs(xz - yz)).max() <= 1  # |xz - yz| before rounding
    np.testing.assert_array_equal(np.asarray(fused._slice.image.view), np.asarray(fused.data.dask[:, y, :]))
    # the quality readout is measured on the fused layer, never on the uncertainty
    qtbot.waitUntil(lambda: panel.quality is not None, timeout=TIMEOUT)
    assert "fused" in panel.reconstruct.quality_label.toolTip()


def test_interpolation_gives_no_uncertainty_layer(panel, qtbot):
    panel.params.method = "cubic"
    panel.reconstruct_params.planes = ("fuse",)
    worker = panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 1, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    assert [layer.name for layer in panel.reconstructed_layers] == ["medulla anisotropic fused"]
    assert "medulla anisotropic uncertainty" not in panel.viewer.layers


def test_the_deband_box_decides_what_the_layers_show(panel, qtbot, monkeypatch):
    """Unticked, the restored xz layer is the network's output as it is; ticked (the default), the debanded one."""
    from napari_emsr.reconstruct import reconstruct

    monkeypatch.setattr("napari_emsr.deband.BANDED", None)  # filters fitted however little a short run bands

    panel.start_training()
    qtbot.waitUntil(lambda: not panel.status.busy and panel.model is not None, timeout=TIMEOUT)
    assert panel.reconstruct.deband_check.isChecked() and panel.reconstruct_params.deband
    panel.reconstruct.deband_check.setChecked(False)
    assert panel.reconstruct_params.deband is False
    panel.reconstruct_params.planes = ("xz",)
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 1, timeout=TIMEOUT)
    (layer,) = panel.reconstructed_layers
    qtbot.waitUntil(lambda: layer.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT)
    y = int(round(panel.viewer.dims.point[1] / 10.0))
    volume = panel.current_volume()
    raw = np.asarray(reconstruct(volume, panel.model, planes="xz", device="cpu", deband=False)[:, y, :])
    debanded = np.asarray(reconstruct(volume, panel.model, planes="xz", device="cpu")[:, y, :])
    shown = np.asarray(layer._slice.image.view)
    np.testing.assert_array_equal(shown, raw)
    assert not np.array_equal(shown, debanded)
