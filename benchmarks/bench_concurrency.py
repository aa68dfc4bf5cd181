"""Concurrent writers: pairs of real ``emsr`` processes writing the same TIFF, zarr store or model file at once.

    python benchmarks/bench_concurrency.py                 # 10 pairs per kind (TIFF, zarr, model), seed 0
    python benchmarks/bench_concurrency.py --pairs 3 --seed 1

For each pair, process A starts, and process B starts a random 0-``--spread`` seconds later, both writing the same
output with ``--overwrite`` (so that only the other writer, never an existing file, can stop them): A with one
result (cubic interpolation; a model trained with seed 1) and B with another (linear; seed 2). Then each pair is
classified:

- ``ok``: every process exited 0 or 2, every exit 2 said that another process is writing the output, and the output
  is complete and bit-equal to the result of the process that finished last among those that exited 0;
- ``corrupt``: the output cannot be read (or a model cannot be loaded);
- ``mixed``: the output is readable but equals neither result, or is the result of a process that did not finish
  last or did not succeed;
- ``lost``: no process succeeded, or the output is missing although one did;
- ``crash``: a process exited with another code (a traceback, a signal such as SIGBUS) or exit 2 with another message.

Prints one line per kind with the counts and, at the end, one JSON line. Exit code 1 when anything but ``ok`` was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np

BUSY = "being written by another process"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=10, help="pairs of writers per kind")
    ap.add_argument("--kinds", nargs="+", default=["tiff", "zarr", "model"], choices=["tiff", "zarr", "model"])
    ap.add_argument("--spread", type=float, default=1.5, help="B starts 0..spread seconds after A")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="emsr-concurrency-"))
    src = _make_input(work)
    results: dict[str, dict] = {}
    try:
        for kind in a.kinds:
            refs = _references(kind, work, src)
            counts: Counter = Counter()
            examples: dict[str, str] = {}
            t0 = time.perf_counter()
            for i in range(a.pairs):
                got, detail, refused = _pair(kind, work, src, refs, rng.uniform(0, a.spread))
                counts[got] += 1
                counts["refused"] += refused
                if got != "ok":
                    examples.setdefault(got, f"pair {i}: {detail}"[:600])
            dt = time.perf_counter() - t0
            results[kind] = {"pairs": a.pairs, **{k: counts[k] for k in ("ok", "corrupt", "mixed", "lost", "crash")},
                             "losers_refused": counts["refused"],
                             "seconds": round(dt, 1), "examples": examples}
            r = results[kind]
            print(f"{kind:<6} pairs {a.pairs:3d}: ok {r['ok']:3d}, corrupt {r['corrupt']}, mixed {r['mixed']}, "
                  f"lost {r['lost']}, crash {r['crash']}; refused: {r['losers_refused']}  ({dt:.0f} s)",
                  flush=True)
            for ex in examples.values():
                print("   ", ex, flush=True)
    finally:
        if a.keep:
            print("work folder:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    bad = sum(r[k] for r in results.values() for k in ("corrupt", "mixed", "lost", "crash"))
    print(json.dumps({"date": date.today().isoformat(), "device": "cpu", "seed": a.seed, "spread_s": a.spread,
                      "kinds": {k: {kk: v for kk, v in r.items() if kk != "examples"} for k, r in results.items()},
                      "bad": bad}))
    return 1 if bad else 0


def _emsr(*args: str) -> list[str]:
    return [sys.executable, "-c", "from napari_emsr.cli import main; raise SystemExit(main())", *args]


def _make_input(work: Path) -> Path:
    """A 64 x 384 x 384 uint8 stack, voxel size 40 x 10 x 10 nm (F = 4): the bundled crop's every 4th plane,
    mirrored into a larger field, so that a write takes a few seconds and two of them overlap."""
    import tifffile

    from napari_emsr.sample import _ground_truth

    gt = _ground_truth()
    sub = gt[::4]
    stack = np.pad(sub, ((0, 64 - sub.shape[0]), (0, 384 - sub.shape[1]), (0, 384 - sub.shape[2])), mode="symmetric")
    p = work / "in.tif"
    tifffile.imwrite(p, stack, imagej=True, resolution=(0.1, 0.1), metadata={"spacing": 40.0, "unit": "nm"})
    return p


def _command(kind: str, who: str, src: Path, out: Path) -> list[str]:
    if kind == "model":
        seed = "1" if who == "A" else "2"
        return _emsr("train", str(src), "-o", str(out), "--overwrite", "--net", "rescnn", "--size", "tiny",
                     "--steps", "30", "--patch", "32", "--batch", "2", "--val-every", "1000", "--seed", seed, "-q")
    method = "cubic" if who == "A" else "linear"
    return _emsr("reconstruct", str(src), "--method", method, "-o", str(out), "--overwrite", "-q")


def _out_name(kind: str) -> str:
    return {"tiff": "out.tif", "zarr": "out.zarr", "model": "m.emsr.pt"}[kind]


def _read(kind: str, path: Path):
    """The output's content as something comparable: the volume, or the model's weights."""
    if kind == "model":
        from napari_emsr.model import load_model

        m = load_model(path)
        return {k: v.detach().cpu().float().numpy() for k, v in m.state_dict.items()}
    from napari_emsr.io import open_volume

    return np.asarray(open_volume(path).data.compute())


def _equal(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    return x.shape == y.shape and np.array_equal(x, y)


def _references(kind: str, work: Path, src: Path) -> dict:
    """Each writer's result, written alone, one after the other."""
    refs = {}
    for who in ("A", "B"):
        out = work / f"ref{who}_{_out_name(kind)}"
        r = subprocess.run(_command(kind, who, src, out), capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"the reference run {who} for {kind} failed:\n{r.stderr[-2000:]}")
        refs[who] = _read(kind, out)
    if _equal(refs["A"], refs["B"]):
        raise SystemExit(f"the two {kind} results are equal: the benchmark could not tell them apart")
    return refs


