"""Issue 20, the inputs: NaN or inf in any plane stops the reconstruction naming the plane (the up-front check reads
8 planes only), and an input edited in place is never taken for the one a finished or unfinished export was made
from (the export's fingerprint sampled three central crops only).

Each test runs the real command line (a subprocess where its exit code, stderr or a SIGKILL is the point) on tiny
files: a float32 stack of 40 planes of 32 x 32 px, whose plane 3 the up-front sample does not read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from emsr_helpers import run_emsr as _emsr
from emsr_helpers import tree_digest as _digest
from emsr_helpers import write_tif as _tif

from napari_emsr import cli
from napari_emsr.io import open_volume, write_volume

BAD_PLANE = 3
TINY = ["--net", "rescnn", "--size", "tiny", "--patch", "24", "--batch", "2", "--device", "cpu", "-q"]


def _sampled_planes(n: int) -> set[int]:
    """The planes io.finite_check reads (its default sample of 8)."""
    return set(np.unique(np.linspace(0, n - 1, min(8, n)).round().astype(int)).tolist())


def _clean(seed: int = 1, shape=(40, 32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32) * 200


def _with(value: float, data: np.ndarray | None = None, plane: int = BAD_PLANE) -> np.ndarray:
    data = _clean() if data is None else data.copy()
    assert plane not in _sampled_planes(data.shape[0])  # the up-front check does not see it
    data[plane, 20, 11] = value
    return data


def _refused_naming_the_plane(r: subprocess.CompletedProcess, where: str = f"z plane {BAD_PLANE}") -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "NaN or infinite" in r.stderr and where in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def _not_finished(out: Path) -> None:
    """Nothing at ``out`` opens as a finished volume, and no file of ours is left beside it but a zarr store's
    unfinished state."""
    if out.exists():
        with pytest.raises(Exception, match="unfinished"):
            open_volume(out)
    left = [p.name for p in out.parent.iterdir() if p.name.startswith((out.name, "." + out.name)) and p != out]
    assert not [n for n in left if not n.endswith(".emsr-lock")], left


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    """A tiny isotropic model trained (2 steps) on a clean float32 stack (F = 4)."""
    d = tmp_path_factory.mktemp("float_model")
    tif = _tif(d / "clean.tif", _clean(0))
    model = d / "m.emsr.pt"
    assert cli.main(["train", str(tif), "-o", str(model), "--steps", "2", *TINY]) == 0
    return model


# ------------------------------------------------------------------------------------------------ NaN or inf
@pytest.mark.parametrize("value, name", [(np.nan, "o.tif"), (np.inf, "o.ome.zarr"), (-np.inf, "o.ome.zarr")])
def test_cubic_stops_at_a_nan_or_inf_in_a_plane_the_sample_misses(tmp_path, value, name):
    """Was: exit 0 and NaN in every output plane (or 0/255 once cast)."""
    tif = _tif(tmp_path / "bad.tif", _with(value))
    out = tmp_path / name
    _refused_naming_the_plane(_emsr("reconstruct", tif, "--method", "cubic", "-o", out, "-q"))
    _not_finished(out)


@pytest.mark.parametrize("fuse, name", [("xz,yz", "m.ome.zarr"), ("xz", "m.tif"), ("yz", "m.ome.zarr")])
def test_apply_of_a_model_stops_at_a_nan_in_a_plane_the_sample_misses(tmp_path, float_model, fuse, name):
    tif = _tif(tmp_path / "bad.tif", _with(np.nan))
    out = tmp_path / name
    _refused_naming_the_plane(_emsr("apply", tif, "--model", float_model, "--fuse", fuse, "-o", out,
                                    "--device", "cpu", "-q"))
    _not_finished(out)


def test_the_uncertainty_stops_at_a_nan_too(tmp_path, float_model):
    tif = _tif(tmp_path / "bad.tif", _with(np.nan))
    out, unc = tmp_path / "m.ome.zarr", tmp_path / "u.ome.zarr"
    r = _emsr("apply", tif, "--model", float_model, "-o", out, "--uncertainty", unc, "--device", "cpu", "-q")
    _refused_naming_the_plane(r)
    _not_finished(out)
    _not_finished(unc)


def test_the_plane_is_named_along_the_anisotropic_axis(tmp_path):
    data = np.ascontiguousarray(_with(np.nan).transpose(1, 2, 0))  # (32, 32, 40): the anisotropic axis is x
    src = tmp_path / "ax2.ome.zarr"
    write_volume(src, data, (10.0, 10.0, 40.0), pyramid=False)
    out = tmp_path / "o.ome.zarr"
    r = _emsr("reconstruct", src, "--method", "cubic", "--axis", "2", "-o", out, "-q")
    _refused_naming_the_plane(r, f"plane {BAD_PLANE} along axis 2")
    _not_finished(out)


def test_a_paired_model_stops_at_a_nan_in_a_plane_the_sample_misses(tmp_path):
    hr = _tif(tmp_path / "hr.tif", _clean(2, (4, 48, 48)), spacing=40.0)
    model = tmp_path / "p.emsr.pt"
    assert cli.main(["train", str(hr), "--method", "paired", "--recipe", "I", "--factor", "2", "-o", str(model),
                     "--steps", "2", "--net", "rescnn", "--size", "tiny", "--patch", "32", "--batch", "2",
                     "--device", "cpu", "-q"]) == 0
    lr = _tif(tmp_path / "lr.tif", _with(np.nan, _clean(3, (40, 24, 24))))
    out = tmp_path / "sr.ome.zarr"
    _refused_naming_the_plane(_emsr("apply", lr, "--model", model, "-o", out, "--device", "cpu", "-q"))
    _not_finished(out)


@pytest.mark.timeout(600)
def test_a_nan_stops_an_export_on_a_cluster_with_the_message_alone(tmp_path):
    pytest.importorskip("distributed")
    tif = _tif(tmp_path / "bad.tif", _with(np.nan))
    out = tmp_path / "o.ome.zarr"
    _refused_naming_the_plane(_emsr("reconstruct", tif, "--method", "cubic", "-o", out, "--scheduler", "local:1",
                                    "-q"))
    _not_finished(out)


def test_a_clean_float_stack_still_goes_through(tmp_path):
    tif = _tif(tmp_path / "ok.tif", _clean())
    out = tmp_path / "o.tif"
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(out), "-q"]) == 0
    assert np.isfinite(np.asarray(open_volume(out).data)).all()


# ------------------------------------------------------------------------------------------- edited in place
def _edit_tif_in_place(tif: Path, plane: int) -> None:
    """Change one plane of an uncompressed TIFF in place: same size, same name, other voxels."""
    before = tif.stat().st_size
    m = tifffile.memmap(tif, mode="r+")
    m[plane] = 255 - m[plane]
    m.flush()
    del m
    assert tif.stat().st_size == before


def _u8(seed: int = 5, shape=(9, 48, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def test_a_finished_export_of_an_input_edited_since_is_not_nothing_to_do(tmp_path, capsys):
    """Was: exit 0, "nothing to do", the output still the old input's reconstruction."""
    from napari_emsr.reconstruct import export

    tif = _tif(tmp_path / "s.tif", _u8())
    out = tmp_path / "s.ome.zarr"
    cmd = ["reconstruct", str(tif), "--method", "cubic", "--fuse", "xz", "-o", str(out), "-q"]
    assert cli.main(cmd) == 0
    before = _digest(out)
    _edit_tif_in_place(tif, 2)  # not a plane the fingerprint's sample reads (0, 4, 8)
    capsys.readouterr()
    assert cli.main(cmd) == 2
    err = capsys.readouterr().err
    assert "nothing to do" not in err and "something else" in err and "input file" in err and "--overwrite" in err
    assert _digest(out) == before
    assert cli.main([*cmd, "--overwrite"]) == 0
    fresh = export(open_volume(tif), "cubic", tmp_path / "fresh.ome.zarr", planes="xz")
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), np.asarray(open_volume(fresh).data))


