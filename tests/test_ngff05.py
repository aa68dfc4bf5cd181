"""NGFF 0.5 exports (zarr format 3, sharded): written by real `emsr` processes and by the Python writer, validated
with yaozarrs, read back equal to the NGFF 0.4 export of the same volume, opened in napari with their scale, used as
the input of `emsr apply`, and resumed after an interrupted write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from emsr_helpers import run_emsr, write_tif
from test_io_helpers import assert_valid_ngff

from napari_emsr.errors import InputError, OutputExistsError
from napari_emsr.io import INCOMPLETE_MARKER, open_volume, write_volume
from napari_emsr.io.omezarr import SHARD_BYTES, ngff_version, shard_shape


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def _levels(path: Path) -> list[np.ndarray]:
    return [np.asarray(level.compute()) for level in open_volume(path).levels]


def _meta(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory) -> dict:
    """`emsr reconstruct --method cubic` of one stack, written as NGFF 0.4 (the default) and as 0.5."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    stack = write_tif(folder / "in.tif", rng.integers(0, 255, (10, 300, 72), dtype=np.uint8))
    out = {"input": stack}
    for version, extra in (("0.4", ()), ("0.5", ("--ngff", "0.5"))):
        path = folder / f"iso{version}.ome.zarr"
        res = run_emsr("reconstruct", stack, "-o", path, "--method", "cubic", "--json", "-q", *extra)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout).get("ngff") == (version if extra else None)
        out[version] = path
    return out


def test_cli_ngff05_is_valid_sharded_v3_and_equal_to_the_04_output(cli_outputs):
    p4, p5 = cli_outputs["0.4"], cli_outputs["0.5"]
    assert_valid_ngff(p5)
    group = _meta(p5)
    assert group["zarr_format"] == 3 and group["node_type"] == "group"
    ome = group["attributes"]["ome"]
    assert ome["version"] == "0.5" and not (p5 / ".zattrs").exists()
    (ms,) = ome["multiscales"]
    assert [(ax["name"], ax["unit"]) for ax in ms["axes"]] == [("z", "nanometer"), ("y", "nanometer"),
                                                               ("x", "nanometer")]
    assert len(ms["datasets"]) == 2  # a pyramid: level 1 halves the 300 px axis
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [10.0, 10.0, 10.0]
    assert "fingerprint" in group["attributes"]["napari_emsr"]
    for level in ("0", "1"):
        meta = _meta(p5 / level)
        assert meta["zarr_format"] == 3 and meta["dimension_names"] == ["z", "y", "x"]
        (codec,) = meta["codecs"]
        assert codec["name"] == "sharding_indexed"
        inner = codec["configuration"]
        assert [c["name"] for c in inner["codecs"]] == ["bytes", "blosc"]
        assert inner["codecs"][1]["configuration"]["cname"] == "zstd"
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        assert all(s % c == 0 for s, c in zip(shard, inner["chunk_shape"]))
    assert len(_files(p5)) < len(_files(p4))
    a4, a5 = _levels(p4), _levels(p5)
    assert [a.shape for a in a4] == [a.shape for a in a5] == [(37, 300, 72), (19, 150, 36)]
    for x, y in zip(a4, a5):
        np.testing.assert_array_equal(x, y)
    v4, v5 = open_volume(p4), open_volume(p5)
    assert v5.spacing == pytest.approx(v4.spacing) and v5.spacing == pytest.approx((10.0, 10.0, 10.0))


def test_cli_refuses_a_finished_export_of_the_other_version_and_ngff_for_a_tiff(cli_outputs, tmp_path):
    res = run_emsr("reconstruct", cli_outputs["input"], "-o", cli_outputs["0.5"], "--method", "cubic", "-q")
    assert res.returncode != 0 and "NGFF 0.5, not 0.4" in res.stderr and "--overwrite" in res.stderr
    res = run_emsr("reconstruct", cli_outputs["input"], "-o", cli_outputs["0.5"], "--method", "cubic", "-q",
                   "--ngff", "0.5")
    assert res.returncode == 0 and "nothing to do" in res.stdout + res.stderr
    res = run_emsr("reconstruct", cli_outputs["input"], "-o", tmp_path / "x.tif", "--method", "cubic", "--ngff", "0.5")
    assert res.returncode != 0 and "TIFF" in res.stderr and not (tmp_path / "x.tif").exists()
    res = run_emsr("apply", cli_outputs["input"], "--model", "cubic", "-o", tmp_path / "x.zarr", "--ngff", "0.6")
    assert res.returncode == 2 and "--ngff" in res.stderr and not (tmp_path / "x.zarr").exists()


