"""Speed: training samples/s and reconstruction output voxels/s for each network, and cubic interpolation's
voxels/s through the same lazy pipeline, on one device.

    python benchmarks/bench_speed.py --device cpu
    python benchmarks/bench_speed.py --device cuda --batch 64 --size base

Uses the bundled sample (33 x 192 x 192 at F = 4); the network is untrained (speed does not depend on weights).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date


def main() -> None:
    import torch

    from napari_emsr.device import list_devices, resolve_device
    from napari_emsr.reconstruct import reconstruct
    from napari_emsr.sample import load_sample
    from napari_emsr.train import TrainConfig, Trainer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--nets", default="rescnn,uformer")
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    dev = resolve_device(a.device)
    label = dict(list_devices())[dev]
    vol, _ = load_sample(4)
    results = []

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    arr = reconstruct(vol, "cubic", chunks=(16, 192))
    t0 = time.perf_counter()
    out = arr.compute()
    dt = time.perf_counter() - t0
    results.append({"what": "cubic reconstruct", "voxels_per_s": out.size / dt})
    for net in a.nets.split(","):
        cfg = TrainConfig(net=net, size=a.size, steps=a.steps + 5, batch=a.batch, patch=a.patch, device=dev,
                          val_every=10**9, preview_every=0)
        tr = Trainer(vol, cfg)
        it = tr.run()
        for _ in range(5):  # warm-up
            next(it)
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            next(it)
        sync()
        dt = time.perf_counter() - t0
        params = sum(p.numel() for p in tr.net.parameters())
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        model = tr.model
        rec = reconstruct(vol, model, planes="xz", chunks=(16, 192), device=dev)
        # warm-up: a whole pass, so every dask worker thread has made its CUDA/cuDNN handles (a first call
        # per thread costs ~0.1 s, which on this small volume would dominate the figure)
        rec.compute()
        t1 = time.perf_counter()
        o = rec.compute()
        sync()
        dr = time.perf_counter() - t1
        row = {"what": f"{net}/{a.size}", "params": params, "train_samples_per_s": a.steps * a.batch / dt,
               "patch": a.patch, "batch": a.batch, "reconstruct_voxels_per_s": o.size / dr}
        if dev.startswith("cuda"):
            row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        results.append(row)
    print(f"device: {label}; torch threads {torch.get_num_threads()}; {date.today()}")
    for r in results:
        if "params" in r:
            print(f"  {r['what']:<16} {r['params']:>9,} params  train {r['train_samples_per_s']:8.1f} samples/s "
                  f"({a.patch}x{a.patch}, batch {a.batch})  "
                  f"reconstruct {r['reconstruct_voxels_per_s'] / 1e6:7.2f} Mvoxel/s")
        else:
            print(f"  {r['what']:<16} reconstruct {r['voxels_per_s'] / 1e6:7.2f} Mvoxel/s")
    print(json.dumps({"device": label, "date": str(date.today()), "results": results}))


if __name__ == "__main__":
    main()
