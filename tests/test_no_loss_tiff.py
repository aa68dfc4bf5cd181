"""Nothing lost with TIFF files, whatever runs beside them (issue 20): temporary names no user file can have,
one writer at a time, unfinished writes never read as volumes, the right series of a multi-series file, and
messages instead of tracebacks or hangs for odd files and paths.

The commands run as real ``emsr`` processes (``python -m napari_emsr.cli``), killed with real signals.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from emsr_helpers import run_emsr as _emsr
from emsr_helpers import tree_digest as _digest
from emsr_helpers import write_tif as _tif

from napari_emsr.errors import InputError, OutputExistsError
from napari_emsr.io import open_volume, write_volume


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "napari_emsr.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.emsr-partial-*"))


def _cubic(src: Path, out: Path, method: str = "cubic") -> np.ndarray:
    """The expected result of `emsr reconstruct src --method <method>`, computed in this process."""
    from napari_emsr import cli

    assert cli.main(["reconstruct", str(src), "--method", method, "-o", str(out), "-q"]) == 0
    return np.asarray(open_volume(out).data)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A stack and a model trained on it for a few steps (what `apply` needs; its quality does not matter)."""
    from napari_emsr.io import as_volume
    from napari_emsr.train import TrainConfig, train

    d = tmp_path_factory.mktemp("model")
    data = _noise((9, 48, 48), seed=3)
    stack = _tif(d / "x.tif", data)
    model = train(as_volume(data, spacing=(40.0, 10.0, 10.0)),
                  TrainConfig(steps=2, net="rescnn", size="tiny", patch=24, batch=4, device="cpu", val_every=5,
                              preview_every=0))
    model.save(d / "m.emsr.pt")
    return stack, d / "m.emsr.pt"


# ---- 1. temporary names ----------------------------------------------------------------------------------


def test_an_input_named_like_a_temporary_file_is_kept(tmp_path):
    """Before: `emsr reconstruct a.partial.tif -o a.tif` wrote into its own input (the fixed temporary name
    a.partial.tif), renamed it to a.tif and exited 0: the input gone, a.tif all zeros."""
    data = _noise((9, 48, 48))
    src = _tif(tmp_path / "a.partial.tif", data)
    before = _digest(src)
    expected = _cubic(_tif(tmp_path / "ref_in.tif", data), tmp_path / "ref.tif")
    got = _emsr("reconstruct", src, "--method", "cubic", "-o", tmp_path / "a.tif", "-q")
    assert got.returncode == 0, got.stderr
    assert src.exists() and _digest(src) == before
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "a.tif").data), expected)
    assert expected.any() and not _temporaries(tmp_path)


def test_two_outputs_whose_old_temporary_names_collide_are_both_written(tmp_path):
    """Before: writing o.tif went through the temporary o.partial.tif, replacing an output of that name."""
    first, second = _noise((6, 32, 32), seed=1), _noise((6, 32, 32), seed=2)
    write_volume(tmp_path / "o.partial.tif", first, spacing=(40, 10, 10))
    write_volume(tmp_path / "o.tif", second, spacing=(40, 10, 10))
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "o.partial.tif").data), first)
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "o.tif").data), second)
    assert not _temporaries(tmp_path)


def test_the_uncertainty_beside_an_output_named_like_a_temporary_file_keeps_both(small_model, tmp_path):
    """Before: `emsr apply ... -o o.partial.tif --uncertainty o.tif` left only the uncertainty map."""
    stack, model = small_model
    got = _emsr("apply", stack, "--model", model, "-o", tmp_path / "o.partial.tif", "--uncertainty",
                tmp_path / "o.tif", "--device", "cpu", "-q")
    assert got.returncode == 0, got.stderr
    fused, gap = open_volume(tmp_path / "o.partial.tif"), open_volume(tmp_path / "o.tif")
    assert fused.shape == gap.shape
    assert not np.array_equal(np.asarray(fused.data), np.asarray(gap.data))


def test_a_model_named_like_the_temporary_file_of_the_output_is_kept(small_model, tmp_path):
    """Before: `emsr apply in.tif --model mm.partial.tif -o mm.tif` deleted the model."""
    stack, model = small_model
    named = tmp_path / "mm.partial.tif"
    named.write_bytes(model.read_bytes())
    before = _digest(named)
    got = _emsr("apply", stack, "--model", named, "-o", tmp_path / "mm.tif", "--device", "cpu", "-q")
    assert got.returncode == 0, got.stderr
    assert named.exists() and _digest(named) == before
    assert open_volume(tmp_path / "mm.tif").shape[0] > 9