def test_apply_takes_an_ngff05_output_as_its_input(cli_outputs, tmp_path):
    """`emsr apply` reads a sharded 0.5 store as it reads the 0.4 one (the CLI's input side)."""
    results = []
    for version in ("0.4", "0.5"):
        out = tmp_path / f"again{version}.ome.zarr"
        res = run_emsr("apply", cli_outputs[version], "--model", "cubic", "--factor", "2", "-o", out, "-q",
                       "--ngff", "0.5")
        assert res.returncode == 0, res.stderr
        assert_valid_ngff(out)
        results.append(_levels(out))
    assert results[0][0].shape == (73, 300, 72)
    for x, y in zip(*results):
        np.testing.assert_array_equal(x, y)


@pytest.mark.gui
def test_napari_opens_an_ngff05_export_with_its_scale(make_napari_viewer, cli_outputs):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(cli_outputs["0.5"]), plugin="napari-emsr")
    assert layer.multiscale and [d.shape for d in layer.data] == [(37, 300, 72), (19, 150, 36)]
    np.testing.assert_allclose(layer.scale, (10, 10, 10))
    np.testing.assert_array_equal(np.asarray(layer.data[0][20]), _levels(cli_outputs["0.4"])[0][20])


# ---------------------------------------------------------------------------------------- the Python writer
@pytest.fixture
def vol() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 60000, size=(24, 130, 300), dtype=np.uint16)


KW = {"spacing": (40.0, 10.0, 10.0), "chunks": (4, 32, 32)}


def test_writer_ngff05_has_far_fewer_files_and_the_same_data(tmp_path, vol):
    p4 = write_volume(tmp_path / "a4.ome.zarr", vol, **KW)  # the default stays 0.4
    p5 = write_volume(tmp_path / "a5.ome.zarr", vol, ngff="0.5", **KW)
    assert (p4 / ".zattrs").exists() and not (p4 / "zarr.json").exists()
    assert_valid_ngff(p4)
    assert_valid_ngff(p5)
    n4, n5 = len(_files(p4)), len(_files(p5))
    assert n5 * 10 < n4, (n4, n5)  # 6 x 5 x 10 chunks per level-0 row; one shard per row
    for x, y in zip(_levels(p4), _levels(p5)):
        np.testing.assert_array_equal(x, y)
    assert open_volume(p5).data.chunksize == (4, 32, 32)  # readers fetch chunks, not shards


def test_writer_ngff_version_context_and_bad_values(tmp_path, vol):
    with ngff_version("0.5"):
        p = write_volume(tmp_path / "ctx.ome.zarr", vol, **KW)
    assert _meta(p)["attributes"]["ome"]["version"] == "0.5"
    assert (write_volume(tmp_path / "after.zarr", vol, **KW) / ".zattrs").exists()  # back to 0.4 outside
    for bad in ("0.6", "zarr3", 5):
        with pytest.raises(InputError, match="'0.4'.*'0.5'"):
            write_volume(tmp_path / "bad.zarr", vol, ngff=bad, **KW)
    assert not (tmp_path / "bad.zarr").exists()
    with pytest.raises(InputError, match="TIFF"):
        write_volume(tmp_path / "t.tif", vol, ngff="0.5")
    with pytest.raises(InputError):
        with ngff_version("1.0"):
            pass


def test_shard_shape_whole_chunks_one_thick_along_the_blocks_within_budget():
    assert shard_shape((24, 130, 300), (4, 32, 32), 0, 2) == (4, 160, 320)  # the whole lateral extent
    sh = shard_shape((10_000, 20_000, 20_000), (64, 256, 256), 0, 1)
    assert sh[0] == 64 and sh[1] % 256 == 0 and sh[2] % 256 == 0
    assert SHARD_BYTES // 2 < np.prod(sh) <= SHARD_BYTES
    sh = shard_shape((4000, 20_000, 20_000), (4000, 32, 32), 1, 1)  # whole z columns, blocks along y
    assert sh[:2] == (4000, 32) and sh[2] % 32 == 0 and np.prod(sh) <= SHARD_BYTES
    assert shard_shape((64, 1024, 1024), (64, 1024, 1024), 0, 4) == (64, 1024, 1024)  # a chunk over the budget