def test_a_zarr_input_edited_in_place_is_noticed(tmp_path, capsys):
    import zarr

    src = tmp_path / "in.ome.zarr"
    write_volume(src, _u8(6), (40.0, 10.0, 10.0), pyramid=False)
    out = tmp_path / "o.ome.zarr"
    cmd = ["reconstruct", str(src), "--method", "cubic", "--fuse", "xz", "-o", str(out), "-q"]
    assert cli.main(cmd) == 0
    capsys.readouterr()
    assert cli.main(cmd) == 0 and "nothing to do" in capsys.readouterr().out  # untouched: nothing to do
    arr = zarr.open(str(src / "0"), mode="r+")
    arr[2] = 255 - arr[2]  # one plane outside the sampled ones, in place
    assert cli.main(cmd) == 2
    assert "input file" in capsys.readouterr().err


def test_input_stamp_sees_every_file_of_a_store_and_nothing_else(tmp_path):
    from napari_emsr.outputs import input_stamp

    src = tmp_path / "in.ome.zarr"
    write_volume(src, _u8(7), (40.0, 10.0, 10.0), pyramid=False)
    first = input_stamp(src)
    assert first and input_stamp(src) == first and input_stamp(str(src)) == first
    chunk = next(p for p in (src / "0").rglob("*") if p.is_file() and not p.name.startswith("."))
    st = chunk.stat()
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))  # rewritten, same size
    assert input_stamp(src) != first
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert input_stamp(src) == first
    meta = src / "0" / ".zarray"
    st = meta.stat()
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))  # the array's metadata rewritten
    assert input_stamp(src) != first
    assert input_stamp(None) == "" and input_stamp("s3://bucket/x.zarr") == ""