def test_a_written_tiff_has_the_permissions_of_a_new_file(tmp_path):
    """The temporary file is created private (mkstemp); the finished TIFF must not stay so."""
    mask = os.umask(0o022)
    try:
        out = write_volume(tmp_path / "p.tif", _noise((4, 16, 16)))
    finally:
        os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o644


# ---- 2. one writer at a time -----------------------------------------------------------------------------


def test_a_second_writer_of_a_tiff_is_refused_naming_the_first(tmp_path):
    """While another process writes d.tif (here: this one, holding its lock), `emsr reconstruct -o d.tif` is refused
    with exit 2, naming that process, and writes nothing. Before: both wrote the same file."""
    from napari_emsr.io.safety import output_lock

    src = _tif(tmp_path / "in.tif", _noise((9, 48, 48)))
    out = tmp_path / "d.tif"
    with output_lock(out):
        got = _emsr("reconstruct", src, "--method", "cubic", "-o", out, "-q")
    assert got.returncode == 2, got.stderr
    assert "Traceback" not in got.stderr
    assert "being written by another process" in got.stderr and f"process {os.getpid()}" in got.stderr, got.stderr
    assert not out.exists() and not _temporaries(tmp_path)
    # the lock is gone with its holder: the same command now runs
    assert _emsr("reconstruct", src, "--method", "cubic", "-o", out, "-q").returncode == 0
    assert open_volume(out).shape == (33, 48, 48)


def test_two_writers_started_together_never_leave_a_corrupt_or_mixed_tiff(tmp_path):
    """Two `emsr reconstruct -o d.tif --overwrite` (cubic and linear) at once: each exits 0 or 2 (with a message);
    the file is exactly the result of one that exited 0. Before: a corrupt file, or one run's volume under the
    other's success, or SIGBUS."""
    data = _noise((32, 384, 384), seed=5)
    src = _tif(tmp_path / "in.tif", data)
    expected = {m: _cubic(src, tmp_path / f"ref_{m}.tif", m) for m in ("cubic", "linear")}
    assert not np.array_equal(expected["cubic"], expected["linear"])
    out = tmp_path / "d.tif"
    for _ in range(2):
        procs = {m: _start("reconstruct", src, "--method", m, "-o", out, "--overwrite", "-q")
                 for m in ("cubic", "linear")}
        done = {m: (p.wait(timeout=300), p.stderr.read()) for m, p in procs.items()}
        for m, (rc, err) in done.items():
            assert rc in (0, 2), (m, rc, err)
            assert "Traceback" not in err, err
            if rc == 2:
                assert "being written by another process" in err, err
        winners = [m for m, (rc, _) in done.items() if rc == 0]
        assert winners
        got = np.asarray(open_volume(out).data)
        assert any(np.array_equal(got, expected[m]) for m in winners)
        assert not _temporaries(tmp_path)


# ---- 8. a killed TIFF export -----------------------------------------------------------------------------


def test_a_killed_tiff_export_keeps_the_old_file_and_its_leftover_is_refused(tmp_path):
    """SIGKILL in the middle of `emsr reconstruct -o d.tif --overwrite`: d.tif is still the old, complete file;
    the temporary file left behind is refused by open_volume and the napari reader (before: d.partial.tif opened
    as a finished volume of zeros); the same command then runs (the lock died with the process), its result
    replaces d.tif and the leftover is removed."""
    from napari_emsr.plugin._reader import napari_get_reader

    src = _tif(tmp_path / "in.tif", _noise((40, 512, 512), seed=6))
    out = tmp_path / "d.tif"
    write_volume(out, _noise((5, 8, 8), seed=7), spacing=(40, 10, 10))
    before = _digest(out)
    cmd = ("reconstruct", src, "--method", "cubic", "-o", out, "--overwrite", "-q")
    proc = _start(*cmd)
    deadline = time.monotonic() + 120
    leftover = []
    while time.monotonic() < deadline and proc.poll() is None:  # until the data is being written
        try:
            leftover = [p for p in _temporaries(tmp_path) if p.stat().st_size > 0]
        except FileNotFoundError:  # renamed onto d.tif between the listing and the look: finished
            leftover = []
        if leftover:
            break
        time.sleep(0.02)
    assert proc.poll() is None and leftover, "the export was not caught writing its TIFF: make the input larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert _digest(out) == before
    (leftover,) = _temporaries(tmp_path)
    with pytest.raises(InputError, match="unfinished write.*killed"):
        open_volume(leftover)
    reader = napari_get_reader(str(leftover))
    assert reader is not None, "the reader must claim the file to refuse it (another would show it as a volume)"
    with pytest.raises(InputError, match="unfinished write"):
        reader(str(leftover))
    got = _emsr(*cmd)
    assert got.returncode == 0, got.stderr
    assert open_volume(out).shape == (157, 512, 512) and not _temporaries(tmp_path)


