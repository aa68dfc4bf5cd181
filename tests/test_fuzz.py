"""Property-based fuzzing (hypothesis) of the readers and the model loader: every input ends in a result or our
error, never another exception and never a hang.

Damaged variants of small valid files are drawn by hypothesis (which shrinks a failing one to a minimal damage):

- TIFF (ImageJ uncompressed, zlib strips, zlib tiles): cut short, bytes flipped, a field of any page's IFD entry
  (tag, type, count or value) overwritten, bytes inserted; read in full through :func:`open_volume`;
- OME-Zarr metadata: a value of the group's ``.zattrs`` or of a level's ``.zarray`` replaced by any JSON value,
  deleted, wrapped in a list or emptied;
- zarr chunks: one chunk file cut short, flipped, emptied or replaced by other bytes;
- model files: config keys missing or replaced (factor, norm, order, axis, net ...), weights missing, extra,
  reshaped, retyped or NaN, stages and the table itself replaced; applied through the real ``emsr apply``,
  which must exit 0 with a finite result of the right shape, or 2 with our message.

Each case runs under an alarm (a hang raises :class:`Hang`, a ``BaseException`` that no ``except Exception``
in the code under test can swallow); hypothesis's deadline is generous because the machine is shared. The
example counts are bounded here (about 100 in all, well under a minute); ``benchmarks/bench_fuzz.py`` runs the
same strategies at length and prints the counts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import signal
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import tifffile

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_emsr import cli  # noqa: E402
from napari_emsr.errors import EMSRError  # noqa: E402
from napari_emsr.io import open_volume, write_volume  # noqa: E402

pytestmark = pytest.mark.timeout(300)

#: Seconds one case may take before it counts as a hang.
HANG_S = 60
#: Where the inputs that crash or hang are copied (benchmarks/bench_fuzz.py --keep), None: nowhere.
KEEP: Path | None = None
#: Per-test settings of the bounded CI run: deterministic (the same examples every run), no example database
#: written into the work tree, a deadline that only a near-hang exceeds on a loaded 2-core machine (the alarm of
#: :func:`classify` catches a real hang).
CI = dict(derandomize=True, database=None, deadline=timedelta(seconds=45), print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])


class Hang(BaseException):
    """A case ran longer than its alarm (a BaseException: the code under test catches Exception in places)."""


@contextlib.contextmanager
def alarm(seconds: float | None = None):
    """Raise :class:`Hang` in this (main) thread after ``seconds`` (default :data:`HANG_S`)."""
    seconds = HANG_S if seconds is None else seconds

    def ring(*_):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def classify(fn) -> str:
    """'ok' when ``fn()`` returns, 'error' for our EMSRError, 'bug: ...' for any other exception, 'hang: ...'
    when it has not returned after :data:`HANG_S` seconds."""
    try:
        with alarm():
            fn()
        return "ok"
    except Hang as exc:
        return f"hang: {exc}"
    except EMSRError:
        return "error"
    except Exception as exc:  # the point of fuzzing: any other exception is a bug
        return f"bug: {type(exc).__name__}: {exc}"[:400]


def read_all(path: Path) -> None:
    """Open ``path`` as a volume and read every voxel (single-threaded, as small as the fuzzed files are)."""
    vol = open_volume(path)
    a = np.asarray(vol.data.compute(scheduler="synchronous"))
    assert a.shape == tuple(vol.shape)


# ---------------------------------------------------------------------------------------------- TIFF bytes
def _data(shape=(6, 32, 32)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)


def tiff_bases(folder: Path) -> list[bytes]:
    """Three small valid TIFF stacks: ImageJ uncompressed, zlib strips (plain), zlib tiles."""
    p = folder / "base.tif"
    out = []
    for kw in (dict(imagej=True, resolution=(0.1, 0.1), metadata={"spacing": 40.0, "unit": "nm", "axes": "ZYX"}),
               dict(compression="zlib", metadata={"axes": "ZYX"}),
               dict(compression="zlib", tile=(16, 16), metadata={"axes": "ZYX"})):
        tifffile.imwrite(p, _data(), **kw)
        out.append(p.read_bytes())
    p.unlink()
    return out


def ifd_fields(raw: bytes) -> list[int]:
    """Byte positions of every field (tag, type, count, value/offset) of every IFD entry of every page, and of
    every 'next IFD' pointer and the header's first-IFD offset."""
    if len(raw) < 8:
        return []
    pos = [4]
    ifd = struct.unpack("<I", raw[4:8])[0]
    seen = set()
    while 8 <= ifd < len(raw) - 2 and ifd not in seen:
        seen.add(ifd)
        n = struct.unpack("<H", raw[ifd: ifd + 2])[0]
        for i in range(n):
            e = ifd + 2 + 12 * i
            pos += [e, e + 2, e + 4, e + 8]
        nxt = ifd + 2 + 12 * n
        if nxt + 4 > len(raw):
            break
        pos.append(nxt)
        ifd = struct.unpack("<I", raw[nxt: nxt + 4])[0]
    return pos


