"""Debanding (napari_emsr.deband) on ground truth: the default method with and without it, against cubic.

One half of an isotropic volume along z (``--half 0``: z 0:125, where the filters' settings were chosen;
``--half 1``: z 125:250, for reporting) is cut every F planes with a section profile, the default isotropic
method trains on that stack (self-supervised, as a user would: ``emsr train`` with a step budget), and the
stack is reconstructed with ``deband=False`` and ``deband=True`` (xz planes and fused). Prints PSNR, SSIM(xz) and
banding (``metrics.section_banding``: detail between sections / at them; the ground truth's is given) of cubic and
of each, the seconds each reconstruction took and the device.

    python benchmarks/bench_deband.py --factor 8 --profile point --half 1 --steps 600
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import tifffile

from napari_emsr.cli import main as emsr
from napari_emsr.degrade import make_anisotropic
from napari_emsr.io import open_volume
from napari_emsr.metrics import psnr, section_banding, ssim
from napari_emsr.reconstruct import reconstruct

DEFAULT_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "medulla_fibsem_iso10nm_ts1_250.tif"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DEFAULT_GT), help="isotropic ground-truth TIFF (z, y, x)")
    ap.add_argument("--factor", type=int, default=8)
    ap.add_argument("--profile", default="point", help="how the stack is cut (degrade.PROFILES)")
    ap.add_argument("--half", type=int, default=1, choices=(0, 1), help="0: z 0:125 (tuning), 1: z 125:250")
    ap.add_argument("--steps", type=int, default=600, help="training steps of the default method")
    ap.add_argument("--model", default=None, help="a model already trained on this stack (skips training)")
    ap.add_argument("--planes", nargs="+", default=["xz", "fuse"])
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    gt = tifffile.imread(a.gt)
    h = gt.shape[0] // 2
    gt = gt[:h] if a.half == 0 else gt[h:]
    aniso = make_anisotropic(gt, a.factor, a.profile)
    zmax = (aniso.shape[0] - 1) * a.factor + 1
    ref = gt[:zmax]
    dev = f"CPU {platform.machine()} x{os.cpu_count()} ({torch.get_num_threads()} threads)"
    rows = []

    def score(name, rec, seconds=None):
        rows.append((name, psnr(ref, rec), ssim(ref, rec, planes="xz"), section_banding(rec, a.factor)["ratio"],
                     seconds))

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "aniso.tif"
        tifffile.imwrite(src, aniso, imagej=True, resolution=(0.1, 0.1),
                         metadata={"spacing": 10.0 * a.factor, "unit": "nm", "axes": "ZYX"})
        vol = open_volume(src)
        model = a.model
        if model is None:
            model = str(Path(tmp) / "m.emsr.pt")
            t0 = time.perf_counter()
            if emsr(["train", str(src), "-o", model, "--steps", str(a.steps), "-q"]) != 0:
                sys.exit("training failed")
            print(f"trained {a.steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        score("cubic", reconstruct(vol, "cubic").compute()[:zmax])
        for planes in a.planes:
            for deband in (False, True):
                t0 = time.perf_counter()
                rec = reconstruct(vol, model, planes=planes, deband=deband).compute()[:zmax]
                score(f"default, {planes}, deband {'on' if deband else 'off'}", rec, time.perf_counter() - t0)
    cub = rows[0][1]
    print(f"ground truth banding: {section_banding(ref, a.factor)['ratio']:.2f}; "
          f"{Path(a.gt).name} z {'0:' if a.half == 0 else ''}{h if a.half == 0 else f'{h}:{2 * h}'}, "
          f"F = {a.factor}, {a.profile} sections, {a.steps} steps; {dev}, {date.today()}")
    print("| method | PSNR | dPSNR vs cubic | SSIM xz | banding | reconstruct s |")
    print("|---|---|---|---|---|---|")
    for name, p, s, b, t in rows:
        print(f"| {name} | {p:.2f} | {p - cub:+.2f} | {s:.3f} | {b:.2f} | {'' if t is None else f'{t:.0f}'} |")
    print("command: python benchmarks/bench_deband.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
