"""Hostile input ends in our clear error (exit code 2), never a traceback or a result that only looks right.

Damaged files are made the way they happen (a copy cut short, bytes overwritten, metadata edited by hand) and
given to the real command line, in-process: ``cli.main`` returns 2 and prints our message (an exception of any
other kind escapes and fails the test), and ``apply``/``reconstruct`` leave no output that looks finished.
A seeded mutator then fuzzes a TIFF and an OME-Zarr's metadata: every mutation ends in a volume or an
:class:`~napari_emsr.errors.EMSRError`, never another exception, never a hang.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_emsr import cli
from napari_emsr.errors import EMSRError, InputError
from napari_emsr.io import INCOMPLETE_MARKER, open_volume, write_volume


def _tif(path: Path, data: np.ndarray, **kwargs) -> Path:
    if not kwargs:
        kwargs = dict(imagej=True, resolution=(0.1, 0.1), metadata={"spacing": 40.0, "unit": "nm", "axes": "ZYX"})
    tifffile.imwrite(path, data, **kwargs)
    return path


def _data(shape=(9, 48, 48)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)


def _refused(argv, capsys, *words) -> str:
    """Run the CLI: exit code 2, our message (with ``words``), no traceback."""
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "error:" in err, err
    for w in words:
        assert w in err, err
    return err


def _not_finished(out: Path) -> None:
    """An output that does not look finished: absent, or a zarr store that still has its marker."""
    assert not out.exists() or (out / INCOMPLETE_MARKER).exists(), out
    assert not out.with_name(out.name.replace(".tif", ".partial.tif")).exists()


@pytest.fixture
def zarr_stack(tmp_path):
    p = tmp_path / "in.zarr"
    write_volume(p, _data(), (40, 10, 10), pyramid=False)
    return p


# ---- 1. malformed OME-Zarr metadata --------------------------------------------------------------------------

def _ms(a):
    return a["multiscales"][0]


def _ds(a):
    return _ms(a)["datasets"][0]


def _scale(a):
    return _ds(a)["coordinateTransformations"][0]


MALFORMED = {
    "multiscales is a dict": lambda a: a.__setitem__("multiscales", a["multiscales"][0]),
    "multiscales is a string": lambda a: a.__setitem__("multiscales", "image"),
    "multiscales is a number": lambda a: a.__setitem__("multiscales", 3),
    "multiscales holds a string": lambda a: a.__setitem__("multiscales", ["image"]),
    "multiscales is empty": lambda a: a.__setitem__("multiscales", []),
    "datasets is a dict": lambda a: _ms(a).__setitem__("datasets", _ds(a)),
    "datasets is a string": lambda a: _ms(a).__setitem__("datasets", "0"),
    "datasets is a number": lambda a: _ms(a).__setitem__("datasets", 0),
    "datasets holds a number": lambda a: _ms(a).__setitem__("datasets", [0]),
    "transformations are a dict": lambda a: _ds(a).__setitem__("coordinateTransformations", _scale(a)),
    "transformations are a string": lambda a: _ds(a).__setitem__("coordinateTransformations", "scale"),
    "transformations are a number": lambda a: _ds(a).__setitem__("coordinateTransformations", 1),
    "multiscale transformations are a dict": lambda a: _ms(a).__setitem__("coordinateTransformations",
                                                                         {"type": "scale", "scale": [1, 1, 1]}),
    "axes are numbers": lambda a: _ms(a).__setitem__("axes", [1, 2, 3]),
    "axes are lists": lambda a: _ms(a).__setitem__("axes", [["z"], ["y"], ["x"]]),
    "axes are null": lambda a: _ms(a).__setitem__("axes", [None, None, None]),
    "axes is a dict": lambda a: _ms(a).__setitem__("axes", {"z": 0}),
    "axis names are numbers": lambda a: _ms(a).__setitem__("axes", [{"name": i} for i in range(3)]),
    "scale is a string": lambda a: _scale(a).__setitem__("scale", "40"),
    "scale holds words": lambda a: _scale(a).__setitem__("scale", ["forty", "ten", "ten"]),
    "scale is nested": lambda a: _scale(a).__setitem__("scale", [[40], [10], [10]]),
    "path is a number": lambda a: _ds(a).__setitem__("path", 0),
    "path leaves the store": lambda a: _ds(a).__setitem__("path", "../.."),
    "path does not exist": lambda a: _ds(a).__setitem__("path", "nope"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_ome_zarr_metadata_is_refused(zarr_stack, tmp_path, capsys, name):
    attrs = json.loads((zarr_stack / ".zattrs").read_text())
    MALFORMED[name](attrs)
    (zarr_stack / ".zattrs").write_text(json.dumps(attrs))
    _refused(["info", zarr_stack], capsys, str(zarr_stack))
    out = tmp_path / "out.tif"
    _refused(["reconstruct", zarr_stack, "--method", "cubic", "-o", out, "-q"], capsys, str(zarr_stack))
    _not_finished(out)


def test_group_attributes_that_are_not_an_object_are_refused(zarr_stack, capsys):
    (zarr_stack / ".zattrs").write_text("[1, 2]")
    _refused(["info", zarr_stack], capsys, str(zarr_stack))


@pytest.mark.parametrize("change, words", [
    ({"chunks": [0, 48, 48]}, "declares chunks"),
    ({"shape": [10**12, 10**12, 48]}, "chunks, more than"),
    ({"chunks": [10**9, 10**9, 10**9]}, "too large to read"),
    ({"shape": "9"}, "cannot be read"),
    ({"dtype": "|O"}, "cannot be read"),
    ({"compressor": {"id": "nope"}}, "cannot be read"),
])
def test_impossible_zarr_array_metadata_is_refused(zarr_stack, capsys, change, words):
    zarray = zarr_stack / "0" / ".zarray"
    zarray.write_text(json.dumps({**json.loads(zarray.read_text()), **change}))
    _refused(["info", zarr_stack, "--fast"], capsys, str(zarr_stack), words)


# ---- 2. a damaged zarr chunk --------------------------------------------------------------------------------

def _chunk_files(store: Path) -> list[Path]:
    return sorted(f for f in (store / "0").rglob("*") if f.is_file() and not f.name.startswith("."))


def test_a_damaged_zarr_chunk_is_named_when_it_is_read(tmp_path, capsys):
    store = tmp_path / "in.zarr"
    write_volume(store, _data((12, 48, 48)), (40, 10, 10), chunks=(4, 48, 48), pyramid=False)
    chunk = _chunk_files(store)[1]  # the chunk "1/0/0"
    chunk.write_bytes(b"garbage!" * 20)
    vol = open_volume(store)  # opening reads no chunk: still lazy
    np.asarray(vol.data[:4])  # the chunks around it are fine
    with pytest.raises(InputError, match="damaged") as err:
        np.asarray(vol.data[4:8])
    assert "'1/0/0'" in str(err.value) and str(store) in str(err.value)
    # the error survives a trip through pickle, as on a dask.distributed worker
    with pytest.raises(InputError, match="1/0/0"):
        pickle.loads(pickle.dumps(vol.data)).compute(scheduler="sync")
    for out in (tmp_path / "o.tif", tmp_path / "o.zarr"):
        _refused(["reconstruct", store, "--method", "cubic", "-o", out, "-q"], capsys, str(store), "1/0/0",
                 "damaged")
        _not_finished(out)
    _refused(["info", store], capsys, "damaged")


def test_a_zarr_volume_still_pickles_and_reads(zarr_stack):
    vol = open_volume(zarr_stack)
    again = pickle.loads(pickle.dumps(vol.data))
    np.testing.assert_array_equal(again.compute(scheduler="sync"), _data())


# ---- 3. damaged TIFF files ----------------------------------------------------------------------------------

@pytest.fixture
def zlib_tif(tmp_path):
    return _tif(tmp_path / "z.tif", _data(), compression="zlib", metadata={"axes": "ZYX"})


def test_a_tiff_whose_strip_cannot_be_decoded_names_the_page(zlib_tif, tmp_path, capsys):
    with tifffile.TiffFile(zlib_tif) as tf:
        page = tf.pages[4]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    raw = bytearray(zlib_tif.read_bytes())
    for i in range(offset + count // 2, offset + count // 2 + 40):
        raw[i] ^= 0xFF
    zlib_tif.write_bytes(bytes(raw))
    out = tmp_path / "o.tif"
    _refused(["reconstruct", zlib_tif, "--method", "cubic", "--factor", "4", "-o", out, "-q"], capsys, str(zlib_tif),
             "page 4",
             "damaged")
    _not_finished(out)
    with pytest.raises(InputError, match="page 4"):
        pickle.loads(pickle.dumps(open_volume(zlib_tif).data)).compute(scheduler="sync")


@pytest.mark.parametrize("fraction", [0.3, 0.9, 0.99])
@pytest.mark.parametrize("kind", ["imagej", "zlib", "tiled"])
def test_a_tiff_cut_short_is_refused(tmp_path, capsys, fraction, kind):
    if kind == "imagej":
        src = _tif(tmp_path / "a.tif", _data())
    elif kind == "zlib":
        src = _tif(tmp_path / "a.tif", _data(), compression="zlib", metadata={"axes": "ZYX"})
    else:
        src = _tif(tmp_path / "a.tif", _data((6, 64, 64)), compression="zlib", tile=(16, 16), metadata={"axes": "ZYX"})
    raw = src.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: int(len(raw) * fraction)])
    try:
        vol = open_volume(cut)
    except InputError:
        pass
    else:  # only what lies after the image data (trailing metadata) was cut: the pixels are all there
        np.testing.assert_array_equal(np.asarray(vol.data), tifffile.imread(src))
        return
    out = tmp_path / "o.tif"
    _refused(["reconstruct", cut, "--method", "cubic", "-o", out, "-q"], capsys, str(cut))
    _not_finished(out)


@pytest.mark.parametrize("value", [0, 1, 9, 0xFFFFFFF0])
def test_a_tiff_whose_first_page_offset_is_overwritten_is_refused(tmp_path, capsys, value):
    tif = _tif(tmp_path / "a.tif", _data())
    raw = bytearray(tif.read_bytes())
    raw[4:8] = struct.pack("<I", value)
    tif.write_bytes(bytes(raw))
    _refused(["info", tif], capsys, str(tif))


def _absurd(src: Path, dst: Path, size: int = 4_000_000_000) -> Path:
    """``src`` with its ImageWidth and ImageLength tags set to ``size`` (made LONG where they were SHORT)."""
    raw = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tf:
        for page in tf.pages:
            for tag in page.tags.values():
                if tag.code in (256, 257):
                    raw[tag.offset + 2: tag.offset + 4] = struct.pack("<H", 4)
                    raw[tag.offset + 8: tag.offset + 12] = struct.pack("<I", size)
    dst.write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("compressed", [False, True])
def test_a_tiff_declaring_absurd_dimensions_is_refused_at_opening(tmp_path, capsys, compressed):
    kwargs = {"compression": "zlib", "metadata": {"axes": "ZYX"}} if compressed else {}
    tif = _absurd(_tif(tmp_path / "a.tif", _data(), **kwargs), tmp_path / "absurd.tif")
    err = _refused(["info", tif, "--fast"], capsys, str(tif), "does not fit the file", "4000000000")
    assert "too small" not in err


# ---- 4. damaged or edited model files -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("model")
    tif = _tif(root / "x.tif", _data())
    path = root / "m.emsr.pt"
    assert cli.main(["train", str(tif), "-o", str(path), "--steps", "1", "--size", "tiny", "--patch", "24",
                     "--device", "cpu", "-q"]) == 0
    return tif, torch.load(path, map_location="cpu", weights_only=True)


def _config(key, value=None, delete=False):
    def change(p):
        c = json.loads(p["config"])
        if delete:
            c.pop(key)
        else:
            c[key] = value
        p["config"] = json.dumps(c)
    return change


def _weight(change):
    def edit(p):
        k = next(iter(p["state_dict"]))
        p["state_dict"][k] = change(p["state_dict"][k])
    return edit


MODELS = {
    "a weight missing": lambda p: p["state_dict"].pop(next(iter(p["state_dict"]))),
    "an extra weight": lambda p: p["state_dict"].__setitem__("bogus.weight", __import__("torch").zeros(3)),
    "a weight of the wrong shape": _weight(lambda t: t.reshape(-1)[:5].clone()),
    "integer weights": _weight(lambda t: t.to(__import__("torch").int64)),
    "boolean weights": _weight(lambda t: t.to(__import__("torch").bool)),
    "complex weights": _weight(lambda t: t.to(__import__("torch").complex64)),
    "no factor": _config("factor", delete=True),
    "no norm": _config("norm", delete=True),
    "no order": _config("order", delete=True),
    "order 5": _config("order", 5),
    "order 2.5": _config("order", 2.5),
    "order a word": _config("order", "cubic"),
    "axis a letter": _config("axis", "z"),
    "norm a dict": _config("norm", {"low": 0, "high": 1}),
    "stages a number": _config("stages", 5),
    "stages of numbers": _config("stages", [1]),
    "unknown network": _config("net", "nonet"),
    "network options a list": _config("net_kwargs", [1]),
    "config not JSON": lambda p: p.__setitem__("config", "{not json"),
    "config a list": lambda p: p.__setitem__("config", "[1, 2]"),
    "config a number": lambda p: p.__setitem__("config", 5),
    "state_dict a list": lambda p: p.__setitem__("state_dict", [1, 2]),
    "state_dict None": lambda p: p.__setitem__("state_dict", None),
    "state_dict missing": lambda p: p.pop("state_dict"),
    "weights that are numbers": lambda p: p.__setitem__("state_dict", {k: 1 for k in p["state_dict"]}),
    "weights that are lists": lambda p: p.__setitem__("state_dict",
                                                      {k: v.tolist() for k, v in p["state_dict"].items()}),
    "weights with number keys": lambda p: p.__setitem__("state_dict", dict(enumerate(p["state_dict"].values()))),
    "stage weights a number": lambda p: p.__setitem__("stages", 5),
    "stage weights a list": lambda p: p.__setitem__("stages", [1]),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_a_damaged_model_file_ends_in_model_error(trained, tmp_path, capsys, name):
    import torch

    tif, payload = trained
    payload = copy.deepcopy(payload)
    MODELS[name](payload)
    model = tmp_path / "bad.pt"
    torch.save(payload, model)
    out = tmp_path / "o.tif"
    err = _refused(["apply", tif, "--model", model, "-o", out, "-q", "--device", "cpu"], capsys)
    assert "model" in err or "network" in err, err
    _not_finished(out)


@pytest.mark.parametrize("payload", [[1, 2], "text", None, 3.5])
def test_a_model_file_that_is_not_a_table_is_refused(trained, tmp_path, capsys, payload):
    import torch

    torch.save(payload, tmp_path / "bad.pt")
    _refused(["apply", trained[0], "--model", tmp_path / "bad.pt", "-o", tmp_path / "o.tif", "-q"], capsys,
             "not a napari-emsr model")
    (tmp_path / "junk.pt").write_bytes(b"junk" * 100)
    _refused(["apply", trained[0], "--model", tmp_path / "junk.pt", "-o", tmp_path / "o.tif", "-q"], capsys,
             "not a napari-emsr model")
    _not_finished(tmp_path / "o.tif")


# ---- 5. NaN is not "no texture" -----------------------------------------------------------------------------

def test_info_on_a_stack_with_nan_says_nan(tmp_path, capsys):
    data = np.random.default_rng(1).random((9, 48, 48), dtype=np.float32)
    data[3, 5, 5] = np.nan
    err = _refused(["info", _tif(tmp_path / "nan.tif", data)], capsys, "NaN")
    assert "texture" not in err


# ---- 6. seeded fuzzing --------------------------------------------------------------------------------------

def _mutate_bytes(raw: bytes, rng: np.random.Generator) -> bytes:
    """One random damage to a TIFF: cut short, bytes flipped, a word of a page header overwritten, or bytes
    inserted."""
    b = bytearray(raw)
    op = int(rng.integers(5))
    if op == 0:
        return bytes(b[: int(rng.integers(8, len(b)))])
    if op == 1:
        for i in rng.integers(0, len(b), int(rng.integers(1, 16))):
            b[int(i)] ^= int(rng.integers(1, 256))
        return bytes(b)
    if op in (2, 3):
        # an IFD entry (tag, type, count, value) of the first page, or the header's first-page offset
        ifd = struct.unpack("<I", bytes(b[4:8]))[0]
        n = struct.unpack("<H", bytes(b[ifd: ifd + 2]))[0] if ifd + 2 <= len(b) else 0
        pos = ifd + 2 + 12 * int(rng.integers(max(n, 1))) + int(rng.choice([2, 4, 8])) if op == 2 and n else 4
        pos = min(pos, len(b) - 4)
        word = int(rng.choice([0, 1, 2, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, len(b), len(b) * 2, int(rng.integers(2**32))]))
        b[pos: pos + 4] = struct.pack("<I", word)
        return bytes(b)
    at = int(rng.integers(len(b)))
    return bytes(b[:at] + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes() + b[at:])


_WRONG = [None, True, 0, -1, 1.5, 1e308, "x", "", [], {}, [1, "a"], {"a": 1}, [[1]], "nan"]


def _mutate_json(doc, rng: np.random.Generator):
    """One random edit of a JSON document: a value replaced by one of the wrong type, a key deleted, a value
    wrapped in a list, or a list emptied."""
    doc = copy.deepcopy(doc)
    spots = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                spots.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                spots.append((node, i))
                walk(v)

    walk(doc)
    if not spots:
        return {"multiscales": _WRONG[int(rng.integers(len(_WRONG)))]}
    parent, key = spots[int(rng.integers(len(spots)))]
    op = int(rng.integers(4))
    if op == 0:
        parent[key] = copy.deepcopy(_WRONG[int(rng.integers(len(_WRONG)))])
    elif op == 1 and isinstance(parent, dict):
        del parent[key]
    elif op == 2:
        parent[key] = [parent[key]]
    else:
        parent[key] = [] if isinstance(parent[key], list) else {}
    return doc


def _outcome(path: Path) -> str:
    """'ok', 'error' (an EMSRError) or 'bug: <exception>' for opening ``path`` and reading a few planes."""
    try:
        vol = open_volume(path)
        n = vol.shape[0]
        for z in sorted({0, n // 2, n - 1}):
            np.asarray(vol.data[z])
        return "ok"
    except EMSRError:
        return "error"
    except Exception as exc:  # the point of the test: any other exception is a bug
        return f"bug: {type(exc).__name__}: {exc}"[:300]


# NOTE: a damaged TIFF might make a reader loop; the TIFF cases run in a child process, each under an alarm,
# and the whole run under a timeout.
_TIFF_CHILD = textwrap.dedent("""
    import json, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_hostile import _outcome

    def alarm(*_):
        raise TimeoutError("no answer within {per_case} s")

    signal.signal(signal.SIGALRM, alarm)
    for p in sorted(Path({folder!r}).glob("*.tif")):
        signal.alarm({per_case})
        try:
            got = _outcome(p)
        except TimeoutError as exc:
            got = "hang: " + str(exc)
        signal.alarm(0)
        print(json.dumps([p.name, got]), flush=True)