# ---- 3. multi-series TIFFs -------------------------------------------------------------------------------


def _two_series(path: Path, first: np.ndarray, second: np.ndarray) -> Path:
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(first, metadata={"axes": "ZYX" if first.ndim == 3 else "YX", "PhysicalSizeX": 5.0,
                                  "PhysicalSizeY": 5.0, "PhysicalSizeZ": 5.0})
        tw.write(second, metadata={"axes": "ZYX", "PhysicalSizeX": 0.01, "PhysicalSizeY": 0.01,
                                   "PhysicalSizeZ": 0.04})
    return path


def test_the_largest_3d_series_is_read_and_said(tmp_path, caplog):
    """Before: an OME-TIFF with a 4 x 16 x 16 thumbnail first was read as the thumbnail."""
    import pickle

    thumb, stack = _noise((4, 16, 16), seed=8), _noise((32, 96, 96), seed=9)
    path = _two_series(tmp_path / "two.ome.tif", thumb, stack)
    with caplog.at_level(logging.WARNING):
        vol = open_volume(path)
    assert vol.shape == (32, 96, 96)
    assert vol.spacing == pytest.approx((40.0, 10.0, 10.0))  # the OME image of that series, not image 0
    np.testing.assert_array_equal(np.asarray(vol.data[7]), stack[7])  # the lazy reader reads that series
    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(vol.data))), stack)
    assert "2 image series" in caplog.text and "reading series 1 (32 x 96 x 96)" in caplog.text
    assert "--series N" in caplog.text
    small = open_volume(path, series=0)
    assert small.shape == (4, 16, 16) and small.spacing == pytest.approx((5000.0,) * 3)
    np.testing.assert_array_equal(np.asarray(small.data), thumb)
    with pytest.raises(InputError, match=r"2 image series; series 2 does not exist.*0 \(4 x 16 x 16\), "
                                         r"1 \(32 x 96 x 96\)"):
        open_volume(path, series=2)
    for bad in (-1, "1", 1.5):
        with pytest.raises(InputError, match="series"):
            open_volume(path, series=bad)


def test_a_2d_thumbnail_first_does_not_make_the_file_2d(tmp_path):
    """Before: a 2D thumbnail first made the whole file "a single 2D image"."""
    stack = _noise((32, 96, 96), seed=10)
    path = _two_series(tmp_path / "thumb.ome.tif", _noise((16, 16), seed=11), stack)
    np.testing.assert_array_equal(np.asarray(open_volume(path).data), stack)
    with pytest.raises(InputError, match=r"thumb.ome.tif, series 0 \(16 x 16\): a single 2D image"):
        open_volume(path, series=0)


def test_the_cli_reconstructs_the_stack_not_the_thumbnail(tmp_path):
    path = _two_series(tmp_path / "two.ome.tif", _noise((4, 16, 16), seed=12), _noise((32, 96, 96), seed=13))
    got = _emsr("reconstruct", path, "--method", "cubic", "-o", tmp_path / "iso.tif")
    assert got.returncode == 0, got.stderr
    assert "reading series 1" in got.stderr
    assert open_volume(tmp_path / "iso.tif").shape == (125, 96, 96)