KILL_AFTER_ONE_BLOCK = """
import os, signal, sys
from napari_emsr.io import open_volume
from napari_emsr.reconstruct import export

def kill(done, total):
    if done >= 1:
        os.kill(os.getpid(), signal.SIGKILL)

export(open_volume(sys.argv[1]), "cubic", sys.argv[2], planes="xz", chunks=(8, 48), progress=kill)
"""


def test_a_killed_export_does_not_resume_into_an_input_edited_since(tmp_path, capsys):
    """SIGKILL after the first block, the input edited in place, the same command again: refused (was: resumed,
    half the old input's reconstruction and half the new one's, exit 0)."""
    from napari_emsr.io import INCOMPLETE_MARKER
    from napari_emsr.reconstruct import export

    tif = _tif(tmp_path / "k.tif", _u8(8))
    out = tmp_path / "k.ome.zarr"
    p = subprocess.run([sys.executable, "-c", KILL_AFTER_ONE_BLOCK, str(tif), str(out)], capture_output=True,
                       timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    assert (out / INCOMPLETE_MARKER).exists()
    before = _digest(out)
    _edit_tif_in_place(tif, 6)  # far from the centre plane (4) and the ends the fingerprint samples
    cmd = ["reconstruct", tif, "--method", "cubic", "--fuse", "xz", "-o", out, "-q"]
    r = _emsr(*cmd)
    assert r.returncode == 2 and "unfinished export" in r.stderr and "input file" in r.stderr, r.stderr[-2000:]
    assert "--overwrite" in r.stderr and "Traceback" not in r.stderr
    assert _digest(out) == before
    assert _emsr(*cmd, "--overwrite").returncode == 0
    fresh = export(open_volume(tif), "cubic", tmp_path / "fresh.ome.zarr", planes="xz")
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), np.asarray(open_volume(fresh).data))
