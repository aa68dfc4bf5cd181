"""Tests of OME-Zarr pyramids and translations: the level plan, 2x mean downsampling, export, resume, reopening."""

from __future__ import annotations

import dataclasses
import json

import dask.array as da
import numpy as np
import pytest
import zarr
from test_io_helpers import assert_valid_ngff

from napari_emsr.errors import InputError
from napari_emsr.io import INCOMPLETE_MARKER, Volume, as_volume, open_volume, write_volume
from napari_emsr.io.pyramid import MAX_LEVELS, downsample, downsample_block, plan_levels


def _mean2(a: np.ndarray) -> np.ndarray:
    """Reference 2x2x2 mean (odd ends padded with their last voxel), in float64."""
    pad = [(0, s % 2) for s in a.shape]
    a = np.pad(a.astype(np.float64), pad, mode="edge")
    z, y, x = (s // 2 for s in a.shape)
    return a.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5))


def test_plan_levels_isotropic_anisotropic_and_limits():
    # Isotropic: every axis halves until the largest side is at most 256.
    plan = plan_levels((300, 1100, 1000), (8, 8, 8))
    assert [s for s, _ in plan] == [(150, 550, 500), (75, 275, 250), (38, 138, 125)]
    assert all(f == (2, 2, 2) for _, f in plan)
    # Thick sections: z is kept until y and x have caught up with it.
    plan = plan_levels((50, 2048, 2048), (40, 4, 4))
    assert [f for _, f in plan] == [(1, 2, 2), (1, 2, 2), (1, 2, 2)]
    plan = plan_levels((50, 2048, 2048), (40, 4, 4), levels=6)
    assert [f for _, f in plan] == [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    # Small volumes get no automatic level; a number asks for levels, fewer once nothing can be halved.
    assert plan_levels((12, 20, 24)) == []
    assert [s for s, _ in plan_levels((3, 4, 5), levels=10)] == [(2, 2, 3), (1, 1, 2), (1, 1, 1)]
    assert plan_levels((12, 20, 24), levels=1) == []
    assert len(plan_levels((10**6, 10**6, 10**6))) == MAX_LEVELS - 1


def test_downsample_block_means_rounds_and_keeps_odd_ends():
    rng = np.random.default_rng(1)
    f = rng.random((5, 6, 7)).astype(np.float32)
    out = downsample_block(f, (2, 2, 2))
    assert out.dtype == np.float32 and out.shape == (3, 3, 4)
    np.testing.assert_allclose(out, _mean2(f), rtol=1e-6)
    u = rng.integers(0, 65535, size=(4, 6, 5), dtype=np.uint16)
    out = downsample_block(u, (2, 2, 2))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, np.rint(_mean2(u)).astype(np.uint16))
    # Only the axes with factor 2 shrink.
    assert downsample_block(u, (1, 2, 2)).shape == (4, 3, 3)
    np.testing.assert_array_equal(downsample_block(u, (1, 1, 1)), u)
    # Lazily, chunk by chunk, the same as on the whole array.
    lazy = downsample(da.from_array(f, chunks=(2, 4, 4)), (2, 2, 2))
    assert lazy.chunks == ((1, 1, 1), (2, 1), (2, 2))
    np.testing.assert_allclose(lazy.compute(), _mean2(f), rtol=1e-6)
    with pytest.raises(ValueError, match="even"):
        downsample(da.from_array(f, chunks=(3, 4, 4)), (2, 2, 2))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_pyramid_written_validated_and_reopened(tmp_path, dtype):
    rng = np.random.default_rng(2)
    vol = (rng.random((13, 20, 26)) * 200).astype(dtype)
    out = write_volume(tmp_path / "p.ome.zarr", vol, spacing=(5, 5, 5), chunks=(4, 8, 8), pyramid=3)
    assert not (out / INCOMPLETE_MARKER).exists()
    assert_valid_ngff(out)
    ms = json.loads((out / ".zattrs").read_text())["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[5, 5, 5], [10, 10, 10], [20, 20, 20]]
    shapes = [zarr.open_array(str(out / d["path"])).shape for d in ms["datasets"]]
    assert shapes == [(13, 20, 26), (7, 10, 13), (4, 5, 7)]

    v = open_volume(out)
    assert len(v.levels) == 3 and v.levels[0] is v.data
    assert all(isinstance(level, da.Array) for level in v.levels)
    assert [level.shape for level in v.levels] == shapes
    np.testing.assert_array_equal(v.data.compute(), vol)
    level1 = v.levels[1].compute()
    expected = _mean2(vol)
    if np.dtype(dtype).kind == "u":
        np.testing.assert_array_equal(level1, np.rint(expected).astype(dtype))
    else:
        np.testing.assert_allclose(level1, expected, rtol=1e-6)
    # Opening a coarser level: its voxel size, and the levels from it on.
    v1 = open_volume(out, level=1)
    assert v1.spacing == pytest.approx((10, 10, 10))
    assert [level.shape for level in v1.levels] == shapes[1:]
    np.testing.assert_array_equal(v1.data.compute(), level1)


def test_automatic_pyramid_only_above_256(tmp_path):
    vol = np.arange(4 * 6 * 600, dtype=np.uint16).reshape(4, 6, 600)
    out = write_volume(tmp_path / "wide.ome.zarr", vol, spacing=(4, 4, 4))
    assert_valid_ngff(out)
    assert [lvl.shape for lvl in open_volume(out).levels] == [(4, 6, 600), (2, 3, 300), (1, 2, 150)]
    flat = write_volume(tmp_path / "flat.ome.zarr", vol, spacing=(4, 4, 4), pyramid=False)
    assert_valid_ngff(flat)
    assert len(open_volume(flat).levels) == 1
    with pytest.raises(InputError, match="pyramid"):
        write_volume(tmp_path / "bad.ome.zarr", vol, pyramid=0)


def test_translation_round_trip(tmp_path):
    vol = np.zeros((8, 10, 12), np.float32)
    vol[2:5, 3:7, 4:9] = 1
    out = write_volume(tmp_path / "t.ome.zarr", vol, spacing=(0.01, 0.01, 0.01), unit="um",
                       translation=(1.0, 2.0, 3.5), pyramid=2)
    assert_valid_ngff(out)
    v = open_volume(out)
    assert v.spacing == pytest.approx((10, 10, 10))
    assert v.translation == pytest.approx((1000, 2000, 3500))
    # A coarser voxel is centred on the block it averages: half a level-0 voxel further on.
    assert open_volume(out, level=1).translation == pytest.approx((1005, 2005, 3505))
    # A Volume carries its translation into the next export (TIFF drops it).
    again = write_volume(tmp_path / "again.ome.zarr", v)
    assert_valid_ngff(again)
    assert open_volume(again).translation == pytest.approx((1000, 2000, 3500))
    # Without translation, level 0 has none.
    plain = write_volume(tmp_path / "plain.ome.zarr", vol, spacing=(10, 10, 10))
    assert open_volume(plain).translation is None
    with pytest.raises(InputError, match="translation"):
        write_volume(tmp_path / "bad.ome.zarr", vol, spacing=(10, 10, 10), translation=(1, 2))


def test_volume_levels_default_replace_and_as_volume(tmp_path):
    data = da.zeros((4, 6, 8), dtype=np.uint8, chunks=2)
    v = Volume(data=data, spacing=(40, 4, 4), unit="nm", source=None)
    assert v.levels == (data,) and v.translation is None and v.factor == pytest.approx(10)
    coarse = da.zeros((4, 3, 4), dtype=np.uint8)
    v = Volume(data=data, spacing=(40, 4, 4), translation=(1, 2, 3), levels=(data, coarse))
    # A new level 0 of the same shape keeps the coarser levels; another shape drops them.
    same = dataclasses.replace(v, data=data + 1)
    assert same.levels[0] is same.data and same.levels[1] is coarse
    cropped = dataclasses.replace(v, data=data[:2])
    assert len(cropped.levels) == 1 and cropped.levels[0] is cropped.data
    # as_volume keeps levels and translation; a new voxel size in another length unit keeps them too.
    w = as_volume(v, spacing=(0.04, 0.004, 0.004), unit="um")
    assert w.spacing == pytest.approx((40, 4, 4)) and w.translation == (1, 2, 3) and w.levels[1] is coarse
    assert as_volume(v).levels[1] is coarse
    # A voxel size in pixels cannot place a translation given in nm.
    assert as_volume(v, spacing=(1, 1, 1), unit="pixel").translation is None


def test_interrupted_in_the_pyramid_resumes(tmp_path):
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 255, size=(12, 16, 16), dtype=np.uint8)
    out = tmp_path / "r.ome.zarr"
    seen = []

    def stop_in_pyramid(done, total):
        seen.append((done, total))
        if done == 4:  # the 3 level-0 blocks are written, the pyramid is under way
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, spacing=(4, 4, 4), chunks=(4, 8, 8), pyramid=3, progress=stop_in_pyramid)
    assert seen[-1][1] == 3 + 2 + 1  # level-0 blocks, then one block per chunk row of levels 1 and 2
    marker = json.loads((out / INCOMPLETE_MARKER).read_text())
    assert marker["done"] == [0, 1, 2] and marker["levels_done"] == []
    with pytest.raises(InputError, match="unfinished"):
        open_volume(out)

    again = []
    write_volume(out, vol, spacing=(4, 4, 4), chunks=(4, 8, 8), pyramid=3, progress=lambda d, t: again.append(d))
    assert again == [3, 4, 5, 6]  # level 0 was not written again (its 3 blocks reported at once)
    assert not (out / INCOMPLETE_MARKER).exists()
    assert_valid_ngff(out)
    v = open_volume(out)
    np.testing.assert_array_equal(v.data.compute(), vol)
    np.testing.assert_array_equal(v.levels[1].compute(), np.rint(_mean2(vol)).astype(np.uint8))
    # The same volume with another pyramid is not the export that was interrupted.
    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, chunks=(4, 8, 8), pyramid=3, progress=stop_in_pyramid, overwrite=True)
    with pytest.raises(Exception, match="different volume"):
        write_volume(out, vol, chunks=(4, 8, 8), pyramid=2)


def test_marker_is_there_before_zarr_writes_anything(tmp_path, monkeypatch):
    out = tmp_path / "m.ome.zarr"
    create_group = zarr.create_group
    checked = []

    def create_group_checked(store, *args, **kwargs):
        assert (out / INCOMPLETE_MARKER).exists()
        group = create_group(store, *args, **kwargs)
        assert (out / INCOMPLETE_MARKER).exists()  # zarr left it in place
        checked.append(True)
        return group

    monkeypatch.setattr(zarr, "create_group", create_group_checked)

    def marker_present(done, total):
        assert (out / INCOMPLETE_MARKER).exists()

    write_volume(out, np.ones((4, 8, 8), np.uint8), chunks=(2, 8, 8), pyramid=2, progress=marker_present)
    assert checked and not (out / INCOMPLETE_MARKER).exists()
    assert_valid_ngff(out)
