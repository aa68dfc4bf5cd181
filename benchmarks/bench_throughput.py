"""Throughput of applying the default model, end to end from file to file, and where the time goes.

    python benchmarks/bench_throughput.py                                # 300 x 1024 x 1024 uint8, F = 3.3, fuse
    python benchmarks/bench_throughput.py --shape 24,96,96 --device cpu  # a few minutes on a small CPU

A synthetic uint8 stack of ``--shape`` (z, y, x) (the bundled sample, mirrored and repeated) is written as a
TIFF with voxel size 33 x 10 x 10 nm (F = 3.3). A model of the default method's network and size
(``--net``/``--size`` to change) is trained for 2 steps on a crop of it (speed does not depend on the weights),
then ``napari_emsr.reconstruct.export`` writes the fused (xz + yz) isotropic volume to an OME-Zarr (pyramid
included) with its default chunks and dask's threads, as ``emsr apply`` does. Printed:

- output voxels/s, end to end (the TIFF read, the whole export, the pyramid), and for level 0 alone;
- the network's FLOPs per output voxel (``torch.utils.flop_counter.FlopCounterMode``; a multiply-add is 2):
  nominal (per pixel of one plane, times 2 for fuse) and effective (counting the context margins and the
  overlapping tiles the chunks actually ran);
- the fraction of the device's peak: of the whole run (network FLOPs / wall time) and of the network alone (a
  steady loop of the network on batches of planes like the chunks', no copies). Peak: ``--peak-tflops``, else
  989 TFLOP/s bf16 dense for an H100 or H200; on a CPU, cores x GHz x FLOPs per cycle (fp32: 32 for two 256-bit
  FMA units, AVX2 or AMD's AVX-512; 64 for Intel's AVX-512), with the GHz from /proc/cpuinfo or ``--cpu-ghz``:
  an assumption, printed with the figure;
- where the time goes, summed over dask's threads (so the total exceeds the wall time when they overlap): read
  (the input region of each chunk), interpolation (along z), network (its forward calls; on CUDA synchronised
  before and after each, which serialises them a little), copies and tiling (the rest of the model's predict
  path: numpy <-> torch, host <-> device, tiles and blending), other chunk work (normalisation, fusion, cast),
  write (zarr chunk writes of level 0, compression included); and the pyramid's wall time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np

SPACING = (33.0, 10.0, 10.0)  # F = 3.3
BF16_DENSE = {"H100": 989e12, "H200": 989e12}


class Timers:
    """Seconds per category, summed over threads."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.calls = collections.defaultdict(int)
        self.lock = threading.Lock()

    def add(self, what: str, dt: float) -> None:
        with self.lock:
            self.seconds[what] += dt
            self.calls[what] += 1

    def wrap(self, what: str, fn):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(what, time.perf_counter() - t)

        return timed


@contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def synthetic_tiff(path: Path, shape: tuple[int, int, int], factor: float = SPACING[0] / SPACING[2]):
    from _synthetic import tiled_sample

    from napari_emsr.io import write_volume

    arr = tiled_sample(shape, (16, shape[1], shape[2]))
    write_volume(path, arr, spacing=(factor * SPACING[2], SPACING[1], SPACING[2]))


def cpu_peak(ghz: float | None) -> tuple[float, str]:
    """Assumed fp32 peak of the cores torch uses, and how it was derived."""
    import torch

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if "flags" in text else set()
    vendor = (re.findall(r"^vendor_id\s*:\s*(\S+)", text, re.M) or ["?"])[0]
    if "avx512f" in flags and vendor == "GenuineIntel":
        per_cycle, why = 64, "Intel AVX-512, 2 FMA units"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, why = 32, "2 x 256-bit FMA units" + (" (AMD runs AVX-512 on them)" if "avx512f" in flags else "")
    else:
        per_cycle, why = 16, "SSE-class, 1 FMA unit"
    mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
    if ghz is None and mhz:
        ghz, where = float(mhz[0]) / 1000, "from /proc/cpuinfo"
    elif ghz is None:
        ghz, where = 2.5, "assumed (no clock in /proc/cpuinfo; --cpu-ghz to set)"
    else:
        where = "given"
    cores = torch.get_num_threads()
    return cores * ghz * 1e9 * per_cycle, (f"{cores} cores x {ghz:.2f} GHz ({where}) x {per_cycle} fp32 FLOP/cycle "
                                           f"({why})")