# ---------------------------------------------------------------------------------------------- resume
def test_interrupted_ngff05_export_resumes_over_a_torn_shard(tmp_path, vol):
    out = tmp_path / "r.ome.zarr"
    seen = []

    def stop_after_two(done, total):
        seen.append((done, total))
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, ngff="0.5", progress=stop_after_two, **KW)
    marker = json.loads((out / INCOMPLETE_MARKER).read_text())
    assert marker["ngff"] == "0.5" and marker["done"] == [0, 1] and marker["shards"][0] == [4, 160, 320]
    with pytest.raises(InputError, match="unfinished"):
        open_volume(out)
    # A shard of a block that was not finished, torn (as by a power cut): the resume must not read it.
    torn = out / "0" / "c" / "2" / "0" / "0"
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"torn shard")
    with pytest.raises(OutputExistsError, match=r"NGFF 0\.5 export.*--ngff 0\.5"):
        write_volume(out, vol, **KW)  # asks for 0.4: refused, nothing changed
    assert torn.read_bytes() == b"torn shard"

    counts = []
    write_volume(out, vol, ngff="0.5", progress=lambda d, t: counts.append(d), **KW)
    assert counts[0] == 2 and counts[-1] == seen[0][1]  # the two finished blocks are not written again
    assert not (out / INCOMPLETE_MARKER).exists()
    assert not [p for p in _files(out) if p.name.endswith(".partial")]
    assert_valid_ngff(out)
    whole = write_volume(tmp_path / "whole.ome.zarr", vol, **KW)
    for x, y in zip(_levels(whole), _levels(out)):
        np.testing.assert_array_equal(x, y)


def test_interrupted_in_the_pyramid_resumes(tmp_path, vol):
    out = tmp_path / "p.ome.zarr"
    blocks = -(-vol.shape[0] // KW["chunks"][0])

    def stop_in_pyramid(done, total):
        if done == blocks + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, ngff="0.5", progress=stop_in_pyramid, **KW)
    marker = json.loads((out / INCOMPLETE_MARKER).read_text())
    assert len(marker["done"]) == blocks and marker["levels_done"] == []
    write_volume(out, vol, ngff="0.5", **KW)
    assert_valid_ngff(out)
    levels = _levels(out)
    assert len(levels) == 2
    np.testing.assert_array_equal(levels[0], vol)
    for x, y in zip(_levels(write_volume(tmp_path / "w.ome.zarr", vol, **KW)), levels):
        np.testing.assert_array_equal(x, y)


def test_overwrite_replaces_a_04_store_with_05(tmp_path, vol):
    out = write_volume(tmp_path / "o.ome.zarr", vol, **KW)
    with pytest.raises(OutputExistsError):
        write_volume(out, vol, ngff="0.5", **KW)
    write_volume(out, vol, ngff="0.5", overwrite=True, **KW)
    assert not (out / ".zattrs").exists() and _meta(out)["zarr_format"] == 3
    assert not [n for n in os.listdir(out / "0") if n not in ("zarr.json", "c")]
    assert_valid_ngff(out)


def test_a_damaged_shard_is_named_when_read(tmp_path, vol):
    out = write_volume(tmp_path / "d.ome.zarr", vol, ngff="0.5", pyramid=False, **KW)
    shard = out / "0" / "c" / "3" / "0" / "0"  # z 12..16, the whole plane
    shard.write_bytes(shard.read_bytes()[:-40])  # cut short: the shard index is gone
    v = open_volume(out)
    np.testing.assert_array_equal(v.data[:12].compute(), vol[:12])  # the other shards read as before
    with pytest.raises(InputError, match=r"'c/3/0/0'.*damaged"):
        v.data[13, 100:, 200:].compute()  # its first chunk (3, 3, 6) lies in shard (3, 0, 0)
