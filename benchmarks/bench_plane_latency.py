"""Time to show one new xz plane of a lazily reconstructed 250 x 250 x 250 layer in napari, on the CPU.

The input is the bundled medulla crop resampled to 253 x 250 x 250 and subsampled every 4th slice (64 x 250 x
250, F = 4); the reconstruction uses the untrained "small" rescnn (timing only, quality is irrelevant). For
several y positions the script moves the dims slider and waits until napari has the new plane; it prints the
wall time per plane (what the user waits) and, separately, the bare dask compute of one xz plane.
Target: < 1 s per plane.

With ``--fused-viewer`` it also shows the fused (xz + yz) layer as a bare dask array (not through the panel),
whose first plane of a 64-row block computes the whole block (slow on a CPU), and prints how long a new block
takes and the Qt event loop's delay (a 10 ms QTimer) meanwhile, with napari's asynchronous rendering off
(napari's default) and on. That is the cost the panel's restored layers keep off the GUI thread
(``napari_emsr.plugin.lazy_layer``; ``benchmarks/bench_gui_responsiveness.py --scenario browse`` measures the
panel). The script sets napari's preference for each run and puts the user's choice back at the end.

Run under a virtual X server::

    QT_QPA_PLATFORM=xcb xvfb-run -a python benchmarks/bench_plane_latency.py [--fused] [--fused-viewer]
"""

from __future__ import annotations

import argparse
import os
import time


def _input_volume():
    import numpy as np
    from scipy import ndimage

    from napari_emsr.io import as_volume
    from napari_emsr.sample import load_sample

    _, truth = load_sample(factor=4)
    gt = np.asarray(truth.data, np.float32)
    big = ndimage.zoom(gt, (253 / gt.shape[0], 250 / gt.shape[1], 250 / gt.shape[2]), order=1)
    aniso = np.clip(big[::4], 0, 255).astype(np.uint8)
    return as_volume(aniso, spacing=(40.0, 10.0, 10.0))


def _show_counted(viewer, volume, array, name: str, y: float | None = None):
    """Add the input and ``array`` as xz layers the way the panel does (at slider position ``y`` when given);
    return the layer and the list of computed chunks (their y index), which grows as napari computes them."""
    import numpy as np

    from napari_emsr.plugin.layers import paging_order, reconstruction_layer_kwargs, volume_to_layer_data
    from napari_emsr.reconstruct import output_spacing

    done: list[int] = []

    def count(block, block_info=None):
        done.append(block_info[0]["chunk-location"][1])
        return block

    data, kwargs, _ = volume_to_layer_data(volume, name="input")
    source = viewer.add_image(np.asarray(data), **kwargs)
    viewer.dims.order = paging_order(viewer.dims.ndim, "xz")  # y on the slider, as the panel does
    if y is not None:
        viewer.dims.set_point(1, y)
    # NOTE: the panel's layer keyword arguments add it hidden; it is shown once it follows the rolled dims.
    layer = viewer.add_image(
        array.map_blocks(count, dtype=array.dtype),
        **reconstruction_layer_kwargs(
            source, volume, output_spacing(volume), name=name, spacing=volume.spacing, unit=volume.unit
        ),
    )
    layer.visible = True
    return layer, done