def device_peak(dev: str, given: float | None, ghz: float | None) -> tuple[float | None, str]:
    import torch

    if given:
        return given * 1e12, "given (--peak-tflops)"
    if dev.startswith("cuda"):
        name = torch.cuda.get_device_name(dev)
        for key, peak in BF16_DENSE.items():
            if key in name:
                return peak, f"{name}: bf16 dense tensor-core peak {peak / 1e12:.0f} TFLOP/s (data sheet)"
        return None, f"{name}: peak unknown (give --peak-tflops)"
    if dev == "cpu":
        return cpu_peak(ghz)
    return None, f"{dev}: peak unknown (give --peak-tflops)"


def flops_per_pixel(net, dev: str, h: int, w: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_emsr.model import autocast

    x = torch.zeros((1, 1, h, w), device=dev)
    with torch.inference_mode(), autocast(dev), FlopCounterMode(display=False) as fc:
        net(x)
    return fc.get_total_flops() / (h * w)


def network_alone(net, dev: str, batch: int, h: int, w: int, seconds: float = 5.0) -> float:
    """Pixels/s of the network alone on batches of (batch, 1, h, w) planes already on the device."""
    import torch

    from napari_emsr.model import autocast

    x = torch.rand((batch, 1, h, w), device=dev)
    if dev.startswith("cuda"):
        x = x.contiguous(memory_format=torch.channels_last)

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode(), autocast(dev):
        net(x)  # warm-up
        sync()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds or n < 2:
            net(x)
            n += 1
        sync()
        dt = time.perf_counter() - t
    return n * x.numel() / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="300,1024,1024", help="input z,y,x (uint8)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--net", default=None)
    ap.add_argument("--size", default=None)
    ap.add_argument("--planes", default="fuse", choices=("xz", "yz", "fuse"))
    ap.add_argument("--batch", type=int, default=None, help="planes per network call (default: predict's)")
    ap.add_argument("--factor", type=float, default=SPACING[0] / SPACING[2], help="F of the synthetic stack (3.3)")
    ap.add_argument("--compile", action="store_true", help="the network through torch.compile (emsr apply --compile)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--cpu-ghz", type=float, default=None)
    ap.add_argument("--dir", default=None, help="working folder (default: a temporary one, removed at the end)")
    a = ap.parse_args()
    shape = tuple(int(s) for s in a.shape.split(","))

    import torch

    import napari_emsr.io.omezarr as omezarr
    import napari_emsr.reconstruct as rec
    from napari_emsr.device import list_devices, resolve_device
    from napari_emsr.geometry import output_length
    from napari_emsr.io import as_volume, open_volume
    from napari_emsr.methods import get_method
    from napari_emsr.train import TrainConfig, train

    dev = resolve_device(a.device)
    label = dict(list_devices())[dev]
    meth = get_method("isotropic")
    net_name, size = a.net or meth.net, a.size or meth.size
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="emsr-bench-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "input.tif"
        t = time.perf_counter()
        synthetic_tiff(src, shape, a.factor)
        made = time.perf_counter() - t
        vol = open_volume(src)
        crop = as_volume(np.asarray(vol.data[:, :192, :192]), spacing=vol.spacing)
        model = train(crop, TrainConfig(net=net_name, size=size, steps=2, patch=32, batch=2, device=dev,
                                        val_every=10**9, preview_every=0))
        net = model.network(dev)
        zo = output_length(shape[0], model.factor)
        print(f"device: {label}; torch {torch.__version__}, threads {torch.get_num_threads()}; {date.today()}")
        print(f"input {shape} uint8 TIFF ({np.prod(shape) / 1e6:.1f} MB, written in {made:.1f} s), F = "
              f"{model.factor:g}, {a.planes}, {net_name}/{size}: output ({zo}, {shape[1]}, {shape[2]})", flush=True)

        timers = Timers()
        pixels = [0]
        cuda = dev.startswith("cuda")

        def pre(module, args):
            if cuda:
                torch.cuda.synchronize()
            threading.current_thread().emsr_t0 = time.perf_counter()
            with timers.lock:
                pixels[0] += args[0].numel()

        def post(module, args, out):
            if cuda:
                torch.cuda.synchronize()
            timers.add("network", time.perf_counter() - threading.current_thread().emsr_t0)

        hooks = [net.register_forward_pre_hook(pre), net.register_forward_hook(post)]
        pyramid_start = []

        def downsample(*args, **kw):
            if not pyramid_start:
                pyramid_start.append(time.perf_counter())
            return orig_down(*args, **kw)

        orig_down = omezarr.downsample
        import zarr

        out = work / "output.ome.zarr"
        kwargs = {"batch": a.batch} if a.batch else {}
        if a.compile:
            kwargs["compiled"] = True
        local = threading.local()
        from napari_emsr import engine as eng

        compute, block = eng.compute, eng.Engine.block

        def read(a, **kw):  # the chunks' reads only (not the fingerprint's sample of the input)
            t = time.perf_counter()
            try:
                return compute(a, **kw)
            finally:
                timers.add("read" if getattr(local, "in_block", False) else "fingerprint", time.perf_counter() - t)

        def in_block(self, *args):
            local.in_block = True
            try:
                return block(self, *args)
            finally:
                local.in_block = False

        with patched(eng, "compute", read), \
                patched(eng, "interpolate_axis", timers.wrap("interpolation", eng.interpolate_axis)), \
                patched(eng.Engine, "restore", timers.wrap("restore", eng.Engine.restore)), \
                patched(eng.Engine, "block", timers.wrap("block", in_block)), \
                patched(omezarr, "downsample", downsample), \
                patched(zarr.Array, "__setitem__", timers.wrap("write", zarr.Array.__setitem__)):
            t0 = time.perf_counter()
            rec.export(open_volume(src), model, out, planes=a.planes, device=dev, **kwargs)
            wall = time.perf_counter() - t0
        for h in hooks:
            h.remove()
        level0 = (pyramid_start[0] - t0) if pyramid_start else wall
        voxels = zo * shape[1] * shape[2]
        s = timers.seconds
        # NOTE: writes of the pyramid levels are zarr writes too; level 0's are those made before the pyramid began
        breakdown = {
            "read": s["read"],
            "interpolation": s["interpolation"],
            "copies_and_tiling": s["restore"] - s["network"],
            "network": s["network"],
            "other_chunk_work": s["block"] - s["read"] - s["interpolation"] - s["restore"],
            "write_all_levels": s["write"],
            "input_sample_for_the_fingerprint": s["fingerprint"],
            "pyramid_wall": wall - level0,
        }
        fpp = flops_per_pixel(net, dev, zo, min(shape[2], 256))
        passes = 2 if a.planes == "fuse" else 1
        total_flops = fpp * pixels[0]
        peak, how = device_peak(dev, a.peak_tflops, a.cpu_ghz)
        bs = a.batch or (32 if cuda else 8)
        alone = network_alone(net, dev, bs, zo, min(shape[2] + 64, 512)) * fpp
        print(f"output voxels/s: {voxels / wall / 1e6:.3f} M end to end ({wall:.1f} s), "
              f"{voxels / level0 / 1e6:.3f} M for level 0 alone ({level0:.1f} s)")
        print(f"network FLOPs per output voxel: {fpp * passes / 1e3:.1f} k nominal ({fpp / 1e3:.1f} k per pixel x "
              f"{passes} plane directions), {total_flops / voxels / 1e3:.1f} k effective (margins and tiles)")
        print(f"peak: {how}")
        if peak:
            print(f"fraction of peak: {total_flops / wall / peak * 100:.2f} % for the whole run "
                  f"({total_flops / wall / 1e9:.2f} GFLOP/s); {alone / peak * 100:.2f} % for the network alone "
                  f"({alone / 1e9:.2f} GFLOP/s on batches of {bs} planes of {zo} x {min(shape[2] + 64, 512)})")
        busy = sum(v for k, v in breakdown.items() if k != "pyramid_wall")
        print("where the time goes (seconds summed over threads; the pyramid as wall time):")
        for k, v in breakdown.items():
            share = f"{v / busy * 100:5.1f} %" if k != "pyramid_wall" else "   wall"
            print(f"  {k:<20} {v:8.2f} s  {share}")
        print(json.dumps({"device": label, "date": str(date.today()), "shape": shape, "factor": model.factor,
                          "planes": a.planes, "net": f"{net_name}/{size}", "output_voxels": voxels, "wall_s": wall,
                          "level0_s": level0, "voxels_per_s": voxels / wall, "flops_per_pixel": fpp,
                          "effective_flops_per_voxel": total_flops / voxels, "peak_flops": peak, "peak_how": how,
                          "network_alone_flops": alone, "breakdown_s": breakdown, "cpus": os.cpu_count()}))
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
