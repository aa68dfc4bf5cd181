"""Tests of napari_emsr.io against data loss: resume only of the same export, the marker through every moment of
a zarr export (real kills included), a full disk and a file-size limit, read-only folders, float16 TIFFs, and
TIFFs whose compression needs a codec that is not installed.

Full disks and read-only folders are real: a small tmpfs (or one mounted read-only) in a private mount
namespace (``unshare -m``, needs root), a file-size limit (``RLIMIT_FSIZE``) in a subprocess, and an
unprivileged user (``setpriv``); the tests that need them are skipped where they are not available.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from emsr_helpers import private_tmpfs_works as _private_tmpfs_works
from test_io_helpers import assert_valid_ngff

from napari_emsr.errors import EMSRError, InputError, OutputExistsError
from napari_emsr.io import INCOMPLETE_MARKER, OutputError, open_volume, write_volume

FP = {"input": "/data/a.tif", "method": "cubic", "model": "", "planes": "fuse"}


@pytest.fixture
def vol() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, size=(12, 20, 24), dtype=np.uint8)


def _interrupt_after(n: int):
    def progress(done, total):
        if done == n:
            raise KeyboardInterrupt

    return progress


def _run(script: str, *args: str, prefix: list[str] | None = None, preexec=None) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh Python (this interpreter) and return the finished process."""
    cmd = [*(prefix or []), sys.executable, "-c", textwrap.dedent(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- 1. resume only of the same export ---------------------------------------------------------------


def test_resume_refuses_another_method_or_input(tmp_path, vol):
    out = tmp_path / "r.ome.zarr"
    kw = dict(spacing=(40, 4, 4), chunks=(3, 20, 24))
    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, **kw, fingerprint=FP, progress=_interrupt_after(2))
    marker = json.loads((out / INCOMPLETE_MARKER).read_text())
    assert marker["fingerprint"] == FP and marker["done"] == [0, 1]

    other = dict(FP, method="linear", input="/data/b.tif")
    with pytest.raises(OutputExistsError) as err:
        write_volume(out, vol[::-1].copy(), **kw, fingerprint=other)
    msg = str(err.value)
    for text in ("method: 'cubic' before, 'linear' now", "input: '/data/a.tif' before, '/data/b.tif' now",
                 "overwrite=True", "--overwrite", "re-run exactly the earlier command"):
        assert text in msg, msg
    assert "planes" not in msg  # only the keys that differ are named
    with pytest.raises(OutputExistsError, match="gives no fingerprint"):
        write_volume(out, vol, **kw)
    with pytest.raises(OutputExistsError, match=r"extra: '\(none\)' before, 'x' now"):
        write_volume(out, vol, **kw, fingerprint=dict(FP, extra="x"))
    # Nothing was written by the refused calls.
    assert json.loads((out / INCOMPLETE_MARKER).read_text())["done"] == [0, 1]

    seen = []
    write_volume(out, vol, **kw, fingerprint=dict(FP), progress=lambda d, t: seen.append(d))
    assert seen == [2, 3, 4]  # what is already done (the total with it) before the first block, then the rest
    assert not (out / INCOMPLETE_MARKER).exists()
    np.testing.assert_array_equal(open_volume(out).data.compute(), vol)
    assert dict(zarr.open_group(str(out), mode="r").attrs)["napari_emsr"] == {"fingerprint": FP}
    assert_valid_ngff(out)

    # overwrite starts again with the new fingerprint, recorded in place of the old one.
    write_volume(out, vol[::-1].copy(), **kw, fingerprint=other, overwrite=True)
    assert dict(zarr.open_group(str(out), mode="r").attrs)["napari_emsr"] == {"fingerprint": other}
    np.testing.assert_array_equal(open_volume(out).data.compute(), vol[::-1])
    assert_valid_ngff(out)


def test_resume_refuses_a_fingerprint_the_earlier_export_had_not(tmp_path, vol):
    out = tmp_path / "r.zarr"
    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, chunks=(3, 20, 24), progress=_interrupt_after(1))
    with pytest.raises(OutputExistsError, match="written without a fingerprint"):
        write_volume(out, vol, chunks=(3, 20, 24), fingerprint=FP)
    write_volume(out, vol, chunks=(3, 20, 24))  # the same call as before resumes
    assert "napari_emsr" not in dict(zarr.open_group(str(out), mode="r").attrs)
    assert_valid_ngff(out)


