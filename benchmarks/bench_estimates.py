"""Export time estimates against real exports: the estimate from one timed chunk of the export's own pipeline
(:func:`napari_emsr.estimates.estimate_export`, what the panel and ``emsr apply``/``reconstruct`` show), and the
network-speed estimate the panel used before (:mod:`napari_emsr.plugin.estimate`: a timed forward pass times the
network pixels), each followed at once by the real export it estimates (a timed
:func:`napari_emsr.reconstruct.export`), with the ratio estimate / measured.

    OMP_NUM_THREADS=1 python benchmarks/bench_estimates.py STACK.tif --model M.emsr.pt [--planes fuse]
    OMP_NUM_THREADS=1 python benchmarks/bench_estimates.py STACK.tif --method cubic --factor 8

On a shared CPU the timings move with the load: each estimate runs right before its export, with the same
thread count (``--threads``, default 1), and the ratio is the figure to compare. Held-out stacks: every F-th z
plane of an isotropic volume (``--every F``, written with the voxel size that gives F).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def held_out(path: str, every: int, z: str | None, out: Path) -> str:
    """Every ``every``-th z plane of the isotropic ``path`` (optionally a z range ``a:b`` of it), as a TIFF whose
    voxel size gives F = ``every``."""
    import numpy as np
    import tifffile

    from napari_emsr.io import open_volume

    vol = open_volume(path)
    data = np.asarray(vol.data)
    if z:
        a, b = (int(v) for v in z.split(":"))
        data = data[a:b]
    lateral = float(vol.spacing[2]) if vol.spacing else 10.0
    stack = np.ascontiguousarray(data[::every])
    target = out / f"{Path(path).stem}_every{every}.tif"
    tifffile.imwrite(target, stack, imagej=True, resolution=(1 / lateral, 1 / lateral),
                     metadata={"spacing": lateral * every, "unit": "nm", "axes": "ZYX"})
    return str(target)


def central(vol, n: int):
    """The central ``n`` x ``n`` px of every plane of ``vol`` (same voxel size), in memory."""
    import dataclasses

    import dask.array as da
    import numpy as np

    _, ny, nx = vol.data.shape
    y0, x0 = max(0, (ny - n) // 2), max(0, (nx - n) // 2)
    data = np.ascontiguousarray(np.asarray(vol.data[:, y0 : y0 + n, x0 : x0 + n]))
    return dataclasses.replace(vol, data=da.from_array(data), source=None, levels=())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="the stack (or, with --every, the isotropic volume to cut)")
    ap.add_argument("--model", help="a trained model file")
    ap.add_argument("--method", default=None, help="an interpolation method instead of a model (cubic, linear)")
    ap.add_argument("--factor", type=float, default=None, help="F (default: from the voxel size)")
    ap.add_argument("--every", type=int, default=None, help="cut a held-out stack: every N-th z plane of the input")
    ap.add_argument("--z", default=None, help="with --every: the z range a:b of the input to cut")
    ap.add_argument("--lateral", type=int, default=None, help="the central N x N px of every plane only")
    ap.add_argument("--planes", default="fuse", choices=("xz", "yz", "fuse"))
    ap.add_argument("--no-deband", action="store_true")
    ap.add_argument("--output", default="zarr", choices=("zarr", "tif"))
    ap.add_argument("--old", action="store_true", help="also the network-speed estimate the panel used before")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from napari_emsr.estimates import estimate_export
    from napari_emsr.io import open_volume
    from napari_emsr.plugin.estimate import clock
    from napari_emsr.reconstruct import as_model, export, export_chunks

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = held_out(a.input, a.every, a.z, tmp) if a.every else a.input
        vol = open_volume(source)
        if a.lateral:
            vol = central(vol, a.lateral)
        model = as_model(a.model or a.method or "cubic")
        kw = dict(planes=a.planes, factor=a.factor, device="cpu", deband=not a.no_deband)
        name = a.model or a.method or "cubic"
        print(f"input {Path(a.input).name}{f' every {a.every}' if a.every else ''} {tuple(vol.data.shape)} "
              f"(F {vol.factor:g}), "
              f"{Path(name).name}, planes {a.planes}, deband {not a.no_deband}; {platform.processor() or 'cpu'}, "
              f"{torch.get_num_threads()} torch thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
        print(f"export chunks {export_chunks(vol, a.planes)}")
        old = None
        if a.old and not isinstance(model, str):
            from napari_emsr.plugin import estimate

            f = float(model.factor)
            speed = estimate.measure_restore_speed(model, tuple(vol.data.shape), f, "cpu", vol)
            work, _ = estimate.volume_work(tuple(vol.data.shape), f, a.planes, export_chunks(vol, a.planes))
            old = speed.seconds(work)
        t0 = time.perf_counter()
        est = estimate_export(vol, model, **kw)
        spent = time.perf_counter() - t0
        print(f"estimate {clock(est.seconds)} ({est.seconds:.1f} s; took {spent:.1f} s to make): {est.how}")
        out = tmp / ("out.ome.zarr" if a.output == "zarr" else "out.tif")
        t0 = time.perf_counter()
        export(vol, model, out, **kw)
        took = time.perf_counter() - t0
        print(f"export   {clock(took)} ({took:.1f} s)   ratio estimate/measured {est.seconds / took:.2f}"
              + (f"   (network-speed estimate {old:.1f} s, ratio {old / took:.2f})" if old else ""))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
