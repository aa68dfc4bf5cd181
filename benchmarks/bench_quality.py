"""Quality on real ground truth: degrade an isotropic FIB-SEM volume in z, reconstruct with `emsr reconstruct`,
score on the ground-truth grid against linear and cubic interpolation.

    python benchmarks/bench_quality.py --factor 4 --profile point --net uformer --minutes 10
    nice -n 10 python benchmarks/bench_quality.py --factor 4 --profile point --net emsr --size small \
        --cpu-minutes 3 --threads 1 --fuse xz

``--cpu-minutes M`` gives the training M minutes of the training process's CPU time (``time.process_time``) instead
of wall-clock minutes, so that runs on a loaded, shared machine get the same compute; with ``--threads 1`` the
`emsr reconstruct` process runs torch on one thread and dask's synchronous scheduler (one core). The CPU clock is
set in that process by this script (``_cli`` below); the library is unchanged.

The anisotropic stack is made with the section kernel centred on the kept slice (slice i at ground-truth
z = i * F) and scored on z in [0, (n - 1) * F] (../shared/data/README.md). Prints one markdown table row per
method and a JSON line with everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import tifffile

from napari_emsr.degrade import make_anisotropic
from napari_emsr.io import open_volume
from napari_emsr.metrics import psnr, section_banding, ssim
from napari_emsr.reconstruct import reconstruct

DEFAULT_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "medulla_fibsem_iso10nm_ts1_250.tif"


def device_name(dev: str) -> str:
    import torch

    if dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} ({torch.get_num_threads()} threads)"


class _CpuClock:
    """Stands in for the ``time`` module inside :mod:`napari_emsr.train`: ``perf_counter`` is this process's CPU
    time, so the trainer's minute budget (and the learning-rate schedule that follows it) counts CPU minutes."""

    perf_counter = staticmethod(time.process_time)

    def __getattr__(self, name):
        return getattr(time, name)