WORDS = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 16, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]),
                  st.integers(0, 2**32 - 1))


@st.composite
def tiff_damage(draw, raw: bytes) -> bytes:
    """One damage to ``raw``: cut short, bytes flipped, an IFD field overwritten (2 or 4 bytes), or inserted."""
    b = bytearray(raw)
    op = draw(st.sampled_from(["cut", "flip", "ifd", "ifd", "insert"]))
    fields = ifd_fields(raw)
    if op == "ifd" and not fields:
        op = "flip"
    if op == "cut":
        return bytes(b[: draw(st.integers(0, len(b) - 1))])
    if op == "flip":
        for i, x in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(1, 255)), min_size=1,
                                  max_size=16)):
            b[i] ^= x
        return bytes(b)
    if op == "ifd":
        at = draw(st.sampled_from(fields))
        word = draw(WORDS)
        width = draw(st.sampled_from([2, 4]))
        at = min(at, len(b) - width)
        b[at: at + width] = struct.pack("<H" if width == 2 else "<I", word & (0xFFFF if width == 2 else 0xFFFFFFFF))
        return bytes(b)
    at = draw(st.integers(0, len(b)))
    return bytes(b[:at]) + draw(st.binary(min_size=1, max_size=64)) + bytes(b[at:])


@st.composite
def damaged_tiff(draw, bases: list[bytes]) -> bytes:
    raw = draw(st.sampled_from(bases))
    for _ in range(draw(st.integers(1, 3))):
        if len(raw) < 2:
            break
        raw = draw(tiff_damage(raw))
    return raw


def _keep(path: Path, got: str) -> str:
    """Copy ``path`` (a file or folder) to :data:`KEEP` when ``got`` is a crash or a hang."""
    if KEEP is not None and not got.startswith(("ok", "error")):
        KEEP.mkdir(parents=True, exist_ok=True)
        dst = KEEP / path.name
        if path.is_dir():
            shutil.copytree(path, dst, dirs_exist_ok=True)
        else:
            shutil.copy(path, dst)
        (KEEP / (path.name + ".txt")).write_text(got)
    return got


def tiff_case(folder: Path, raw: bytes, n: int) -> str:
    p = folder / f"f{n}.tif"
    p.write_bytes(raw)
    try:
        return _keep(p, classify(lambda: read_all(p)))
    finally:
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ zarr metadata
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=6)
    | st.sampled_from(["scale", "translation", "identity", "0", "1", "z", "space", "nanometer", "uint8", "<u1",
                       "0.4", "zstd"]),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)


def _spots(doc) -> list[tuple]:
    """(parent, key) of every value in a JSON document."""
    out = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                out.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out.append((node, i))
                walk(v)

    walk(doc)
    return out


