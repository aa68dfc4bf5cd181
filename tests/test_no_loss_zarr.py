"""Nothing lost, whatever runs beside it: zarr outputs (issue 20, cases 2 and 7).

- Two writers to one zarr store: the second is refused at once (exit 2, naming the first process), and the store
  ends equal to one run's output, after a completed run as after an interrupted one.
- An output path that is a symbolic link is refused: what it points to is never deleted.
- ``--overwrite`` deletes only a zarr store through and through (some array in it, nothing but zarr metadata and
  chunks): a folder with a stray ``.zattrs`` beside the user's files is refused, naming the first such file.

Real processes, real kills, real files: the lock is held by this process or by a real writer in another one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from emsr_helpers import run_emsr as _emsr
from emsr_helpers import tree_digest as _digest
from emsr_helpers import write_tif as _tif

from napari_emsr import cli
from napari_emsr.io import INCOMPLETE_MARKER, open_volume, write_volume


@pytest.fixture
def tif(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (8, 32, 32), dtype=np.uint8)
    return _tif(tmp_path / "in.tif", data)


def _refused(argv, capsys, *words) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def _levels(path: Path) -> list[np.ndarray]:
    return [np.asarray(level) for level in open_volume(path).levels]


def _assert_same_store(a: Path, b: Path) -> None:
    """Both stores finished, with the same levels, voxel for voxel."""
    assert not (a / INCOMPLETE_MARKER).exists() and not (b / INCOMPLETE_MARKER).exists()
    la, lb = _levels(a), _levels(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


@contextlib.contextmanager
def _held(out: Path):
    """Hold the lock of ``out`` as another emsr process does: an flock on ``.<name>.emsr-lock`` beside it (see
    napari_emsr.io.safety.lock_path) with this process's pid and command line in it."""
    lock = out.parent / f".{out.name}.emsr-lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()} pytest test_no_loss_zarr\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _wait_for_a_block(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the writer ``proc`` has written its first block into ``out`` (its marker lists it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if json.loads((out / INCOMPLETE_MARKER).read_text()).get("done"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("the writer wrote no block in time")


# ---- 2. two writers to one store ----------------------------------------------------------------------------


def test_a_second_writer_is_refused_at_once_naming_the_first(tif, tmp_path):
    """While another process holds the store's lock, a real `emsr reconstruct` to it exits 2 with a message that
    names that process, and writes nothing: neither a new store nor into a finished one (--overwrite)."""
    out = tmp_path / "d.zarr"
    with _held(out):
        run = _emsr("reconstruct", tif, "--method", "cubic", "-o", out, "-q")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "being written by another process" in run.stderr and f"process {os.getpid()}" in run.stderr, run.stderr
    assert not out.exists()

    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(out), "-q"]) == 0
    before = _digest(out)
    with _held(out):
        run = _emsr("reconstruct", tif, "--method", "linear", "-o", out, "--overwrite", "-q")
    assert run.returncode == 2 and "Traceback" not in run.stderr and f"process {os.getpid()}" in run.stderr
    assert _digest(out) == before
    # once the other process is done, the same command runs
    assert cli.main(["reconstruct", str(tif), "--method", "linear", "-o", str(out), "--overwrite", "-q"]) == 0
    ref = tmp_path / "ref.zarr"
    assert cli.main(["reconstruct", str(tif), "--method", "linear", "-o", str(ref), "-q"]) == 0
    _assert_same_store(out, ref)


# A real writer in another process whose data comes slowly (0.3 s a block), so that it is caught mid-write.
_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    import dask.array as da, numpy as np
    from napari_emsr.io import write_volume

    vol = np.random.default_rng(1).integers(0, 255, (29, 32, 32), dtype=np.uint8)
    slow = da.from_array(vol, chunks=(4, 32, 32)).map_blocks(lambda b: (time.sleep(0.3), b)[1], dtype=vol.dtype)
    write_volume(sys.argv[1], slow, spacing=(10, 10, 10), chunks=(4, 32, 32), pyramid=1, overwrite=True)
    np.save(sys.argv[2], vol)