def _wait_until(app, done: list, t0: float, timeout: float, what: str, pause: float = 0.0) -> None:
    """Run the event loop until a chunk was computed (``done`` not empty); fail after ``timeout`` s from ``t0``."""
    while not done:
        app.processEvents()
        if pause:
            time.sleep(pause)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"napari did not compute {what} within {timeout:g} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--planes", type=int, default=8, help="how many planes to time")
    parser.add_argument("--fused", action="store_true", help="also time one plane of the fused (xz + yz) layer")
    parser.add_argument(
        "--fused-viewer",
        action="store_true",
        help="also show a new fused block in napari, with asynchronous rendering off and on, and time the event loop",
    )
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_emsr.reconstruct import reconstruct
    from napari_emsr.train import TrainConfig, Trainer

    volume = _input_volume()
    model = Trainer(volume, TrainConfig(size=args.size, steps=1, patch=32, device="cpu")).model
    array = reconstruct(volume, model, planes="xz", device="cpu")
    print(
        f"device: cpu ({os.cpu_count()} cores), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"input {volume.shape} -> output {array.shape} {array.dtype}, chunks {array.chunksize}")

    rng = np.random.default_rng(0)
    ys = rng.choice(array.shape[1], size=args.planes, replace=False)
    t = []
    for y in ys[: max(2, args.planes // 2)]:
        t0 = time.perf_counter()
        array[:, int(y), :].compute()
        t.append(time.perf_counter() - t0)
    print(f"dask compute of one xz plane: median {np.median(t):.3f} s, max {max(t):.3f} s")
    if args.fused:
        # A fused plane needs the yz planes that cross it over its rows plus a margin: the first plane of a
        # chunk computes the whole chunk (rows of xz planes and their yz context); its neighbours then come free.
        fused = reconstruct(volume, model, planes="fuse", device="cpu")
        rows = fused.chunks[1][0]
        t0 = time.perf_counter()
        fused[:, rows // 2, :].compute()
        first = time.perf_counter() - t0
        print(f"dask compute of one fused plane: {first:.1f} s (a chunk of {rows} rows: {first / rows:.3f} s a plane)")

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    layer, done = _show_counted(viewer, volume, array, "xz-restored")
    for _ in range(20):
        app.processEvents()
    # NOTE: napari keeps an opportunistic dask cache, and adding the layer already computed a few planes;
    # time only planes never computed before.
    seen = set(done)
    print(f"planes computed while adding the layer: {len(seen)} of {array.shape[1]}")
    fresh = [int(y) for y in rng.permutation(array.shape[1]) if int(y) not in seen][: args.planes]
    times = []
    for y in fresh:
        done.clear()
        t0 = time.perf_counter()
        viewer.dims.set_point(1, float(y) * 10.0)
        # wait until the chunk of this plane was computed and the canvas had its events
        _wait_until(app, done, t0, 30, f"the plane at y={y}")
        app.processEvents()
        times.append(time.perf_counter() - t0)
    print(
        f"napari: new xz plane shown in median {np.median(times):.3f} s, "
        f"p95 {np.percentile(times, 95):.3f} s, "
        f"max {max(times):.3f} s over {len(times)} planes"
    )
    viewer.close()
    if args.fused_viewer:
        for background in (False, True):
            _fused_in_viewer(volume, model, background)


def _fused_in_viewer(volume, model, background: bool) -> None:
    """Show a fused layer, move to a block never computed, and record the 10 ms QTimer's gaps meanwhile."""
    import napari
    import numpy as np
    from napari.settings import get_settings
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_emsr.reconstruct import reconstruct

    before = get_settings().experimental.async_
    get_settings().experimental.async_ = background
    try:
        fused = reconstruct(volume, model, planes="fuse", device="cpu")
        viewer = napari.Viewer(show=True)
        app = QApplication.instance()
        _, done = _show_counted(viewer, volume, fused, "fused", y=0.0)
        # the first block, computed when the layer appears
        _wait_until(app, done, time.perf_counter(), 300, "the first fused block", pause=0.005)
        for _ in range(20):
            app.processEvents()
        done.clear()
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        rows = fused.chunks[1][0]
        t0 = time.perf_counter()
        viewer.dims.set_point(1, float(rows * 2 + rows // 2) * 10.0)  # the middle of the third block
        _wait_until(app, done, t0, 300, "a new fused block", pause=0.005)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.005)
        took = time.perf_counter() - t0
        timer.stop()
        gaps = np.diff([t0, *ticks]) * 1000.0
        mode = "on " if background else "off"
        print(
            f"napari async rendering {mode}: a new fused block shown in {took:.1f} s; event loop delay meanwhile "
            f"p50 {np.median(gaps):.0f} ms, p95 {np.percentile(gaps, 95):.0f} ms, max {gaps.max():.0f} ms "
            f"({len(ticks)} ticks)"
        )
        viewer.close()
    finally:
        get_settings().experimental.async_ = before  # napari keeps its settings: leave the user's choice


if __name__ == "__main__":
    main()
