"""The panel's Export on a dask scheduler: a LocalCluster of worker processes, named by its address."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PREVIEW_EVERY = 3  # the shared panel fixture (conftest.py) previews every 3 steps here
TIMEOUT = 180_000  # ms


def _notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def test_export_on_a_scheduler_address_equals_the_export_here(panel, qtbot, tmp_path):
    distributed = pytest.importorskip("distributed")
    from napari_emsr.io import open_volume

    panel.start_training()
    qtbot.waitUntil(lambda: not panel.status.busy and panel.model is not None, timeout=TIMEOUT)
    panel.reconstruct_params.export_planes = "xz"
    here = tmp_path / "here.ome.zarr"
    worker = panel.export_volume(str(here))
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    assert panel.export_status.message.startswith(f"Exported to {here}")

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  host="127.0.0.1") as cluster, distributed.Client(cluster, set_as_default=False) as c:
        address = cluster.scheduler_address
        # typed into Export's "On" field
        panel.export.scheduler_edit.setText(f" {address} ")
        panel.export.scheduler_edit.editingFinished.emit()
        assert panel.reconstruct_params.scheduler == address
        assert not panel.export.estimate_text or f"On {address}" in panel.export.progress_bar.toolTip()
        there = tmp_path / "there.ome.zarr"
        worker = panel.export_volume(str(there))
        assert f"on {address}" in panel.status_label.text()
        qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
        assert panel.export_status.message.startswith(f"Exported to {there}"), panel.export_status.message
        # the work went to the cluster: its scheduler saw the model's engine and the chunk tasks
        prefixes = c.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        assert any(name.startswith("emsr-engine") for name in prefixes), prefixes
    a, b = open_volume(here), open_volume(there)
    np.testing.assert_allclose(b.spacing, a.spacing)
    np.testing.assert_array_equal(np.asarray(b.data), np.asarray(a.data))
    # after the export the client is closed: dask computes here again
    from napari_emsr.cluster import active_client

    assert active_client() is None


def test_a_bad_scheduler_says_what_to_do(panel, qtbot, tmp_path):
    pytest.importorskip("distributed")
    panel.params.method = "cubic"
    panel.reconstruct_params.scheduler = "nonsense"
    before = len(_notifications())
    worker = panel.export_volume(str(tmp_path / "x.ome.zarr"))
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    new = _notifications()[before:]
    assert any("export on 'nonsense'" in m and "'On' field" in m and "clear the field" in m for m in new), new
    assert not (tmp_path / "x.ome.zarr").exists()
    assert panel.export.export_button.isEnabled()
