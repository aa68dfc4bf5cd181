"""Paired LR/HR lateral super-resolution on the medulla volume: EMSR, AEANet, UFormer and ResCNN against bicubic.

The medulla FIB-SEM volume (10 nm isotropic) is the truth. Its xy planes are degraded with paper 002's recipe II
(random blur and noise, bicubic down-sampling by the factor, noise) into an LR "acquisition" of every plane,
with its own noise. Each network is trained by the paired method on the first planes and tested on held-out
planes at the end of the stack (never seen), in two set-ups:

- ``recipe II``: the HR training planes alone, LR made from them by recipe II during training (synthetic pairs);
- ``real pair``: the LR acquisition and an HR acquisition with its own noise (sigma 5 / 255) of the training
  planes, registered, as two real acquisitions would be (the HR reference is noisy, as in paper 002).

Every network gets the same number of steps (``--steps``), the same wall-clock minutes (``--minutes``) or the same
CPU minutes (``--cpu-minutes``: the training process's CPU time, :func:`time.process_time`, so a loaded, shared
machine gives every network the same compute; use it with ``--threads 1``), the same patches, batch and seed.
Each row prints its steps, training CPU seconds and wall seconds. ``--json`` writes the rows and the header;
``--merge`` prints one table from several such files (one run per factor or network keeps each process short).
Scores on the held-out planes against the truth: PSNR (dB), SSIM, and the FRC resolution (nm; the 1/7 crossing,
lower is finer), each the mean over the test planes. ``bicubic`` is the LR interpolated onto the HR grid (cubic
B-spline: the network input). The device is printed with the table.

Examples::

    nice -n 10 python benchmarks/bench_paired.py --steps 60 --size tiny
    nice -n 10 python benchmarks/bench_paired.py --factors 2 --nets emsr --cpu-minutes 2 --threads 1 --json x2-emsr.json
    python benchmarks/bench_paired.py --merge x2-*.json x3-*.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETS = ("emsr", "aeanet", "uformer", "rescnn")


class _CpuClock:
    """Stands in for the ``time`` module inside :mod:`napari_emsr.train`: its ``perf_counter`` is this process's CPU
    time, so the trainer's minute budget (and the learning-rate schedule that follows it) counts CPU minutes."""

    perf_counter = staticmethod(time.process_time)

    def __getattr__(self, name):
        return getattr(time, name)


@contextlib.contextmanager
def cpu_clock(active: bool = True):
    """While active, the trainer's ``minutes`` budget is a CPU-time budget (the library is unchanged)."""
    import napari_emsr.train as train_mod

    old = train_mod.time
    if active:
        train_mod.time = _CpuClock()
    try:
        yield
    finally:
        train_mod.time = old


def describe_device(threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, {threads} torch thread(s), "
            f"load average {load:.1f} at start")


def _truth(path: str | None) -> np.ndarray:
    import tifffile

    p = Path(path) if path else ROOT / "src" / "napari_emsr" / "data" / "medulla_gt_129x192x192.tif"
    return np.asarray(tifffile.imread(p))


def _acquire(planes: np.ndarray, factor: float, seed: int) -> np.ndarray:
    """The LR acquisition: recipe II of each plane (own blur and noise), uint8."""
    from napari_emsr.methods.paired.pairs import degrade

    lr = degrade(planes.astype(np.float32) / 255.0, factor, "II", np.random.default_rng(seed))
    return np.clip(np.rint(lr * 255.0), 0, 255).astype(np.uint8)


def _scores(truth: np.ndarray, test: np.ndarray, pixel_nm: float) -> dict:
    from napari_emsr.metrics import frc_resolution, psnr, ssim

    frc = [pixel_nm / max(frc_resolution(t.astype(np.float32), r.astype(np.float32)), 1e-6)
           for t, r in zip(truth, test)]
    return {"psnr": psnr(truth, test, data_range=255), "ssim": float(np.mean([ssim(t, r, data_range=255)
                                                                               for t, r in zip(truth, test)])),
            "frc_nm": float(np.mean(frc))}


def _bicubic(lr: np.ndarray, shape: tuple[int, int], factor: float) -> np.ndarray:
    from napari_emsr.methods.paired.pairs import upsample

    return np.clip(np.rint(upsample(lr.astype(np.float32), shape, factor)), 0, 255).astype(np.uint8)