""")


def test_a_store_being_written_is_never_taken_over_and_ends_as_one_run(tif, tmp_path):
    """A real writer is caught mid-write: `emsr reconstruct --overwrite` to its store is refused (exit 2, naming it)
    and the writer's store ends complete, equal to its data. Killed mid-write (SIGKILL: the lock dies with it), the
    next command takes the store over and it ends equal to that command's own output."""
    out = tmp_path / "d.zarr"
    script = tmp_path / "writer.py"
    script.write_text(_SLOW_WRITER)
    expected = tmp_path / "vol.npy"
    writer = subprocess.Popen([sys.executable, str(script), str(out), str(expected)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        _wait_for_a_block(out, writer)
        run = _emsr("reconstruct", tif, "--method", "cubic", "-o", out, "--overwrite", "-q")
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
        assert "being written by another process" in run.stderr and f"process {writer.pid}" in run.stderr
        assert writer.wait(timeout=120) == 0, writer.communicate()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert not (out / INCOMPLETE_MARKER).exists()
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), np.load(expected))

    # interrupted: the writer starts over (overwrite) and is killed mid-write, leaving an unfinished store
    expected.unlink()
    writer = subprocess.Popen([sys.executable, str(script), str(out), str(expected)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        _wait_for_a_block(out, writer)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert (out / INCOMPLETE_MARKER).exists()
    run = _emsr("reconstruct", tif, "--method", "cubic", "-o", out, "--overwrite", "-q")
    assert run.returncode == 0, run.stderr
    ref = tmp_path / "ref.zarr"
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(ref), "-q"]) == 0
    _assert_same_store(out, ref)


def test_two_exports_started_together_leave_one_whole_result(tif, tmp_path):
    """Two real `emsr reconstruct --overwrite` to one store, started together (cubic and linear): each ends with exit
    0 or with our message (exit 2, no traceback), and the store is finished and equal to one of the two results."""
    refs = {}
    for method in ("cubic", "linear"):
        refs[method] = tmp_path / f"ref-{method}.zarr"
        assert cli.main(["reconstruct", str(tif), "--method", method, "-o", str(refs[method]), "-q"]) == 0
    for offset in (0.0, 0.4):
        out = tmp_path / f"race{offset}.zarr"
        procs = []
        for method in ("cubic", "linear"):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "napari_emsr.cli", "reconstruct", str(tif), "--method", method, "-o", str(out),
                 "--overwrite", "-q"], stderr=subprocess.PIPE, text=True, env={**os.environ}))
            time.sleep(offset)
        for proc in procs:
            err = proc.communicate(timeout=300)[1]
            assert proc.returncode in (0, 2), err
            assert "Traceback" not in err
            if proc.returncode == 2:
                assert "being written by another process" in err, err
        assert not (out / INCOMPLETE_MARKER).exists()
        got = _levels(out)
        same = [m for m, ref in refs.items()
                if all(np.array_equal(a, b) for a, b in zip(got, _levels(ref))) and len(got) == len(_levels(ref))]
        assert same, "the store equals neither run's output"


# ---- 7. symbolic links and folders that are not stores --------------------------------------------------------


def test_an_output_that_is_a_symbolic_link_is_refused_and_its_target_kept(tif, tmp_path, capsys):
    real = tmp_path / "real.zarr"
    assert cli.main(["reconstruct", str(tif), "--method", "linear", "-o", str(real), "-q"]) == 0
    before = _digest(real)
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    _refused(["reconstruct", tif, "--method", "cubic", "-o", link, "-q"], capsys, "symbolic link")
    _refused(["reconstruct", tif, "--method", "cubic", "-o", link, "--overwrite", "-q"], capsys, "symbolic link",
             str(real))
    assert _digest(real) == before and link.is_symlink()
    np.testing.assert_array_equal(np.asarray(open_volume(real).data), np.asarray(open_volume(link).data))

    # a link to an unfinished export is not resumed through, nor one to nothing followed
    dangling = tmp_path / "dangling.zarr"
    dangling.symlink_to(tmp_path / "nowhere.zarr")
    _refused(["reconstruct", tif, "--method", "cubic", "-o", dangling, "-q"], capsys, str(dangling))
    assert not (tmp_path / "nowhere.zarr").exists() and dangling.is_symlink()
    # the library says the same
    from napari_emsr.errors import InputError

    vol = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(InputError, match="symbolic link"):
        write_volume(link, vol, overwrite=True)
    with pytest.raises(InputError, match="dangling.zarr"):
        write_volume(dangling, vol, overwrite=True)
    assert _digest(real) == before and not (tmp_path / "nowhere.zarr").exists()


