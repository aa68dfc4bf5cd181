"""The continuous section-profile fit on the medulla stacks: what it fits, against the truth, without training.

    python benchmarks/bench_fit.py [--volumes ts1 ts2] [--factor 4 8 12] [--stacks ...] [--detector-noise 8]

For each volume's half (ts1: z 0:125, the development half of ``bench_degradation.py --half dev``; ts2: z 125:250,
the report half), each F and each stack of ``bench_degradation.cut``, prints the fitted profile (slab thickness /
Gaussian edge, in F), the lateral lines z was matched to, its FWHM beside the FWHM the stack was cut with, its
spectral distance, the named profiles' distances, and the correlation of neighbouring sections' fine residuals the
fit reads as the share of noise the profile averaged (``profile_fit.section_correlation``). ``--detector-noise S``
adds white noise of S grey levels to each stack after cutting (as a detector adds it). Numpy only; about a second
per stack.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
import tifffile
from bench_degradation import STACKS, cut, matched, stack_name
from bench_heldout import NAMED

from napari_emsr.profile_fit import fit_profile, kernel_fwhm

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def true_fwhm(stack: str) -> float | None:
    """FWHM (in F) of the profile a stack was cut with (None where it is outside the family: the tail)."""
    prof = matched(stack)
    if prof is None:
        return None
    t, s = NAMED[prof] if isinstance(prof, str) else prof
    return round(kernel_fwhm(t, s), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", nargs="+", default=["ts1", "ts2"], choices=("ts1", "ts2"))
    ap.add_argument("--factor", nargs="+", type=int, default=[4, 8, 12])
    ap.add_argument("--stacks", nargs="+", default=["point", "slab", "gauss1.5", "slab-tail", "slab-poisson"],
                    type=stack_name, metavar="STACK",
                    help=f"{', '.join(STACKS)}, or one of them followed by -poisson[N] (Poisson noise of N photons "
                    "at mid grey, 40 when N is not given)")
    ap.add_argument("--detector-noise", type=float, default=0.0, help="white noise (grey levels) added after cutting")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    rows = []
    print("| volume | F | stack | fitted T/S | lateral lines | FWHM | true FWHM | distance | point / slab / gaussian "
          "| noise correlation | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for vol in a.volumes:
        gt = tifffile.imread(DATA / f"medulla_fibsem_iso10nm_{vol}_250.tif")
        half = gt[: gt.shape[0] // 2] if vol == "ts1" else gt[gt.shape[0] // 2 :]
        for f in a.factor:
            for stack in a.stacks:
                lr = cut(half, stack, f).astype(np.float32)
                if a.detector_noise > 0:
                    lr = np.clip(lr + np.random.default_rng(0).normal(0, a.detector_noise, lr.shape), 0, 255)
                t0 = time.perf_counter()
                r = fit_profile(lr, float(f))
                dt = time.perf_counter() - t0
                named = " / ".join(f"{r.named[p]:.3f}" for p in ("point", "slab", "gaussian"))
                corr = getattr(r, "noise_correlation", float("nan"))  # NaN: a version of the fit without it
                lines = getattr(r, "lateral_lines", "yx")  # a version of the fit without the choice: both
                true = true_fwhm(stack)
                shown = "-" if true is None else f"{true:.2f}"
                print(f"| {vol} | {f} | {stack} | {r.thickness:.2f}/{r.softness:.2f} | {lines} | {r.fwhm:.2f} | "
                      f"{shown} | {r.distance:.4f} | {named} | {corr:.3f} | {dt:.1f} |", flush=True)
                rows.append({"volume": vol, "factor": f, "stack": stack, **r.as_dict(), "true_fwhm": true,
                             "seconds": round(dt, 2)})
    print(f"\ndate {date.today()}; detector noise {a.detector_noise}")
    if a.json:
        Path(a.json).write_text(json.dumps({"date": str(date.today()), "detector_noise": a.detector_noise,
                                            "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
