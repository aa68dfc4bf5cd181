"""Quality on real ground truth: degrade an isotropic FIB-SEM volume in z, reconstruct with `emsr reconstruct`,
score on the ground-truth grid against linear and cubic interpolation.

    python benchmarks/bench_quality.py --factor 4 --profile point --net uformer --minutes 10

The anisotropic stack is made with the section kernel centred on the kept slice (slice i at ground-truth
z = i * F) and scored on z in [0, (n - 1) * F] (../shared/data/README.md). Prints one markdown table row per
method and a JSON line with everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--fuse", default="xz,yz")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `emsr reconstruct` options")
    a = ap.parse_args()

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
        cmd = [sys.executable, "-m", "napari_emsr.cli", "reconstruct", str(src), "-o", str(out), "--json", "-q",
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
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
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
                      "train_s": model.history[-1]["elapsed"], "wall_s": round(wall, 1),
                      "profile": model.config.get("profile"), "profile_fit": model.config.get("profile_fit")}
        assert rec.dtype == gt.dtype
    dev = device_name(a.device)
    cub = rows["cubic"]
    # banding (metrics.section_banding): detail between sections / at them; the ground truth's is the target
    print(f"ground truth banding: {section_banding(ref, a.factor)['ratio']:.2f}")
    print("| data | F | stack | method | PSNR | SSIM xz | dPSNR vs cubic | dSSIM | banding | steps | device | date |")
    for k, v in rows.items():
        print(f"| medulla 250^3 | {a.factor} | {a.profile} | {k} | {v['psnr']:.2f} | {v['ssim_xz']:.3f} | "
              f"{v['psnr'] - cub['psnr']:+.2f} | {v['ssim_xz'] - cub['ssim_xz']:+.3f} | {v['banding']:.2f} | "
              f"{v.get('steps', '-')} | {dev} | {date.today()} |")
    print(json.dumps({"factor": a.factor, "profile": a.profile, "stack_noise": a.stack_noise, "minutes": a.minutes,
                      "device": dev, "rows": rows,
                      "command": " ".join(sys.argv)}))


if __name__ == "__main__":
    main()