def test_fingerprint_is_strings(tmp_path, vol):
    for bad in ({"model": 3}, {1: "a"}, ["method", "cubic"]):
        with pytest.raises(InputError, match="fingerprint"):
            write_volume(tmp_path / "f.zarr", vol, fingerprint=bad)
    assert not (tmp_path / "f.zarr").exists()
    # A TIFF has no resume: the fingerprint is accepted and not stored.
    write_volume(tmp_path / "f.tif", vol, fingerprint=FP)
    np.testing.assert_array_equal(open_volume(tmp_path / "f.tif").data.compute(), vol)


# ---- 2. the marker from the first byte to the last chunk ---------------------------------------------------


def test_marker_is_there_before_the_first_block(tmp_path, vol):
    out = tmp_path / "m.ome.zarr"
    calls = []

    def fail_first(block):
        calls.append(block.shape)
        raise RuntimeError("computation failed")

    # A real failure in computing the first block: the store and its arrays exist, no chunk is written yet.
    failing = da.from_array(vol, chunks=(3, 20, 24)).map_blocks(fail_first, meta=np.empty((0, 0, 0), vol.dtype))
    with pytest.raises(RuntimeError, match="computation failed"):
        write_volume(out, failing, spacing=(40, 4, 4), chunks=(3, 20, 24), pyramid=2)
    assert calls
    marker = json.loads((out / INCOMPLETE_MARKER).read_text())
    assert marker["done"] == [] and marker["levels_done"] == []
    assert (out / ".zgroup").is_file() and (out / "0" / ".zarray").is_file()
    assert not list((out / "0").glob("[0-9]*"))  # no chunk written
    with pytest.raises(InputError, match="unfinished export"):
        open_volume(out)
    with pytest.raises(InputError, match="unfinished export"):
        open_volume(out / ".zattrs")

    # Interrupted after the first block: still unfinished.
    with pytest.raises(KeyboardInterrupt):
        write_volume(out, vol, spacing=(40, 4, 4), chunks=(3, 20, 24), pyramid=2, progress=_interrupt_after(1))
    assert json.loads((out / INCOMPLETE_MARKER).read_text())["done"] == [0]
    with pytest.raises(InputError, match="unfinished export"):
        open_volume(out)
    write_volume(out, vol, spacing=(40, 4, 4), chunks=(3, 20, 24), pyramid=2)
    np.testing.assert_array_equal(open_volume(out).data.compute(), vol)
    assert_valid_ngff(out)


_KILL_SCRIPT = """
    import os, shutil, signal, sys
    import dask.array as da, numpy as np
    from napari_emsr.io import write_volume

    out, where = sys.argv[1], sys.argv[2]
    vol = np.random.default_rng(0).integers(0, 255, size=(12, 20, 24), dtype=np.uint8)
    kill = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    data, progress, overwrite = vol, None, False
    if where == "first-block":
        data = da.from_array(vol, chunks=(3, 20, 24)).map_blocks(lambda b: kill(), meta=np.empty((0, 0, 0), vol.dtype))
    elif where == "last-block":
        progress = lambda done, total: kill() if done == total else None
    elif where == "overwrite":
        # rmtree of the old store's first chunk folder: its metadata is gone already, its chunks not yet
        shutil.rmtree, overwrite = kill, True
    write_volume(out, data, spacing=(40, 4, 4), chunks=(3, 20, 24), pyramid=2, progress=progress,
                 overwrite=overwrite)
    print("not killed")
"""


@pytest.mark.parametrize("where", ["first-block", "last-block", "overwrite"])
def test_a_killed_export_never_opens_as_finished(tmp_path, vol, where):
    out = tmp_path / "k.ome.zarr"
    if where == "overwrite":
        write_volume(out, np.ones_like(vol), spacing=(40, 4, 4), chunks=(3, 20, 24), pyramid=2)
    proc = _run(_KILL_SCRIPT, str(out), where)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    assert out.is_dir()
    assert (out / INCOMPLETE_MARKER).exists()
    with pytest.raises(InputError, match="unfinished export"):
        open_volume(out)
    if where == "overwrite":
        with pytest.raises(OutputExistsError, match="was being removed to be overwritten"):
            write_volume(out, vol, spacing=(40, 4, 4), chunks=(3, 20, 24), pyramid=2)
    # Running it again completes it (a removal that was killed needs overwrite, as the first call had).
    write_volume(out, vol, spacing=(40, 4, 4), chunks=(3, 20, 24), pyramid=2, overwrite=where == "overwrite")
    np.testing.assert_array_equal(open_volume(out).data.compute(), vol)
    assert_valid_ngff(out)


