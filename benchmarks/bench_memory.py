"""Peak memory of `emsr reconstruct --method cubic` on a large OME-Zarr input (bounded-memory streaming).

    python benchmarks/bench_memory.py --gb 4 --factor 1.25 --workdir /tmp/emsr_mem

Writes a synthetic-but-EM-like OME-Zarr input of about ``--gb`` GB (tiles of the bundled medulla crop, uint8,
chunks 64 x 256 x 256), then runs the command in a subprocess and reports its peak resident memory (ru_maxrss of
the child) and the throughput. The factor is kept small by default so the output is not 4x the input on disk.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np


def make_input(path: Path, gb: float, factor: float) -> tuple[int, int, int]:
    import zarr

    from napari_emsr.sample import _ground_truth

    tile = _ground_truth()[:64, :, :]  # (64, 192, 192)
    nz = 64
    side = int(np.sqrt(gb * 1e9 / nz)) // 256 * 256
    shape = (nz, side, side)
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = root.create_array("0", shape=shape, chunks=(64, 256, 256), dtype="uint8")
    reps = (1, -(-side // tile.shape[1]), -(-side // tile.shape[2]))
    for y0 in range(0, side, 1024):
        block = np.tile(tile, reps)[:, : min(1024, side - y0), :side]
        arr[:, y0 : y0 + block.shape[1], :] = block
    root.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [10.0 * factor, 10.0, 10.0]}]}],
    }]
    return shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--factor", type=float, default=1.25)
    ap.add_argument("--workdir", default="/tmp/emsr_mem")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    src, out = wd / "input.ome.zarr", wd / "output.ome.zarr"
    t0 = time.perf_counter()
    shape = make_input(src, a.gb, a.factor)
    t_make = time.perf_counter() - t0
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "napari_emsr.cli", "reconstruct", str(src), "-o", str(out), "--method", "cubic",
           "-q", "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(r.stderr)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    in_bytes = int(np.prod(shape))
    from napari_emsr.io import open_volume

    o = open_volume(out)
    res = {"input_shape": shape, "input_gb": in_bytes / 1e9, "output_shape": o.shape,
           "output_gb": int(np.prod(o.shape)) / 1e9, "peak_rss_mib": round(peak_mib), "seconds": round(wall, 1),
           "output_voxels_per_s": int(np.prod(o.shape)) / wall, "make_input_s": round(t_make, 1), "date": str(date.today()),
           "command": " ".join(cmd[1:])}
    print(f"input {shape} ({res['input_gb']:.2f} GB) -> output {o.shape} ({res['output_gb']:.2f} GB): "
          f"peak RSS {res['peak_rss_mib']} MiB, {wall:.0f} s, {res['output_voxels_per_s'] / 1e6:.1f} Mvoxel/s")
    print(json.dumps(res))
    if not a.keep:
        shutil.rmtree(wd)


if __name__ == "__main__":
    main()
