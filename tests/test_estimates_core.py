"""An export's estimate from one timed chunk of its own pipeline (napari_emsr.estimates): the work scaling from
the timed chunk to the export's chunk grid (exact), the estimate against a real timed export (loose: the tests
share the CPU), and the line ``emsr apply`` prints before a long write."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny():
    """A tiny trained model and its (9, 96, 96) stack at F = 4."""
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.io import as_volume
    from napari_emsr.sample import _ground_truth
    from napari_emsr.train import TrainConfig, train

    gt = _ground_truth()[:33, :96, :96]
    vol = as_volume(make_anisotropic(gt, 4, "point"), spacing=(40.0, 10.0, 10.0))
    cfg = TrainConfig(steps=3, net="rescnn", size="tiny", patch=24, batch=4, device="cpu", val_every=5,
                      preview_every=0)
    return vol, train(vol, cfg)


def test_the_work_of_chunks_counts_their_margins_inside_the_volume():
    from napari_emsr.estimates import chunk_work, grid_work, spans

    zo, ny, nx, m = 10, 48, 48, 8
    rows = cols = spans((16, 16, 16))
    assert rows == [(0, 16), (16, 32), (32, 48)]
    # xz planes: the chunk's rows, each its columns plus a margin each side that lies inside the volume
    assert chunk_work(zo, ny, nx, "xz", (0, 16), (0, 16), m) == 16 * zo * 24
    assert chunk_work(zo, ny, nx, "xz", (16, 32), (16, 32), m) == 16 * zo * 32
    assert chunk_work(zo, ny, nx, "yz", (16, 32), (0, 16), m) == 16 * zo * 32
    assert chunk_work(zo, ny, nx, "fuse", (16, 32), (16, 32), m) == 2 * 16 * zo * 32
    assert chunk_work(zo, ny, nx, None, (16, 32), (16, 32), m) == zo * 16 * 16  # interpolation: voxels
    assert grid_work(zo, ny, nx, "fuse", rows, cols, m).sum() == 16 * zo * 480


def test_the_estimate_scales_the_timed_chunk_by_the_exports_chunk_grid(tiny):
    from napari_emsr.estimates import estimate_export
    from napari_emsr.reconstruct import debander_of, reconstruct

    vol, model = tiny
    zo = reconstruct(vol, model, planes="fuse").shape[0]
    # fused chunks of 32 x 32 px with 8-px margins on 96 x 96: a 3 x 3 grid whose interior chunk restores
    # 32 x 48 px per direction and an edge chunk 32 x 40: the export is 3 * (40 + 48 + 40) * 2 / (2 * 48) chunks
    # of work
    est = estimate_export(vol, model, planes="fuse", device="cpu", chunks=(32, 32), margin=8, share=1.0,
                          deband=False)
    assert est.chunks == 9 and est.chunk_shape == (zo, 32, 32)
    assert est.scale == pytest.approx(3 * (40 + 48 + 40) * 2 / (2 * 48))
    assert est.seconds == pytest.approx(est.once + est.chunk_seconds * est.scale)
    assert est.once >= 0 and est.chunk_seconds > 0 and "first call" in est.how
    # debanded: the filters' fit is paid once; a chunk restores the filters' radius of its neighbours too
    est = estimate_export(vol, model, planes="fuse", device="cpu", chunks=(32, 32), margin=8, share=1.0)
    deb = debander_of(reconstruct(vol, model, planes="fuse", chunks=(32, 32), margin=8))
    ry, rx = (deb.radius if deb.active and axis in deb.filters else 0 for axis in (1, 2))
    # the rows (columns) a direction restores: the chunk's own plus r each side inside the volume; its planes'
    # width: those plus the margins inside the volume
    total = (96 + 4 * ry) * (128 + 4 * rx) + (96 + 4 * rx) * (128 + 4 * ry)
    inner = (32 + 2 * ry) * (48 + 2 * rx) + (32 + 2 * rx) * (48 + 2 * ry)
    assert est.once > 0 and "deband probe's fit" in est.how
    assert est.scale == pytest.approx(total / inner)
    # xz planes in chunks of 8 whole rows: 12 chunks of the same work; a smaller share halves the timed rows
    est = estimate_export(vol, model, planes="xz", device="cpu", chunks=(8, 96), share=1.0)
    assert (est.chunks, est.scale, est.chunk_shape) == (12, pytest.approx(12.0), (zo, 8, 96))
    est = estimate_export(vol, model, planes="xz", device="cpu", chunks=(8, 96), share=1 / 40)
    assert (est.chunks, est.scale, est.chunk_shape) == (12, pytest.approx(48.0), (zo, 2, 96))
    # interpolation: output voxels, nothing fitted
    est = estimate_export(vol, "cubic", planes="xz", device="cpu", chunks=(8, 96), share=1.0)
    assert (est.chunks, est.scale, est.once) == (12, pytest.approx(12.0), 0.0)
    assert "cubic interpolation" in est.how


def test_the_chunk_grid_is_the_lazy_arrays(tiny):
    """The export's chunks come from export_chunks, whatever it picks: the estimate counts the lazy array's."""
    from napari_emsr.estimates import estimate_export
    from napari_emsr.reconstruct import export_chunks, reconstruct

    vol, model = tiny
    for planes in ("xz", "fuse"):
        arr = reconstruct(vol, model, planes=planes, chunks=export_chunks(vol, planes))
        est = estimate_export(vol, model, planes=planes, device="cpu", deband=False)
        assert est.chunks == int(np.prod(arr.numblocks))
        assert est.scale >= 1.0 and est.seconds > 0


def test_the_estimate_is_near_the_real_export(tiny, tmp_path):
    """Estimate, then the real export right after it (the ratio is what counts on a shared CPU: a loose bound)."""
    from napari_emsr.estimates import estimate_export
    from napari_emsr.reconstruct import export

    vol, model = tiny
    ratios = []
    for planes in ("fuse", "xz"):
        est = estimate_export(vol, model, planes=planes, device="cpu")
        t0 = time.perf_counter()
        export(vol, model, tmp_path / f"{planes}.ome.zarr", planes=planes, device="cpu")
        took = time.perf_counter() - t0
        ratios.append(est.seconds / took)
    assert all(1 / 3 <= r <= 3 for r in ratios), ratios


def test_the_cli_says_the_estimate_only_for_a_long_write(tiny, tmp_path):
    from napari_emsr.estimates import clock, estimate_line
    from napari_emsr.io import write_volume

    vol, model = tiny
    line = estimate_line(vol, model, device="cpu", planes="xz", above=0.0)
    assert re.fullmatch(r"estimated time: ~\d+:\d\d from one timed chunk", line), line
    assert estimate_line(vol, model, device="cpu", planes="xz", above=3600.0) is None
    assert (clock(59.6), clock(61), clock(3725)) == ("1:00", "1:01", "1:02:05")
    # a write of a few seconds: no line
    stack = tmp_path / "stack.tif"
    write_volume(stack, vol.data, spacing=vol.spacing)
    path = tmp_path / "m.emsr.pt"
    model.save(path)
    run = subprocess.run([sys.executable, "-m", "napari_emsr.cli", "apply", str(stack), "--model", str(path), "-o",
                          str(tmp_path / "out.tif"), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "estimated time" not in run.stderr + run.stdout


def test_the_export_takes_the_filters_the_estimate_fitted(tiny):
    """The estimate fits the deband filters on the restored probe; the export given them does not fit them again."""
    from napari_emsr.estimates import estimate_export
    from napari_emsr.reconstruct import debander_of, reconstruct

    vol, model = tiny
    found = estimate_export(vol, model, device="cpu", planes="fuse", deband=True)
    assert found.debander is not None
    arr = reconstruct(vol, model, planes="fuse", device="cpu", deband=True, debander=found.debander)
    assert debander_of(arr) is found.debander
    fresh = reconstruct(vol, model, planes="fuse", device="cpu", deband=True)
    assert debander_of(fresh) is not found.debander  # (the check can fail: another engine fits its own)