# ---- 3. a full disk, a file-size limit ----------------------------------------------------------------------

_FSIZE_SCRIPT = """
    import json, resource, signal, sys
    from pathlib import Path
    import numpy as np
    from napari_emsr.io import write_volume

    folder, limit = Path(sys.argv[1]), int(sys.argv[2])
    data = np.load(folder / "data.npy")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    got = {}
    for name in ("out.tif", "out.ome.zarr"):
        try:
            write_volume(folder / name, data, spacing=(40, 4, 4), chunks=(2, 64, 128), pyramid=2,
                         fingerprint={"method": "cubic"})
            got[name] = "written"
        except Exception as exc:
            got[name] = [type(exc).__name__, [c.__name__ for c in type(exc).__mro__], str(exc)]
    print(json.dumps(got))
"""


def _half_random(shape=(8, 64, 128)) -> np.ndarray:
    """Zeros (compressing to almost nothing) in the first half along z, noise (incompressible) after."""
    data = np.zeros(shape, np.uint8)
    data[shape[0] // 2 :] = np.random.default_rng(1).integers(0, 255, size=data[shape[0] // 2 :].shape)
    return data


def test_file_size_limit_is_a_clear_error_and_zarr_resumes(tmp_path):
    data = _half_random()  # 64 KB; a noise chunk is 16 KB
    np.save(tmp_path / "data.npy", data)
    got = _result(_run(_FSIZE_SCRIPT, str(tmp_path), str(12 * 1024)))

    name, mro, msg = got["out.tif"]
    assert name == "OutputError" and "EMSRError" in mro, got
    assert "file-size limit is reached" in msg and "65.5 KB" in msg and "write the TIFF again" in msg, msg
    assert not list(tmp_path.glob("*.tif")), list(tmp_path.iterdir())
    assert not list(tmp_path.glob("*.emsr-partial-*")), list(tmp_path.iterdir())  # no temporary file left

    name, mro, msg = got["out.ome.zarr"]
    assert name == "OutputError" and "EMSRError" in mro, got
    assert "file-size limit is reached" in msg and "resumes where it stopped (2 of 4 blocks" in msg, msg
    out = tmp_path / "out.ome.zarr"
    marker = json.loads((out / INCOMPLETE_MARKER).read_text())
    assert marker["done"] == [0, 1]
    with pytest.raises(InputError, match="unfinished export"):
        open_volume(out)

    # The limit lifted (this process has none): the same call resumes and completes the store.
    seen = []
    write_volume(out, data, spacing=(40, 4, 4), chunks=(2, 64, 128), pyramid=2, fingerprint={"method": "cubic"},
                 progress=lambda d, t: seen.append(d))
    assert seen[:2] == [2, 3]  # the finished blocks reported before the first one written
    assert not (out / INCOMPLETE_MARKER).exists()
    v = open_volume(out)
    np.testing.assert_array_equal(v.data.compute(), data)
    assert len(v.levels) == 2
    assert_valid_ngff(out)


_FULL_DISK_SCRIPT = """
    import json, subprocess, sys
    from pathlib import Path
    import numpy as np
    from napari_emsr.io import open_volume, write_volume

    folder = Path(sys.argv[1])
    data = np.random.default_rng(2).integers(0, 255, size=(32, 128, 256), dtype=np.uint8)  # 1 MiB, noise
    got = {}
    for name in ("out.tif", "out.zarr"):
        try:
            write_volume(folder / name, data, spacing=(40, 4, 4), chunks=(4, 128, 256))
            got[name] = "written"
        except Exception as exc:
            got[name] = [type(exc).__name__, str(exc)]
    got["files"] = sorted(p.name for p in folder.iterdir())
    got["marker"] = (folder / "out.zarr" / ".emsr_incomplete").read_text()
    # Free space (a larger disk), and run the same export again.
    subprocess.run(["mount", "-o", "remount,size=8m", str(folder)], check=True)
    seen = []
    write_volume(folder / "out.zarr", data, spacing=(40, 4, 4), chunks=(4, 128, 256),
                 progress=lambda d, t: seen.append(d))
    got["seen"] = seen
    got["equal"] = bool(np.array_equal(open_volume(folder / "out.zarr").data.compute(), data))
    print(json.dumps(got))
"""


def test_full_disk_is_a_clear_error_and_zarr_resumes(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _private_tmpfs_works(disk):
        pytest.skip("needs root and `unshare -m` to mount a small tmpfs privately")
    mount = f"mount -t tmpfs -o size=640k tmpfs '{disk}' && exec \"$@\""
    proc = _run(_FULL_DISK_SCRIPT, str(disk), prefix=["unshare", "-m", "sh", "-c", mount, "-"])
    # Before: the memory-mapped TIFF died of SIGBUS (exit 135, no message) on the full disk.
    got = _result(proc)
    name, msg = got["out.tif"]
    # (the free space is now compared with the TIFF's size before anything is computed)
    assert name == "OutputError" and "1.0 MB" in msg and "free" in msg, msg
    assert not any(".emsr-partial-" in f for f in got["files"]) and "out.tif" not in got["files"], got["files"]
    name, msg = got["out.zarr"]
    assert name == "OutputError" and "the disk is full" in msg and "resumes where it stopped" in msg, msg
    done = json.loads(got["marker"])["done"]
    assert 0 < len(done) < 8, done
    assert got["seen"][:2] == [len(done), len(done) + 1] and got["equal"], got


def test_tiff_space_is_reserved_before_the_data_is_written(tmp_path):
    if not (sys.platform.startswith("linux") or hasattr(os, "posix_fallocate")):
        pytest.skip("no way to reserve file space on this platform")
    allocated = []

    def look(block):
        # Computing the data: the file exists and nothing of the data has been written to it yet.
        if not allocated:
            (partial,) = tmp_path.glob(".z.tif.emsr-partial-*")
            allocated.append(partial.stat().st_blocks * 512)
        return block

    zeros = da.zeros((64, 256, 256), dtype=np.uint8, chunks=(8, 256, 256))
    data = zeros.map_blocks(look, meta=np.empty((0, 0, 0), np.uint8))
    write_volume(tmp_path / "z.tif", data)
    # Before: a sparse file (a few KB of header on disk) that a full disk turned into SIGBUS later.
    assert allocated[0] >= 64 * 256 * 256


# ---- 4. an output folder that cannot be written ------------------------------------------------------------


def test_parent_that_is_a_file(tmp_path, vol):
    parent = tmp_path / "notes.txt"
    parent.write_text("a file")
    for name in ("a.tif", "a.ome.zarr"):
        with pytest.raises(InputError, match=r"notes\.txt is a file, not a folder"):
            write_volume(parent / name, vol)
    with pytest.raises(InputError, match="does not exist"):
        write_volume(tmp_path / "missing" / "a.tif", vol)


_READ_ONLY_SCRIPT = """
    import json, sys
    from pathlib import Path
    import numpy as np
    from napari_emsr.io import write_volume

    folder = Path(sys.argv[1])
    got = {}
    for name in ("a.tif", "a.zarr"):
        try:
            write_volume(folder / name, np.ones((4, 8, 8), np.uint8))
            got[name] = "written"
        except Exception as exc:
            got[name] = [type(exc).__name__, str(exc)]
    got["files"] = sorted(p.name for p in folder.iterdir())
    print(json.dumps(got))
"""


def _check_refused(got: dict, folder: Path) -> None:
    for name in ("a.tif", "a.zarr"):
        assert got[name][0] == "OutputError", got
        assert f"cannot write into the folder {folder}" in got[name][1], got
    assert got["files"] == []


def test_read_only_disk(tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    if not _private_tmpfs_works(disk):
        pytest.skip("needs root and `unshare -m` to mount a read-only tmpfs privately")
    # As root, only a read-only file system stops writes: mount one.
    mount = f"mount -t tmpfs -o ro,size=64k tmpfs '{disk}' && exec \"$@\""
    proc = _run(_READ_ONLY_SCRIPT, str(disk), prefix=["unshare", "-m", "sh", "-c", mount, "-"])
    _check_refused(_result(proc), disk)


def test_folder_without_write_permission(tmp_path_factory):
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("as root, needs setpriv to run as an unprivileged user")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        prefix = []
    # A folder the unprivileged user can reach (pytest's own tmp folders are private to root).
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="emsr-ro-"))
    try:
        base.chmod(0o755)
        folder = base / "locked"
        folder.mkdir(mode=0o555)
        folder.chmod(0o555)
        got = _result(_run(_READ_ONLY_SCRIPT, str(folder), prefix=prefix))
        _check_refused(got, folder)
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)