def _cli(argv: list[str]) -> int:
    """``bench_quality.py _cli THREADS CPU_CLOCK emsr-args...``: run `emsr` in this process with torch on THREADS
    threads (0: torch's default), dask's synchronous scheduler when THREADS is 1, and the CPU clock when CPU_CLOCK
    is 1."""
    import dask
    import torch

    import napari_emsr.train as train_mod
    from napari_emsr.cli import main as cli_main

    threads, cpu_clock, rest = int(argv[0]), argv[1] == "1", argv[2:]
    if threads:
        torch.set_num_threads(threads)
    if threads == 1:
        dask.config.set(scheduler="synchronous")
    if cpu_clock:
        train_mod.time = _CpuClock()
    return cli_main(rest)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DEFAULT_GT), help="isotropic ground-truth TIFF (z, y, x)")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--profile", default="point", choices=["point", "slab", "gaussian"], help="how the stack is made")
    ap.add_argument("--train-profile", default=None, help="profile the training assumes (default: the method's)")
    ap.add_argument("--stack-noise", type=float, default=0.0,
                    help="Gaussian noise (grey levels) added to the stack after cutting, as a detector adds it; "
                    "the ground truth stays clean")
    ap.add_argument("--net", default=None)
    ap.add_argument("--size", default=None)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--cpu-minutes", type=float, default=None,
                    help="instead of --minutes: CPU minutes of the training process (fair on a shared machine)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads of the `emsr reconstruct` process (1: also dask's synchronous scheduler; "
                    "0: the defaults)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--fuse", default="xz,yz")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `emsr reconstruct` options")
    a = ap.parse_args()
    if a.cpu_minutes:
        a.minutes = a.cpu_minutes

    gt = tifffile.imread(a.gt)
    aniso = make_anisotropic(gt, a.factor, a.profile)
    if a.stack_noise > 0:
        noisy = aniso.astype(np.float32) + np.random.default_rng(0).normal(0.0, a.stack_noise, aniso.shape)
        info = np.iinfo(aniso.dtype)
        aniso = np.clip(np.rint(noisy), info.min, info.max).astype(aniso.dtype)
    n = aniso.shape[0]
    zmax = (n - 1) * a.factor + 1
    ref = gt[:zmax]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "aniso.tif"
        tifffile.imwrite(src, aniso, imagej=True, resolution=(0.1, 0.1),
                         metadata={"spacing": 10.0 * a.factor, "unit": "nm", "axes": "ZYX"})
        vol = open_volume(src)
        for m in ("linear", "cubic"):
            rec = reconstruct(vol, m).compute()[:zmax]
            rows[m] = {"psnr": psnr(ref, rec), "ssim_xz": ssim(ref, rec, planes="xz"),
                       "mean_shift": float(rec.mean(dtype=np.float64) - ref.mean(dtype=np.float64)),
                       "banding": section_banding(rec, a.factor)["ratio"]}
        out = Path(tmp) / "iso.tif"
        cmd = [sys.executable, str(Path(__file__).resolve()), "_cli", str(a.threads), "1" if a.cpu_minutes else "0",
               "reconstruct", str(src), "-o", str(out), "--json", "-q",
               "--fuse", a.fuse, "--device", a.device]
        if a.minutes:
            cmd += ["--minutes", str(a.minutes), "--steps", str(a.steps or 10**6)]
        elif a.steps:
            cmd += ["--steps", str(a.steps)]
        for k in ("net", "size"):
            if getattr(a, k):
                cmd += [f"--{k}", getattr(a, k)]
        if a.train_profile:
            cmd += ["--profile", a.train_profile]
        cmd += a.extra
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}))
        t0, c0 = time.perf_counter(), _children_cpu()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
        if r.returncode != 0:
            sys.exit(f"emsr reconstruct failed:\n{r.stderr}")
        info = json.loads(r.stdout.strip().splitlines()[-1])
        rec = tifffile.imread(out)[:zmax]
        from napari_emsr.model import EMSRModel

        model = EMSRModel.load(info["model"])
        name = f"emsr {model.config['net']}/{model.config['size']}, {model.config.get('profile')} training"
        rows[name] = {"psnr": psnr(ref, rec), "ssim_xz": ssim(ref, rec, planes="xz"), "steps": model.step,
                      "mean_shift": float(rec.mean(dtype=np.float64) - ref.mean(dtype=np.float64)),
                      "banding": section_banding(rec, a.factor)["ratio"],
                      "history": [{k: h[k] for k in ("step", "loss", "val_psnr", "cubic_psnr", "elapsed")}
                                  for h in model.history],
                      "train_s": model.history[-1]["elapsed"], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                      "train_clock": "cpu" if a.cpu_minutes else "wall",
                      "profile": model.config.get("profile"), "profile_fit": model.config.get("profile_fit")}
        assert rec.dtype == gt.dtype
    dev = device_name(a.device)
    if a.threads:
        dev = f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} ({a.threads} thread(s) in the run)"
    data = f"medulla {'x'.join(map(str, gt.shape))}"
    budget = f"{a.cpu_minutes:g} CPU min" if a.cpu_minutes else (f"{a.minutes:g} min" if a.minutes else "steps")
    print(f"command: {shlex.join(['python', 'benchmarks/bench_quality.py', *sys.argv[1:]])}")
    print(f"training budget: {budget}; load average {os.getloadavg()[0]:.1f} at the end")
    cub = rows["cubic"]
    # banding (metrics.section_banding): detail between sections / at them; the ground truth's is the target
    print(f"ground truth banding: {section_banding(ref, a.factor)['ratio']:.2f}")
    print("| data | F | stack | method | PSNR | SSIM xz | dPSNR vs cubic | dSSIM | banding | steps | train s | "
          "run CPU s | run wall s | device | date |")
    for k, v in rows.items():
        extra = (f"{v['train_s']:.0f} ({v['train_clock']}) | {v['cpu_s']:.0f} | {v['wall_s']:.0f}"
                 if "train_s" in v else "- | - | -")
        print(f"| {data} | {a.factor} | {a.profile} | {k} | {v['psnr']:.2f} | {v['ssim_xz']:.3f} | "
              f"{v['psnr'] - cub['psnr']:+.2f} | {v['ssim_xz'] - cub['ssim_xz']:+.3f} | {v['banding']:.2f} | "
              f"{v.get('steps', '-')} | {extra} | {dev} | {date.today()} |")
    print(json.dumps({"factor": a.factor, "profile": a.profile, "stack_noise": a.stack_noise, "minutes": a.minutes,
                      "cpu_minutes": a.cpu_minutes, "threads": a.threads, "data": data,
                      "device": dev, "rows": rows,
                      "command": " ".join(sys.argv)}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_cli":
        sys.exit(_cli(sys.argv[2:]))
    main()