""")


def _fuzz_tiffs(folder: Path, n: int, seed: int) -> None:
    bases = [
        _tif(folder / "base_ij.tif", _data((6, 32, 32))).read_bytes(),
        _tif(folder / "base_zlib.tif", _data((6, 32, 32)), compression="zlib", metadata={"axes": "ZYX"}).read_bytes(),
        _tif(folder / "base_tiled.tif", _data((6, 32, 32)), compression="zlib", tile=(16, 16),
             metadata={"axes": "ZYX"}).read_bytes(),
    ]
    for f in folder.glob("base_*.tif"):
        f.unlink()
    rng = np.random.default_rng(seed)
    for i in range(n):
        raw = bases[i % len(bases)]
        for _ in range(int(rng.integers(1, 3))):
            raw = _mutate_bytes(raw, rng)
        (folder / f"m{i:04d}.tif").write_bytes(raw)


def _run_tiff_fuzz(folder: Path, per_case: int = 10, timeout: int = 300) -> dict[str, str]:
    code = _TIFF_CHILD.format(tests=str(Path(__file__).parent), folder=str(folder), per_case=per_case)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    results = dict(json.loads(line) for line in run.stdout.splitlines() if line.startswith("["))
    assert run.returncode == 0, run.stderr[-3000:]
    return results


def _run_zarr_fuzz(store: Path, n: int, seed: int) -> dict[str, str]:
    attrs = json.loads((store / ".zattrs").read_text())
    rng = np.random.default_rng(seed)
    results = {}
    for i in range(n):
        doc = attrs
        for _ in range(int(rng.integers(1, 3))):
            doc = _mutate_json(doc, rng)
        (store / ".zattrs").write_text(json.dumps(doc))
        results[f"m{i:04d}: {json.dumps(doc)[:200]}"] = _outcome(store)
    return results


def _bugs(results: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in results.items() if not v.startswith(("ok", "error"))}


def test_fuzzed_tiffs_end_in_a_volume_or_our_error(tmp_path):
    _fuzz_tiffs(tmp_path, 150, seed=20240601)
    results = _run_tiff_fuzz(tmp_path)
    assert len(results) == 150
    assert not _bugs(results), _bugs(results)


def test_fuzzed_ome_zarr_metadata_ends_in_a_volume_or_our_error(tmp_path):
    store = tmp_path / "in.zarr"
    write_volume(store, _data((6, 32, 32)), (40, 10, 10), pyramid=2)
    results = _run_zarr_fuzz(store, 150, seed=20240601)
    assert not _bugs(results), _bugs(results)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzing_at_length(tmp_path, seed):
    _fuzz_tiffs(tmp_path, 1000, seed=seed)
    assert not _bugs(_run_tiff_fuzz(tmp_path, timeout=600))
    store = tmp_path / "in.zarr"
    write_volume(store, _data((6, 32, 32)), (40, 10, 10), pyramid=2)
    assert not _bugs(_run_zarr_fuzz(store, 1000, seed=seed))


def test_the_fuzzing_mutators_damage_something():
    base = b"II*\x00" + struct.pack("<I", 8) + bytes(200)
    rng = np.random.default_rng(0)
    assert sum(_mutate_bytes(base, rng) != base for _ in range(50)) >= 45
    doc = {"a": [1, {"b": "c"}]}
    assert sum(_mutate_json(doc, rng) != doc for _ in range(50)) >= 40


def test_an_absurd_voxel_size_in_the_file_is_refused_not_an_overflow(tmp_path, capsys):
    """scale (1e308, 1e308, 1): the factor from the file overflows; refused with the factor's message."""
    src = write_volume(tmp_path / "huge.ome.zarr", np.zeros((6, 16, 16), np.uint8), (1e308, 1e308, 1.0))
    assert cli.main(["reconstruct", str(src), "--method", "cubic", "-o", str(tmp_path / "o.tif"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "anisotropy factor" in err and "Traceback" not in err