def test_overwrite_never_deletes_a_folder_holding_other_files(tif, tmp_path, capsys):
    """A folder whose only zarr-looking file is a stray .zattrs, a real store with a user's file put into it, and a
    folder of zarr metadata without any array are all refused with --overwrite, naming what is in the way; nothing
    in them is deleted. A store of only zarr files is replaced."""
    mine = tmp_path / "mine.zarr"
    mine.mkdir()
    (mine / ".zattrs").write_text('{"note": "made by hand"}')
    (mine / "notes.txt").write_text("keep me")
    (mine / "raw").mkdir()
    (mine / "raw" / "scan.dat").write_bytes(b"\x00" * 100)
    before = _digest(mine)
    _refused(["reconstruct", tif, "--method", "cubic", "-o", mine, "--overwrite", "-q"], capsys, "notes.txt",
             "not part of a zarr store")
    assert _digest(mine) == before
    (mine / "notes.txt").unlink()
    _refused(["reconstruct", tif, "--method", "cubic", "-o", mine, "--overwrite", "-q"], capsys, "scan.dat")
    assert (mine / "raw" / "scan.dat").read_bytes() == b"\x00" * 100

    store = tmp_path / "store.zarr"
    assert cli.main(["reconstruct", str(tif), "--method", "linear", "-o", str(store), "-q"]) == 0
    (store / "0" / "README").write_text("how this was made")
    before = _digest(store)
    _refused(["reconstruct", tif, "--method", "cubic", "-o", store, "--overwrite", "-q"], capsys, "README")
    assert _digest(store) == before
    np.asarray(open_volume(store).data)  # still opens

    only = tmp_path / "only.zarr"
    only.mkdir()
    (only / ".zattrs").write_text("{}")
    (only / ".zgroup").write_text('{"zarr_format": 2}')
    _refused(["reconstruct", tif, "--method", "cubic", "-o", only, "--overwrite", "-q"], capsys, "no zarr array")
    assert sorted(p.name for p in only.iterdir()) == [".zattrs", ".zgroup"]

    (store / "0" / "README").unlink()
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(store), "--overwrite", "-q"]) == 0
    ref = tmp_path / "ref.zarr"
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(ref), "-q"]) == 0
    _assert_same_store(store, ref)


def test_overwrite_still_replaces_stores_of_every_layout(tmp_path):
    """Stores written by zarr itself (v2 with '.' chunk keys, v3 with sharding in a nested group) and our own
    export whose removal was interrupted after its metadata went are all recognised as stores and replaced."""
    import zarr

    vol = np.random.default_rng(2).integers(0, 255, (8, 32, 32), dtype=np.uint8)
    v2 = zarr.create_array(str(tmp_path / "v2.zarr"), shape=vol.shape, chunks=(4, 16, 16), dtype="u1",
                           zarr_format=2)
    v2[:] = vol
    group = zarr.open_group(str(tmp_path / "v3.zarr"), mode="w", zarr_format=3)
    group.create_array("raw/em", shape=vol.shape, chunks=(4, 16, 16), shards=(8, 32, 32), dtype="u1")[:] = vol
    ours = write_volume(tmp_path / "ours.zarr", vol, chunks=(4, 32, 32), pyramid=2)
    (ours / INCOMPLETE_MARKER).write_text(json.dumps({"removing": True}))
    for meta in [*ours.rglob(".zarray"), *ours.rglob(".zattrs"), *ours.rglob(".zgroup")]:
        meta.unlink()
    for name in ("v2.zarr", "v3.zarr", "ours.zarr"):
        out = write_volume(tmp_path / name, vol[::-1].copy(), overwrite=True)
        np.testing.assert_array_equal(np.asarray(open_volume(out).data), vol[::-1])
