"""Peak memory of `emsr reconstruct --method cubic` on a large OME-Zarr input (bounded-memory streaming).

    python benchmarks/bench_memory.py --gb 4 --factor 1.25 --workdir /tmp/emsr_mem

Writes a synthetic-but-EM-like OME-Zarr input of about ``--gb`` GB (tiles of the bundled medulla crop, uint8,
chunks 64 x 256 x 256), then runs the command in a subprocess and reports its peak resident memory (ru_maxrss of
the child) and the throughput. The factor is kept small by default so the output is not 4x the input on disk.
"""

from __future__ import annotations

import argparse
import json
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
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [10.0 * factor, 10.0, 10.0]}]}
        ],
    }]
    return shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--factor", type=float, default=1.25)
    ap.add_argument("--workdir", default="/tmp/emsr_mem")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    if a.make_only:
        print(json.dumps(list(make_input(wd / "input.ome.zarr", a.gb, a.factor))))
        return
    src, out = wd / "input.ome.zarr", wd / "output.ome.zarr"
    t0 = time.perf_counter()
    # NOTE: the input is made in a child process and the command's peak is read inside its own process:
    # RUSAGE_CHILDREN of this process would count the pages a forked child shares with a large parent
    # (the first version of this bench reported 7.4 GB for a command whose own peak was 0.6 GB).
    mk = subprocess.run([sys.executable, __file__, "--make-only", "--gb", str(a.gb), "--factor", str(a.factor),
                         "--workdir", str(wd)], capture_output=True, text=True)
    if mk.returncode != 0:
        sys.exit(mk.stderr)
    shape = tuple(json.loads(mk.stdout.strip().splitlines()[-1]))
    t_make = time.perf_counter() - t0
    if out.exists():
        shutil.rmtree(out)
    args = ["reconstruct", str(src), "-o", str(out), "--method", "cubic", "-q", "--json"]
    wrapper = ("import resource, sys\nfrom napari_emsr.cli import main\ntry:\n    rc = main(sys.argv[1:])\nfinally:\n"
               "    print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(rc)")
    cmd = [sys.executable, "-c", wrapper, *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(r.stderr)
    peak_mib = int(r.stderr.split("PEAK_RSS_KIB")[-1].split()[0]) / 1024
    in_bytes = int(np.prod(shape))
    from napari_emsr.io import open_volume

    o = open_volume(out)
    res = {"input_shape": shape, "input_gb": in_bytes / 1e9, "output_shape": o.shape,
           "output_gb": int(np.prod(o.shape)) / 1e9, "peak_rss_mib": round(peak_mib), "seconds": round(wall, 1),
           "output_voxels_per_s": int(np.prod(o.shape)) / wall, "make_input_s": round(t_make, 1),
           "date": str(date.today()),
           "command": "emsr " + " ".join(args)}
    print(f"input {shape} ({res['input_gb']:.2f} GB) -> output {o.shape} ({res['output_gb']:.2f} GB): "
          f"peak RSS {res['peak_rss_mib']} MiB, {wall:.0f} s, {res['output_voxels_per_s'] / 1e6:.1f} Mvoxel/s")
    print(json.dumps(res))
    if not a.keep:
        shutil.rmtree(wd)


if __name__ == "__main__":
    main()
