"""Output voxels/s of ``emsr apply`` (fused xz + yz, debanding on, the default chunking) for the output-grid network
and the section-grid one, at F = 4, 8 and 12, and their ratio: one run, the same CPU.

    python benchmarks/bench_apply_speed.py                       # 250 x 256 x 256 output per factor
    python benchmarks/bench_apply_speed.py --lateral 96 --factors 8   # a quick check

The input of each factor is a point-sampled stack cut from the report volume (``--gt``; every F-th plane of a
``--lateral`` px square crop, voxel size F x 10 x 10 nm) written as a TIFF. Each network (``--nets``, default
``rescnn`` and ``rescnn-sections``, size ``--size``) is trained for ``--steps`` steps with ``emsr train`` (speed does
not depend on the weights; debanding then decides on the restored probe as it does for a user), then ``emsr apply
STACK --model M -o OUT.ome.zarr`` runs as a new process and is timed from start to exit (imports, reading, the
deband probe, every chunk, the pyramid). Printed: a markdown row per factor and network (output voxels, seconds,
output voxels/s, FLOPs per output voxel fused) and the ratio of each network's voxels/s to the first network's.
``--precision fp32 bf16`` times each network both ways (``NAPARI_EMSR_CPU_BF16=0`` / ``1`` for the training and the
export; ``auto``, the default, is what the machine does by itself: bf16 where the CPU has bf16 matrix units).
Timing needs the CPU to itself: run nothing else.
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

import tifffile

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GT = ROOT.parent / "shared" / "data" / "medulla_fibsem_iso10nm_ts2_250.tif"


PRECISION_ENV = {"auto": "auto", "fp32": "0", "bf16": "1"}


def emsr(*args: str, precision: str = "auto") -> float:
    """Run ``emsr`` with ``args``; the wall time in seconds (raises when it fails)."""
    from napari_emsr.device import CPU_BF16_ENV

    env = {**os.environ, CPU_BF16_ENV: PRECISION_ENV[precision]}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "napari_emsr.cli", *args], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"emsr {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return dt


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DEFAULT_GT))
    ap.add_argument("--factors", type=int, nargs="+", default=[4, 8, 12])
    ap.add_argument("--nets", nargs="+", default=["rescnn", "rescnn-sections"])
    ap.add_argument("--size", default="small")
    ap.add_argument("--lateral", type=int, default=256, help="side of the square lateral crop (px)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--precision", nargs="+", default=["auto"], choices=sorted(PRECISION_ENV),
                    help="the networks' precision on the CPU, each timed in turn (auto: the machine's default)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from napari_emsr.device import cpu_bf16
    from napari_emsr.model import EMSRModel
    from napari_emsr.nets import build_net
    from napari_emsr.nets.flops import flops_per_pixel

    gt = tifffile.imread(a.gt)
    c = min(a.lateral, gt.shape[1], gt.shape[2])
    gt = gt[:, :c, :c]
    rows = []
    print(f"device: {cpu_name()}, {os.cpu_count()} cores; torch threads: default; bf16 by default here: "
          f"{cpu_bf16()}; {date.today()}")
    print("| F | network | precision | output voxels | seconds | M voxels/s | kFLOP/voxel (fused) | x first |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in a.factors:
            stack = gt[::f]
            src = tmp / f"stack_f{f}.tif"
            tifffile.imwrite(src, stack, imagej=True, resolution=(0.1, 0.1),
                             metadata={"spacing": 10.0 * f, "unit": "nm"})
            first = None
            for net, prec in [(n, p) for n in a.nets for p in a.precision]:
                model = tmp / f"{net}_f{f}.emsr.pt"
                if not model.exists():
                    emsr("train", str(src), "-o", str(model), "--net", net, "--size", a.size, "--steps",
                         str(a.steps), "-q", "--device", "cpu")
                out = tmp / f"{net}_{prec}_f{f}.ome.zarr"
                seconds = emsr("apply", str(src), "--model", str(model), "-o", str(out), "-q", "--device", "cpu",
                               precision=prec)
                m = EMSRModel.load(model)
                voxels = int(round((stack.shape[0] - 1) * f)) + 1
                voxels *= stack.shape[1] * stack.shape[2]
                flops = 2 * flops_per_pixel(build_net(m.config["net"], **m.config.get("net_kwargs", {})), f)
                speed = voxels / seconds
                first = first or speed
                rows.append({"factor": f, "net": net, "size": a.size, "precision": prec, "output_voxels": voxels,
                             "seconds": round(seconds, 2), "voxels_per_s": round(speed),
                             "flops_per_voxel_fused": round(flops), "ratio": round(speed / first, 2)})
                print(f"| {f} | {net}/{a.size} | {prec} | {voxels / 1e6:.1f} M | {seconds:.1f} | {speed / 1e6:.3f} | "
                      f"{flops / 1e3:.0f} | {speed / first:.2f} |", flush=True)
    cmd = "python benchmarks/bench_apply_speed.py " + " ".join(sys.argv[1:])
    print(f"\ncommand: {cmd}")
    payload = {"device": cpu_name(), "cores": os.cpu_count(), "date": str(date.today()), "command": cmd,
               "rows": rows}
    print(json.dumps(payload))
    if a.json:
        Path(a.json).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