# ---- 5. float16 to TIFF -------------------------------------------------------------------------------------


def test_float16_tiff_is_written_as_float32(tmp_path, caplog):
    data = (np.random.default_rng(3).standard_normal((6, 10, 12)) * 100).astype(np.float16)
    data[0, 0, :3] = [np.inf, -np.inf, 65504]
    with caplog.at_level(logging.WARNING, logger="napari_emsr.io"):
        out = write_volume(tmp_path / "h.tif", data, spacing=(40, 4, 4))
    assert "float16" in caplog.text and "float32" in caplog.text
    v = open_volume(out)
    assert v.dtype == np.float32 and v.spacing == pytest.approx((40, 4, 4))
    np.testing.assert_array_equal(v.data.compute(), data.astype(np.float32))
    with tifffile.TiffFile(out) as tf:
        assert tf.is_imagej
    # .zarr keeps float16.
    z = write_volume(tmp_path / "h.zarr", data)
    assert open_volume(z).dtype == np.float16


def test_64_bit_integers_to_tiff_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"int64 data to the TIFF .* write \.zarr"):
        write_volume(tmp_path / "i.tif", np.ones((4, 8, 8), np.int64))
    assert not list(tmp_path.iterdir())


# ---- 6. compressed TIFFs ------------------------------------------------------------------------------------