def test_the_napari_reader_gives_one_layer_per_3d_series_the_largest_shown(tmp_path):
    from napari_emsr.plugin._reader import napari_get_reader

    thumb, stack = _noise((4, 16, 16), seed=14), _noise((32, 96, 96), seed=15)
    path = _two_series(tmp_path / "two.ome.tif", thumb, stack)
    layers = napari_get_reader(str(path))(str(path))
    by_name = {kw["name"]: (data, kw) for data, kw, kind in layers}
    assert set(by_name) == {"two [series 0]", "two [series 1]"}
    data, kw = by_name["two [series 1]"]
    assert kw["visible"] and kw["metadata"]["series"] == 1 and tuple(kw["scale"]) == pytest.approx((40, 10, 10))
    np.testing.assert_array_equal(np.asarray(data), stack)
    data, kw = by_name["two [series 0]"]
    assert not kw["visible"] and data.shape == (4, 16, 16)
    assert layers[-1][1]["name"] == "two [series 1]"  # added last: the selected layer
    # a 2D thumbnail is no layer; the stack is still named by its series
    flat = _two_series(tmp_path / "flat.ome.tif", _noise((16, 16), seed=16), stack)
    ((data, kw, _),) = napari_get_reader(str(flat))(str(flat))
    assert kw["name"] == "flat [series 1]" and data.shape == (32, 96, 96)


# ---- odd files and paths: messages, not tracebacks or hangs ----------------------------------------------


def test_a_bilevel_tiff_is_read_as_zeros_and_ones(tmp_path):
    """Before: a valid 1-bit TIFF was called "damaged" (its size was counted in bytes per pixel)."""
    mask = np.random.default_rng(17).random((6, 32, 40)) > 0.5
    tifffile.imwrite(tmp_path / "bits.tif", mask)
    with tifffile.TiffFile(tmp_path / "bits.tif") as tf:
        assert tf.pages[0].bitspersample == 1
    vol = open_volume(tmp_path / "bits.tif")
    assert vol.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(vol.data), mask.astype(np.uint8))


def test_info_on_a_fifo_is_refused_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    got = _emsr("info", fifo, timeout=60)  # before: waited forever for a writer
    assert got.returncode == 2 and "Traceback" not in got.stderr
    assert "not a regular file or folder" in got.stderr, got.stderr


def test_a_voxel_size_imagej_cannot_hold_is_kept_in_an_ome_tiff(tmp_path):
    """Before: an OME-TIFF with a 1e-300 um lateral voxel size and --factor 4 ended in a traceback at the TIFF
    write (ImageJ's resolution 1 / size does not fit a TIFF rational)."""
    src = tmp_path / "tiny.ome.tif"
    tifffile.imwrite(src, _noise((8, 32, 32), seed=18), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 1e-300, "PhysicalSizeY": 1e-300,
                               "PhysicalSizeZ": 4e-300})
    out = tmp_path / "out.tif"
    got = _emsr("reconstruct", src, "--method", "cubic", "--factor", "4", "-o", out)
    assert got.returncode == 0, got.stderr
    assert "writing an OME-TIFF" in got.stderr
    vol = open_volume(out)
    assert vol.shape == (29, 32, 32)
    assert vol.spacing == pytest.approx((1e-297,) * 3, rel=1e-6)


def _computed_nothing():
    import dask.array as da

    computed = []

    def look(block):
        computed.append(block.shape)
        return block

    arr = da.zeros((4, 16, 16), dtype=np.uint8, chunks=(2, 16, 16)).map_blocks(
        look, meta=np.empty((0, 0, 0), np.uint8))
    return arr, computed


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, suffix):
    arr, computed = _computed_nothing()
    with pytest.raises(InputError, match="bytes; file systems allow at most 255"):
        write_volume(tmp_path / ("n" * 300 + suffix), arr)
    with pytest.raises((InputError, OutputExistsError, OSError), match="proc|cannot|not"):
        write_volume(Path("/proc") / f"x{suffix}", arr)
    assert not computed


def test_the_cli_refuses_an_output_in_proc_with_a_message(tmp_path):
    src = _tif(tmp_path / "in.tif", _noise((9, 48, 48)))
    got = _emsr("reconstruct", src, "--method", "cubic", "-o", "/proc/x.tif", "-q")
    assert got.returncode == 2, got.stderr
    assert "Traceback" not in got.stderr and "emsr reconstruct: error:" in got.stderr, got.stderr