def run(args) -> list[dict]:
    import torch

    from napari_emsr.methods.paired import as_stack, lr_source
    from napari_emsr.methods.paired.apply import lateral
    from napari_emsr.train import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    gt = _truth(args.data)
    nz = gt.shape[0]
    test_z = np.arange(nz - args.test_planes, nz)
    train_z = np.arange(0, min(args.train_planes, nz - args.test_planes - 4))
    rows = []
    for factor in args.factors:
        n = int(gt.shape[1] // factor)
        side = int(round(n * factor))
        truth = gt[:, :side, :side]
        lr_all = _acquire(truth, factor, seed=1)
        hr_noisy = np.clip(np.rint(truth + np.random.default_rng(2).normal(0, 5.0, truth.shape)), 0, 255)
        hr_noisy = hr_noisy.astype(np.uint8)
        test_truth = truth[test_z]
        base = _scores(test_truth, _bicubic(lr_all[test_z], (side, side), factor), 10.0)
        rows.append({"factor": factor, "setup": "-", "net": "bicubic", **base, "seconds": 0.0, "cpu_s": 0.0,
                     "steps": 0})
        for setup in args.setups:
            if setup == "recipe II":
                hr, options = as_stack(truth[train_z]), {"recipe": "II"}
            else:
                hr, options = as_stack(hr_noisy[train_z]), {"lr_image": lr_source(lr_all[train_z])}
            for net in args.nets:
                minutes = args.cpu_minutes or args.minutes
                cfg = TrainConfig(method="paired", factor=factor, net=net, size=args.size, steps=args.steps,
                                  minutes=minutes, patch=args.patch, batch=args.batch, seed=args.seed,
                                  val_every=max(1, args.steps // 2), options=options, threads=args.threads,
                                  device="cpu")
                t0, c0 = time.perf_counter(), time.process_time()
                with cpu_clock(bool(args.cpu_minutes)):
                    trainer = Trainer(hr, cfg)
                    for _ in trainer.run():
                        pass
                secs, cpu = time.perf_counter() - t0, time.process_time() - c0
                out = np.asarray(lateral(lr_all[test_z], trainer.model, device="cpu").compute(scheduler="sync"))
                sc = _scores(test_truth, out[:, :side, :side], 10.0)
                rows.append({"factor": factor, "setup": setup, "net": net, "size": args.size, **sc, "seconds": secs,
                             "cpu_s": cpu, "steps": trainer.step})
                print(f"  x{factor:g} {setup:<9} {net:<8} PSNR {sc['psnr']:.2f}  SSIM {sc['ssim']:.3f}  "
                      f"FRC {sc['frc_nm']:.1f} nm  ({trainer.step} steps, {cpu:.0f} CPU s, {secs:.0f} wall s)",
                      file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """The markdown table: per factor the bicubic row first, then each set-up's networks (in the order given)."""
    head = ("| factor | set-up | network | PSNR (dB) | SSIM | FRC res. (nm) | gain vs bicubic (dB) | steps | "
            "train CPU s | train wall s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    base = {r["factor"]: r for r in rows if r["net"] == "bicubic"}
    setups = ["-"] + [s for s in dict.fromkeys(r["setup"] for r in rows) if s != "-"]
    for factor in sorted(base):
        for setup in setups:
            for r in rows:
                if r["factor"] != factor or r["setup"] != setup:
                    continue
                gain = r["psnr"] - base[factor]["psnr"]
                name = f"{r['net']}/{r['size']}" if r.get("size") else r["net"]
                lines.append(f"| x{factor:g} | {setup} | {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                             f"{r['frc_nm']:.1f} | {gain:+.2f} | {r['steps']} | {r.get('cpu_s', 0.0):.0f} | "
                             f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def merge(paths: list[str]) -> int:
    """Print the headers and one table of several ``--json`` files (bicubic rows are the same in each: kept once)."""
    rows, seen = [], set()
    for path in paths:
        data = json.loads(Path(path).read_text())
        print(f"- {Path(path).name}: {data['header']}\n  command: `{data['command']}`")
        words = shlex.split(data["command"])
        size = words[words.index("--size") + 1] if "--size" in words else "tiny"
        for r in data["rows"]:
            if r["net"] != "bicubic":
                r.setdefault("size", size)
            key = (r["factor"], r["setup"], r["net"], r.get("size"))
            if key not in seen:
                seen.add(key)
                rows.append(r)
    print()
    print(table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="the truth volume (default: the bundled medulla crop)")
    p.add_argument("--factors", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--setups", nargs="+", default=["recipe II", "real pair"], choices=["recipe II", "real pair"])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--size", default="tiny", help="network size of every network (default tiny)")
    p.add_argument("--steps", type=int, default=60, help="training steps of every network (equal step budget)")
    p.add_argument("--minutes", type=float, default=None, help="instead: equal wall-clock minutes per network")
    p.add_argument("--cpu-minutes", type=float, default=None,
                   help="instead: equal CPU minutes of the training process per network (fair on a loaded machine; "
                   "use with --threads 1)")
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--train-planes", type=int, default=96)
    p.add_argument("--test-planes", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows, header and command here")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="print one table from --json files")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge)
    if args.minutes and args.cpu_minutes:
        p.error("give --minutes or --cpu-minutes, not both")
    if args.minutes or args.cpu_minutes:
        args.steps = 10**6
    command = shlex.join(["python", "benchmarks/bench_paired.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    device = describe_device(args.threads)
    t0 = time.perf_counter()
    rows = run(args)
    if args.cpu_minutes:
        budget = f"{args.cpu_minutes:g} CPU min per network"
    elif args.minutes:
        budget = f"{args.minutes:g} wall min per network"
    else:
        budget = f"{args.steps} steps per network"
    header = (f"paired lateral SR on the medulla volume (10 nm), train planes {args.train_planes}, held-out planes "
              f"{args.test_planes}, {budget}, size {args.size}, patch {args.patch}, batch {args.batch} (+ noisier "
              f"copies), seed {args.seed}; device: {device}; {started}; {time.perf_counter() - t0:.0f} s")
    print(header)
    print(f"command: {command}")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "command": command, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