@st.composite
def json_damage(draw, doc):
    """``doc`` with 1-3 edits: a value replaced by any JSON value, deleted, wrapped in a list, emptied, or a key
    added."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        spots = _spots(doc)
        if not spots:
            return draw(JSON)
        parent, key = draw(st.sampled_from(spots))
        op = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "empty", "add"]))
        if op == "replace":
            parent[key] = draw(JSON)
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "empty":
            parent[key] = [] if isinstance(parent[key], list) else {}
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=12))] = draw(JSON)
        else:
            parent[key] = draw(JSON)
    return doc


def zarr_base(folder: Path) -> Path:
    """A small OME-Zarr (NGFF 0.4, zarr v2) with two pyramid levels and several chunks per level."""
    store = folder / "base.ome.zarr"
    write_volume(store, _data((8, 32, 32)), (40, 10, 10), pyramid=2, chunks=(4, 16, 16))
    return store


def zarr_meta_case(base: Path, folder: Path, which: str, doc, n: int) -> str:
    """``which`` ('.zattrs' or '0/.zarray') of a copy of ``base`` replaced by ``doc``, then read in full."""
    store = folder / f"z{n}.ome.zarr"
    shutil.copytree(base, store)
    try:
        (store / which).write_text(json.dumps(doc))
        return _keep(store, classify(lambda: read_all(store)))
    finally:
        shutil.rmtree(store, ignore_errors=True)


def chunk_files(store: Path) -> list[str]:
    return sorted(str(f.relative_to(store)) for f in store.rglob("*") if f.is_file() and not f.name.startswith("."))


@st.composite
def chunk_damage(draw, raw: bytes) -> bytes:
    op = draw(st.sampled_from(["cut", "flip", "empty", "replace", "append"]))
    if op == "cut":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if op == "flip":
        b = bytearray(raw)
        for i, x in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(1, 255)), min_size=1,
                                  max_size=8)):
            b[i] ^= x
        return bytes(b)
    if op == "empty":
        return b""
    if op == "append":
        return raw + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(max_size=256))


def zarr_chunk_case(base: Path, folder: Path, chunk: str, raw: bytes, n: int) -> str:
    store = folder / f"c{n}.ome.zarr"
    shutil.copytree(base, store)
    try:
        (store / chunk).write_bytes(raw)
        return _keep(store, classify(lambda: read_all(store)))
    finally:
        shutil.rmtree(store, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- models
def model_base(folder: Path):
    """A float32 TIFF stack (F = 4) and the payload of a tiny model trained on it for one step."""
    import torch

    tif = folder / "x.tif"
    data = np.random.default_rng(1).random((9, 32, 32), dtype=np.float32)
    tifffile.imwrite(tif, data, imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 40.0, "unit": "nm", "axes": "ZYX"})
    path = folder / "m.emsr.pt"
    assert cli.main(["train", str(tif), "-o", str(path), "--net", "rescnn", "--steps", "1", "--size", "tiny",
                     "--patch", "24", "--batch", "2", "--device", "cpu", "-q"]) == 0
    return tif, torch.load(path, map_location="cpu", weights_only=True)


DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int8", "uint8", "bool", "complex64"]
SPECIAL = st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e38, 1e-45])
CONFIG_KEYS = ["factor", "norm", "order", "axis", "net", "net_kwargs", "method", "stages", "step", "profile",
               "dtype", "history", "version"]


@st.composite
def model_damage(draw, payload: dict) -> dict:
    """``payload`` (a model file's table) with 1-3 damages."""
    import torch

    p = copy.deepcopy(payload)

    def tensor(shape, dtype):
        return torch.zeros(shape, dtype=getattr(torch, dtype))

    for _ in range(draw(st.integers(1, 3))):
        sd = p.get("state_dict")
        keys = sorted(sd) if isinstance(sd, dict) else []
        ops = ["drop_config", "set_config", "set_config", "top"]
        if keys:
            ops += ["drop_weight", "extra_weight", "reshape_weight", "retype_weight", "poison_weight", "poison_weight"]
        op = draw(st.sampled_from(ops))
        try:
            config = json.loads(p["config"])
        except Exception:
            config = None
        if op in ("drop_config", "set_config") and isinstance(config, dict):
            key = draw(st.sampled_from(CONFIG_KEYS + ["bogus"]))
            if op == "drop_config":
                config.pop(key, None)
            else:
                config[key] = draw(JSON | SPECIAL | st.lists(SPECIAL, min_size=2, max_size=2))
            p["config"] = json.dumps(config)
        elif op == "top":
            key = draw(st.sampled_from(["config", "state_dict", "stages", "format"]))
            if draw(st.booleans()):
                p.pop(key, None)
            else:
                p[key] = draw(JSON)
        elif op == "drop_weight":
            sd.pop(draw(st.sampled_from(keys)))
        elif op == "extra_weight":
            name = draw(st.sampled_from(["bogus.weight", keys[0] + ".x", "head.bias"]) | st.text(max_size=8))
            sd[name] = tensor(draw(st.lists(st.integers(0, 4), max_size=3)), draw(st.sampled_from(DTYPES)))
        elif op == "reshape_weight":
            k = draw(st.sampled_from(keys))
            sd[k] = tensor(draw(st.lists(st.integers(0, 5), max_size=5)), "float32")
        elif op == "retype_weight":
            k = draw(st.sampled_from(keys))
            sd[k] = sd[k].to(getattr(torch, draw(st.sampled_from(DTYPES))))
        else:
            k = draw(st.sampled_from(keys))
            if sd[k].is_floating_point() and sd[k].numel():
                flat = sd[k].reshape(-1).clone()
                flat[draw(st.integers(0, flat.numel() - 1))] = draw(SPECIAL)
                sd[k] = flat.reshape(sd[k].shape)
    return p


def model_case(tif: Path, payload: dict, folder: Path, n: int) -> str:
    """Save ``payload`` as a model file and apply it with the real CLI: exit 0 with a finite output of the right
    shape ('ok'), exit 2 ('error'), or anything else ('bug: ...')."""
    import torch

    model, out = folder / f"m{n}.pt", folder / f"o{n}.tif"
    torch.save(payload, model)

    def apply():
        with contextlib.redirect_stderr(None), contextlib.redirect_stdout(None):
            rc = cli.main(["apply", str(tif), "--model", str(model), "-o", str(out), "-q", "--device", "cpu"])
        if rc == 2:
            if out.exists():
                raise AssertionError("refused, yet an output was left")
            raise _Refused
        if rc != 0:
            raise AssertionError(f"exit code {rc}")
        a = tifffile.imread(out)
        if a.shape != (33, 32, 32) or not np.isfinite(a).all():
            raise AssertionError(f"exit 0 but the output is {a.shape}, finite: {bool(np.isfinite(a).all())}")

    try:
        got = _keep(model, classify(apply))
    finally:
        model.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    return got


class _Refused(EMSRError):
    """The CLI returned 2 (it printed our message): counted as 'error'."""


# -------------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory(prefix="emsr-fuzz-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def tiffs(work):
    return tiff_bases(work)


@pytest.fixture(scope="module")
def zbase(work):
    return zarr_base(work)


@pytest.fixture(scope="module")
def mbase(work):
    return model_base(work)


def _counter():
    n = [0]

    def nxt():
        n[0] += 1
        return n[0]

    return nxt


def test_the_bases_read_and_the_damages_change_them(tiffs, zbase, mbase, work):
    for i, raw in enumerate(tiffs):
        assert tiff_case(work, raw, 10_000 + i) == "ok"
    assert len(ifd_fields(tiffs[0])) > 6 * 4 * 8  # every page's entries, not just the first page's
    assert classify(lambda: read_all(zbase)) == "ok"
    assert len(chunk_files(zbase)) >= 8
    assert model_case(mbase[0], mbase[1], work, 10_000) == "ok"
    # the strategies damage: a NaN weight and a missing factor are refused
    import torch

    p = copy.deepcopy(mbase[1])
    k = next(iter(p["state_dict"]))
    p["state_dict"][k] = torch.full_like(p["state_dict"][k], float("nan"))
    assert model_case(mbase[0], p, work, 10_001) == "error"
    c = json.loads(mbase[1]["config"])
    c.pop("factor")
    assert model_case(mbase[0], {**mbase[1], "config": json.dumps(c)}, work, 10_002) == "error"


def test_fuzzed_tiffs(tiffs, work):
    nxt = _counter()

    @settings(max_examples=40, **CI)
    @given(raw=st.data())
    def check(raw):
        got = tiff_case(work, raw.draw(damaged_tiff(tiffs)), nxt())
        assert got in ("ok", "error"), got

    check()


def test_fuzzed_ome_zarr_metadata(zbase, work):
    nxt = _counter()
    attrs = json.loads((zbase / ".zattrs").read_text())
    zarray = json.loads((zbase / "0" / ".zarray").read_text())

    @settings(max_examples=30, **CI)
    @given(data=st.data())
    def check(data):
        which = data.draw(st.sampled_from([".zattrs", ".zattrs", "0/.zarray"]))
        doc = data.draw(json_damage(attrs if which == ".zattrs" else zarray))
        got = zarr_meta_case(zbase, work, which, doc, nxt())
        assert got in ("ok", "error"), got

    check()


def test_fuzzed_zarr_chunks(zbase, work):
    nxt = _counter()
    files = chunk_files(zbase)

    @settings(max_examples=15, **CI)
    @given(data=st.data())
    def check(data):
        chunk = data.draw(st.sampled_from(files))
        raw = data.draw(chunk_damage((zbase / chunk).read_bytes()))
        got = zarr_chunk_case(zbase, work, chunk, raw, nxt())
        assert got in ("ok", "error"), got

    check()


def test_fuzzed_model_files(mbase, work):
    tif, payload = mbase
    nxt = _counter()

    @settings(max_examples=25, **CI)
    @given(data=st.data())
    def check(data):
        got = model_case(tif, data.draw(model_damage(payload)), work, nxt())
        assert got in ("ok", "error"), got

    check()


# ------------------------------------------------------------------------------------ what fuzzing has found
def test_a_page_chain_that_points_back_is_refused_not_a_hang(work, capsys):
    """Found by test_fuzzed_tiffs (shrunk by hand): one IFD of 14 entries at byte 8 whose next-page pointer
    points into itself (byte 12). tifffile logs 'invalid circular reference' and its series detection then looped
    forever; the file is refused at opening now."""
    raw = bytearray(7395)
    for at, value in {0: 73, 1: 73, 2: 42, 4: 8, 8: 14, 11: 1, 12: 4, 14: 1, 60: 89, 62: 8, 176: 2, 178: 12}.items():
        raw[at] = value
    p = work / "loop.tif"
    p.write_bytes(bytes(raw))
    with alarm(60):
        with pytest.raises(EMSRError, match="circular reference"):
            open_volume(p)
        assert cli.main(["info", str(p)]) == 2
    assert "damaged" in capsys.readouterr().err


def test_a_model_with_bfloat16_weights_is_applied(mbase, work):
    """Found by test_fuzzed_model_files: bfloat16 weights broke the export's fingerprint (numpy has no
    bfloat16); they are loaded into the float32 network and applied like any other."""
    import torch

    p = copy.deepcopy(mbase[1])
    p["state_dict"] = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in p["state_dict"].items()}
    assert model_case(mbase[0], p, work, 20_000) == "ok"