def _have_imagecodecs() -> bool:
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("compression,name", [("tiff_lzw", "LZW"), ("jpeg", "JPEG")])
def test_tiff_whose_codec_is_missing(tmp_path, compression, name):
    # tifffile cannot write LZW or JPEG without imagecodecs: Pillow (with libtiff) writes the file.
    image = pytest.importorskip("PIL.Image")
    data = (np.arange(4 * 16 * 20) % 251).astype(np.uint8).reshape(4, 16, 20)
    path = tmp_path / f"{compression}.tif"
    pages = [image.fromarray(plane) for plane in data]
    pages[0].save(path, save_all=True, append_images=pages[1:], compression=compression)
    with tifffile.TiffFile(path) as tf:
        assert tf.pages[0].compression.name == name

    if _have_imagecodecs():
        v = open_volume(path)
        assert v.shape == data.shape
        if name == "LZW":
            np.testing.assert_array_equal(v.data.compute(), data)
        return
    # Before: opening worked and reading the data failed later with tifffile's ValueError.
    with pytest.raises(InputError, match=rf"compressed with {name}.*pip install imagecodecs"):
        open_volume(path)


def test_compressed_tiffs_tifffile_decodes_itself_open(tmp_path):
    data = (np.arange(4 * 16 * 20) % 251).astype(np.uint8).reshape(4, 16, 20)
    for compression in ("zlib", "lzma"):
        path = tmp_path / f"{compression}.tif"
        tifffile.imwrite(path, data, compression=compression, photometric="minisblack")
        np.testing.assert_array_equal(open_volume(path).data.compute(), data)
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, data, compression="zlib", tile=(16, 16), photometric="minisblack")
    np.testing.assert_array_equal(open_volume(tiled).data.compute(), data)


def test_output_error_is_an_emsr_error():
    assert issubclass(OutputError, EMSRError) and issubclass(OutputError, OSError)


def test_an_unfinished_export_of_an_older_version_is_named_as_such(tmp_path):
    """A marker written by the version before pyramids lists no levels: the refusal says so and what to do."""
    data = np.random.default_rng(3).integers(0, 255, (8, 300, 40), dtype=np.uint8)
    out = tmp_path / "old.ome.zarr"

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_volume(out, data, (10, 10, 10), progress=stop)
    marker = out / INCOMPLETE_MARKER
    state = json.loads(marker.read_text())
    for key in ("levels", "levels_done", "fingerprint"):
        state.pop(key, None)
    marker.write_text(json.dumps(state))
    with pytest.raises(OutputExistsError, match="older version of napari-emsr.*overwrite"):
        write_volume(out, data, (10, 10, 10))
    write_volume(out, data, (10, 10, 10), overwrite=True)
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), data)
