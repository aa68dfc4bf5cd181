"""Inputs a cluster run reads from elsewhere: a zarr store at an fsspec URL (``file://``, ``memory://``; ``s3://``,
``gs://``, ``https://`` with their packages) opens like the same store on disk, and URLs that cannot work end in
our error."""

from __future__ import annotations

import importlib.util
import uuid

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from napari_emsr.cli import main  # noqa: E402
from napari_emsr.errors import InputError  # noqa: E402
from napari_emsr.io import open_volume, write_volume  # noqa: E402
from napari_emsr.io.omezarr import INCOMPLETE_MARKER  # noqa: E402


@pytest.fixture
def stored(tiny_stack, tmp_path):
    """The tiny stack as an OME-Zarr with a pyramid on disk, and the same files in fsspec's memory file system."""
    vol, _ = tiny_stack
    local = tmp_path / "stack.ome.zarr"
    write_volume(local, vol, pyramid=3, chunks=(4, 32, 32))
    fs = fsspec.filesystem("memory")
    name = f"emsr-test-{uuid.uuid4().hex}"
    fs.put(str(local), f"/{name}/stack.ome.zarr", recursive=True)
    yield local, f"memory://{name}/stack.ome.zarr"
    fs.rm(f"/{name}", recursive=True)


def _read(p):
    return np.asarray(open_volume(p).data.compute(scheduler="synchronous"))


def test_a_store_at_a_url_opens_like_the_folder(stored):
    local, url = stored
    ref = open_volume(local)
    for u in (url, local.as_uri()):
        vol = open_volume(u)
        assert vol.spacing == ref.spacing == (40.0, 10.0, 10.0) and vol.unit == ref.unit
        assert len(vol.levels) == len(ref.levels) == 3
        assert np.array_equal(np.asarray(vol.data), np.asarray(ref.data))
        assert np.array_equal(np.asarray(vol.levels[-1]), np.asarray(ref.levels[-1]))
    level = open_volume(url, level=1)
    assert level.shape == ref.levels[1].shape and level.spacing == open_volume(local, level=1).spacing


def test_apply_reads_a_url_and_writes_what_the_folder_gives(stored, tmp_path):
    local, url = stored
    a, b = tmp_path / "from-folder.ome.zarr", tmp_path / "from-url.ome.zarr"
    assert main(["apply", str(local), "--model", "cubic", "-o", str(a), "-q"]) == 0
    assert main(["apply", url, "--model", "cubic", "-o", str(b), "-q"]) == 0
    ref = _read(a)
    assert ref.shape == (33, 48, 48) and np.array_equal(_read(b), ref)
    assert open_volume(b).spacing == open_volume(a).spacing


def test_urls_that_cannot_work_end_in_our_error(stored, tmp_path, capsys):
    local, url = stored
    fs = fsspec.filesystem("memory")
    root = url.split("://", 1)[1].rsplit("/", 1)[0]
    fs.pipe(f"/{root}/notes/readme.txt", b"not a zarr store")
    fs.put(str(local), f"/{root}/unfinished.zarr", recursive=True)
    fs.pipe(f"/{root}/unfinished.zarr/{INCOMPLETE_MARKER}", b"{}")
    cases = {
        "nosuchprotocol://bucket/x.zarr": "not a protocol fsspec knows",
        f"memory://{root}/missing.zarr": "does not exist",
        f"memory://{root}/notes": "no zarr metadata",
        f"memory://{root}/unfinished.zarr": "unfinished export",
        "https://example.org/stack.tif": "TIFF stacks are read from files on this machine only",
        "file://otherhost/data/stack.zarr": "names a path on this machine",
        (tmp_path / "nothing.zarr").as_uri(): "does not exist",
    }
    if importlib.util.find_spec("s3fs") is None:
        cases["s3://bucket/stack.zarr"] = "s3fs"
    for u, message in cases.items():
        with pytest.raises(InputError, match=message):
            open_volume(u)
    assert main(["info", "nosuchprotocol://bucket/x.zarr"]) == 2
    assert "not a protocol fsspec knows" in capsys.readouterr().err


def test_an_n5_container_is_named(tmp_path):
    n5 = tmp_path / "stack.n5"
    (n5 / "s0").mkdir(parents=True)
    (n5 / "attributes.json").write_text('{"n5": "2.5.0"}')
    (n5 / "s0" / "attributes.json").write_text('{"dimensions": [48, 48, 9], "blockSize": [48, 48, 9], '
                                               '"dataType": "uint8", "compression": {"type": "raw"}}')
    with pytest.raises(InputError, match="N5 container"):
        open_volume(n5)
