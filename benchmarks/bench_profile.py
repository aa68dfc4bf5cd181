"""Section-profile estimation: does ``profile="auto"`` name the profile a stack was cut with?

    python benchmarks/bench_profile.py

Cuts the isotropic medulla FIB-SEM volume in z at F = 4 and 8 with each profile (point, slab, Gaussian), with and
without Gaussian noise of 8 grey levels added after cutting (as a detector adds it), and prints what
``old_profile.estimate_profile`` picks, its spectral distances and its time; then what it picks on
the real serial-section TEM stacks of ../shared/data (no ground truth: for information).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
import tifffile
from old_profile import estimate_profile

from napari_emsr.degrade import PROFILES, make_anisotropic

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = (("isbi2012_sstem_train_30x512x512.tif", 12.5), ("cremi_crop_isovem_train_32x320x320.tif", 10.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DATA / "medulla_fibsem_iso10nm_ts1_250.tif"))
    ap.add_argument("--noise", type=float, default=8.0, help="noise sigma (grey levels) of the noisy cases")
    a = ap.parse_args()
    gt = tifffile.imread(a.gt)
    rng = np.random.default_rng(0)
    rows, right = [], 0
    print("| F | cut with | noise | picked | point | slab | gaussian | seconds |")
    for factor in (4, 8):
        for profile in PROFILES:
            for noise in (0.0, a.noise):
                stack = make_anisotropic(gt, factor, profile).astype(np.float32)
                if noise:
                    stack = np.clip(stack + rng.normal(0, noise, stack.shape), 0, 255)
                t0 = time.perf_counter()
                est = estimate_profile(stack, factor)
                dt = time.perf_counter() - t0
                right += est.profile == profile
                s = est.scores
                miss = "" if est.profile == profile else " (miss)"
                print(f"| {factor} | {profile} | {noise:g} | {est.profile}{miss} "
                      f"| {s['point']:.3f} | {s['slab']:.3f} | {s['gaussian']:.3f} | {dt:.1f} |")
                rows.append({"factor": factor, "profile": profile, "noise": noise, **est.as_dict(), "seconds": dt})
    print(f"\nright in {right} of {len(rows)} cases ({date.today()})\n")
    real = {}
    for name, factor in REAL:
        path = DATA / name
        if path.exists():
            est = estimate_profile(tifffile.imread(path), factor)
            real[name] = est.as_dict()
            print(f"{name} (F = {factor:g}): {est.note}")
    print(json.dumps({"right": right, "cases": len(rows), "rows": rows, "real": real}))


if __name__ == "__main__":
    main()
