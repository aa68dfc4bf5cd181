"""Tests of napari_emsr.io: reading and writing TIFF, OME-TIFF, OME-Zarr and zarr volumes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from test_io_helpers import assert_valid_ngff

from napari_emsr.errors import InputError, OutputExistsError
from napari_emsr.io import (
    INCOMPLETE_MARKER,
    Volume,
    as_volume,
    check_volume,
    finite_check,
    open_volume,
    write_volume,
)

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "napari_emsr" / "data" / "medulla_gt_129x192x192.tif"


@pytest.fixture
def vol() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(12, 20, 24), dtype=np.uint8)


def test_bundled_sample_opens_lazily():
    v = open_volume(BUNDLED)
    assert isinstance(v, Volume)
    assert isinstance(v.data, da.Array)
    assert v.shape == (129, 192, 192)
    assert v.dtype == np.uint8
    assert v.spacing == pytest.approx((10.0, 10.0, 10.0))
    assert v.unit == "nm"
    assert v.factor == pytest.approx(1.0)
    # Chunks are single pages: one plane is computed without reading the rest.
    assert v.data.chunks[0][0] == 1
    assert v.data[5].compute().shape == (192, 192)
    # The lazy array can be pickled (sent to dask.distributed workers).
    again = pickle.loads(pickle.dumps(v.data))
    np.testing.assert_array_equal(again[7].compute(), v.data[7].compute())


def test_imagej_tiff_round_trip(tmp_path, vol):
    out = write_volume(tmp_path / "a.tif", vol, spacing=(50, 4, 4))
    assert out == tmp_path / "a.tif"
    assert not list(tmp_path.glob("*.emsr-partial-*"))
    with tifffile.TiffFile(out) as tf:
        assert tf.is_imagej
        assert tf.imagej_metadata["spacing"] == pytest.approx(50)
    v = open_volume(out)
    assert v.spacing == pytest.approx((50, 4, 4))
    assert v.factor == pytest.approx(12.5)
    assert v.source == str(out)
    np.testing.assert_array_equal(v.data.compute(), vol)


def test_imagej_micron_converted_to_nm(tmp_path, vol):
    p = tmp_path / "um.tif"
    tifffile.imwrite(p, vol, imagej=True, resolution=(1 / 0.004, 1 / 0.005),
                     metadata={"axes": "ZYX", "spacing": 0.05, "unit": "micron"})
    v = open_volume(p)
    assert v.unit == "nm"
    assert v.spacing == pytest.approx((50, 5, 4))


def test_tiff_from_volume_and_micron_argument(tmp_path, vol):
    out = write_volume(tmp_path / "b.tiff", as_volume(vol, spacing=(0.03, 0.01, 0.01), unit="um"))
    v = open_volume(out)
    assert v.spacing == pytest.approx((30, 10, 10))


def test_ome_tiff_physical_size(tmp_path, vol):
    p = tmp_path / "x.ome.tif"
    tifffile.imwrite(p, vol, metadata={"axes": "ZYX", "PhysicalSizeX": 0.004, "PhysicalSizeY": 0.004,
                                       "PhysicalSizeZ": 40, "PhysicalSizeZUnit": "nm"})
    v = open_volume(p)
    assert v.spacing == pytest.approx((40, 4, 4))
    assert v.unit == "nm"
    np.testing.assert_array_equal(v.data.compute(), vol)


def test_non_imagej_dtype_written_as_ome_tiff(tmp_path, vol):
    data = vol.astype(np.int16) - 100
    out = write_volume(tmp_path / "s.tif", data, spacing=(40, 8, 8))
    v = open_volume(out)
    assert v.dtype == np.int16
    assert v.spacing == pytest.approx((40, 8, 8))
    np.testing.assert_array_equal(v.data.compute(), data)


def test_plain_multipage_tiff(tmp_path, vol):
    p = tmp_path / "plain.tif"
    with tifffile.TiffWriter(p) as tw:
        for plane in vol:
            tw.write(plane, metadata=None)
    v = open_volume(p)
    assert v.spacing is None and v.factor is None
    assert v.shape == vol.shape
    np.testing.assert_array_equal(v.data.compute(), vol)


def test_imagej_channel_pick(tmp_path, vol):
    p = tmp_path / "c.tif"
    data = np.stack([vol, 255 - vol], axis=1)  # (z, c, y, x)
    tifffile.imwrite(p, data, imagej=True, metadata={"axes": "ZCYX", "spacing": 30, "unit": "nm"})
    with pytest.raises(InputError, match="channel"):
        open_volume(p)
    v = open_volume(p, channel=1)
    np.testing.assert_array_equal(v.data.compute(), 255 - vol)


def test_ome_zarr_round_trip(tmp_path, vol):
    out = write_volume(tmp_path / "a.ome.zarr", da.from_array(vol, chunks=(5, 20, 24)), spacing=(40, 4, 4),
                       chunks=(4, 16, 16))
    assert not (out / INCOMPLETE_MARKER).exists()
    assert_valid_ngff(out)
    attrs = json.loads((out / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "nanometer" for a in ms["axes"])
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [40, 4, 4]
    assert json.loads((out / "0" / ".zarray").read_text())["zarr_format"] == 2
    v = open_volume(out)
    assert v.spacing == pytest.approx((40, 4, 4))
    assert isinstance(v.data, da.Array)
    np.testing.assert_array_equal(v.data.compute(), vol)


def test_zarr_v3_plain_array(tmp_path, vol):
    p = tmp_path / "plain_v3.zarr"
    z = zarr.create_array(str(p), shape=vol.shape, chunks=(4, 10, 12), dtype=vol.dtype, zarr_format=3)
    z[:] = vol
    assert (p / "zarr.json").exists()  # a plain array, not an NGFF image: nothing for the NGFF model to check
    v = open_volume(p)
    assert v.spacing is None
    assert isinstance(v.data, da.Array)
    assert v.data.chunks[0][0] == 4
    np.testing.assert_array_equal(v.data.compute(), vol)


def test_zarr_v3_ome_zarr_with_tc_axes_and_micrometre(tmp_path, vol):
    p = tmp_path / "v3.ome.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    data = np.stack([vol, vol // 2])[None]  # (t=1, c=2, z, y, x)
    arr = g.create_array("s0", shape=data.shape, chunks=(1, 1, 4, 20, 24), dtype=data.dtype)
    arr[:] = data
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "axes": [
                {"name": "t", "type": "time"},
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [{"path": "s0", "coordinateTransformations": [
                {"type": "scale", "scale": [1, 1, 0.05, 0.005, 0.005]}]}],
        }],
    }
    assert_valid_ngff(p)
    with pytest.raises(InputError, match="channel"):
        open_volume(p)
    v = open_volume(p, channel=1)
    assert v.shape == vol.shape
    assert v.spacing == pytest.approx((50, 5, 5))
    assert v.unit == "nm"
    np.testing.assert_array_equal(v.data.compute(), vol // 2)
    with pytest.raises(InputError, match="level"):
        open_volume(p, channel=0, level=1)


def test_write_existing_raises(tmp_path, vol):
    write_volume(tmp_path / "a.tif", vol)
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_volume(tmp_path / "a.tif", vol)
    write_volume(tmp_path / "a.tif", vol[:, ::-1], overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / "a.tif").data.compute(), vol[:, ::-1])
    write_volume(tmp_path / "a.zarr", vol)
    assert_valid_ngff(tmp_path / "a.zarr")
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_volume(tmp_path / "a.zarr", vol)
    write_volume(tmp_path / "a.zarr", vol + 1, overwrite=True)
    assert_valid_ngff(tmp_path / "a.zarr")
    np.testing.assert_array_equal(open_volume(tmp_path / "a.zarr").data.compute(), vol + 1)


def test_overwrite_refuses_to_delete_a_non_zarr_folder(tmp_path, vol):
    folder = tmp_path / "precious.zarr"
    folder.mkdir()
    (folder / "thesis.txt").write_text("do not delete")
    with pytest.raises(InputError, match="refusing"):
        write_volume(folder, vol, overwrite=True)
    assert (folder / "thesis.txt").exists()


def test_zarr_resume_after_interrupt(tmp_path, vol):
    out = tmp_path / "r.ome.zarr"
    calls = []

    def interrupt_after_two(done, total):
        calls.append((done, total))
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, spacing=(40, 4, 4), chunks=(3, 20, 24), progress=interrupt_after_two)
    marker = json.loads((out / INCOMPLETE_MARKER).read_text())
    assert marker["done"] == [0, 1] and marker["total"] == 4
    with pytest.raises(InputError, match="unfinished"):
        open_volume(out)

    seen = []
    write_volume(out, vol, spacing=(40, 4, 4), chunks=(3, 20, 24), progress=lambda d, t: seen.append(d))
    assert seen == [2, 3, 4]  # the two finished blocks were skipped (reported at once, before the first block)
    assert not (out / INCOMPLETE_MARKER).exists()
    assert_valid_ngff(out)
    v = open_volume(out)
    np.testing.assert_array_equal(v.data.compute(), vol)
    assert v.spacing == pytest.approx((40, 4, 4))


def test_zarr_interrupted_different_volume_needs_overwrite(tmp_path, vol):
    out = tmp_path / "d.zarr"

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, chunks=(3, 20, 24), progress=stop)
    with pytest.raises(OutputExistsError):
        write_volume(out, vol[:6], chunks=(3, 20, 24))
    write_volume(out, vol[:6], chunks=(3, 20, 24), overwrite=True)
    assert_valid_ngff(out)
    np.testing.assert_array_equal(open_volume(out).data.compute(), vol[:6])


def test_tiff_interrupted_leaves_no_final_file(tmp_path, vol):
    big = da.from_array(np.concatenate([vol] * 4), chunks=(4, 20, 24))

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(tmp_path / "t.tif", big, progress=stop)
    assert not (tmp_path / "t.tif").exists()
    assert not list(tmp_path.glob("*.tif"))


def test_tiff_progress_and_blocks(tmp_path, vol):
    seen = []
    write_volume(tmp_path / "p.tif", da.from_array(vol, chunks=(5, 20, 24)), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (12, 12)


def test_unknown_files(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match="not a volume napari-emsr can read"):
        open_volume(txt)
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(InputError, match="not a volume"):
        open_volume(png)
    fake = tmp_path / "fake.tif"
    fake.write_text("not a tiff")
    with pytest.raises(InputError, match="not a volume"):
        open_volume(fake)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(InputError, match="not a volume"):
        open_volume(folder)
    with pytest.raises(InputError, match="does not exist"):
        open_volume(tmp_path / "missing.tif")
    with pytest.raises(InputError, match=r"\.tif"):
        write_volume(tmp_path / "out.png", np.zeros((4, 4, 4), np.uint8))


def test_2d_errors(tmp_path):
    with pytest.raises(InputError, match="2D image"):
        check_volume(np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match="2D image"):
        check_volume(np.zeros((1, 32, 32), np.uint8))
    p = tmp_path / "one.tif"
    tifffile.imwrite(p, np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match="2D image"):
        open_volume(p)


def test_rgb_errors(tmp_path):
    with pytest.raises(InputError, match="RGB"):
        check_volume(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="RGB"):
        check_volume(np.zeros((10, 64, 64, 3), np.uint8))
    picked = check_volume(np.arange(10 * 16 * 16 * 3).reshape(10, 16, 16, 3).astype(np.uint16), channel=2)
    assert picked.shape == (10, 16, 16)
    assert int(picked[0, 0, 0].compute()) == 2
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, np.zeros((6, 16, 16, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="RGB"):
        open_volume(p)
    assert open_volume(p, channel=0).shape == (6, 16, 16)


def test_4d_and_dtype_errors():
    with pytest.raises(InputError, match="channel"):
        check_volume(np.zeros((2, 8, 16, 16), np.uint8))
    out = check_volume(np.stack([np.zeros((8, 16, 16)), np.ones((8, 16, 16))]), channel=1)
    assert out.shape == (8, 16, 16) and float(out.max().compute()) == 1.0
    with pytest.raises(InputError, match="channel 5"):
        check_volume(np.zeros((2, 8, 16, 16)), channel=5)
    assert check_volume(np.zeros((1, 1, 8, 16, 16))).shape == (8, 16, 16)
    with pytest.raises(InputError):
        check_volume(np.zeros((2, 2, 8, 16, 16)))
    with pytest.raises(InputError, match="boolean"):
        check_volume(np.zeros((4, 8, 8), bool))
    with pytest.raises(InputError, match="complex"):
        check_volume(np.zeros((4, 8, 8), complex))
    with pytest.raises(InputError, match="numeric|objects"):
        check_volume(np.array([[["a"] * 4] * 4] * 4))
    with pytest.raises(InputError, match="shorter than 2"):
        check_volume(np.zeros((4, 1, 8)))


def test_as_volume_wraps_and_validates(vol):
    v = as_volume(vol, spacing=(40, 4, 4))
    assert isinstance(v.data, da.Array) and v.factor == pytest.approx(10)
    z = zarr.create_array(store={}, shape=vol.shape, dtype=vol.dtype, chunks=(4, 20, 24))
    z[:] = vol
    assert isinstance(as_volume(z).data, da.Array)
    with pytest.raises(InputError, match="voxel size"):
        as_volume(vol, spacing=(0, 4, 4))
    with pytest.raises(InputError, match="voxel size"):
        as_volume(vol, spacing=(4, 4))


def test_finite_check():
    good = np.zeros((20, 8, 8), np.float32)
    finite_check(good)
    finite_check(np.zeros((20, 8, 8), np.uint8))
    bad = good.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        finite_check(da.from_array(bad, chunks=(5, 8, 8)))
    bad = good.copy()
    bad[-1, 0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        finite_check(bad)


@pytest.mark.parametrize("name", ["cols.tif", "cols.zarr"])
def test_chunks_with_whole_z_columns_computed_once(tmp_path, vol, name):
    # A reconstruction computed in xz planes has chunks spanning all of z: each must be computed once.
    calls = []

    def count(block):
        if block.size:
            calls.append(block.shape)
        return block

    data = da.from_array(vol, chunks=(12, 4, 24)).map_blocks(count, dtype=vol.dtype)
    seen = []
    out = write_volume(tmp_path / name, data, spacing=(40, 4, 4), progress=lambda d, t: seen.append((d, t)))
    assert len(calls) == 5  # 20 rows in chunks of 4
    assert len(seen) >= 1 and seen[-1][0] == seen[-1][1]
    if name.endswith(".zarr"):
        assert_valid_ngff(out)
    np.testing.assert_array_equal(open_volume(out).data.compute(), vol)