def _pair(kind: str, work: Path, src: Path, refs: dict, delay: float) -> tuple[str, str, int]:
    folder = Path(tempfile.mkdtemp(dir=work))
    out = folder / _out_name(kind)
    procs = {}
    t_start = {}
    procs["A"] = subprocess.Popen(_command(kind, "A", src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
    t_start["A"] = time.perf_counter()
    time.sleep(delay)
    procs["B"] = subprocess.Popen(_command(kind, "B", src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
    t_start["B"] = time.perf_counter()
    ended: dict[str, float] = {}
    texts: dict[str, str] = {}
    while len(ended) < 2:
        for who, p in procs.items():
            if who not in ended and p.poll() is not None:
                ended[who] = time.perf_counter()
                so, se = p.communicate()
                texts[who] = (so or "") + (se or "")
        time.sleep(0.01)
    codes = {who: p.returncode for who, p in procs.items()}
    detail = f"delay {delay:.2f} s, exit codes {codes}, " + " | ".join(
        f"{w}: {texts[w].strip().splitlines()[-1] if texts[w].strip() else ''}" for w in texts)
    refused = sum(1 for w, c in codes.items() if c == 2 and BUSY in texts[w])
    return (*_classify(kind, out, folder, refs, codes, texts, ended, detail), refused)


def _classify(kind, out, folder, refs, codes, texts, ended, detail) -> tuple[str, str]:
    try:
        for who, code in codes.items():
            if code not in (0, 2) or (code == 2 and BUSY not in texts[who]):
                return "crash", detail
        winners = [w for w in ("A", "B") if codes[w] == 0]
        if not winners:
            return "lost", detail
        last = max(winners, key=lambda w: ended[w])
        if not out.exists():
            return "lost", detail
        try:
            got = _read(kind, out)
        except Exception as exc:  # any reader's error: the output is corrupt
            return "corrupt", f"{detail}; read: {type(exc).__name__}: {exc}"
        if not _equal(got, refs[last]):
            return "mixed", detail
        leftovers = [c.name for c in folder.iterdir() if c.name != out.name]
        if leftovers:
            return "mixed", f"{detail}; left in the folder: {leftovers}"
        return "ok", detail
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
