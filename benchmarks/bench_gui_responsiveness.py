"""How responsive napari stays with the napari-emsr panel: while it trains, and while a user browses its layers.

A QTimer asks to tick every 10 ms on the GUI thread; each tick's lateness (actual interval - 10 ms) is the
delay the user would feel. Printed: p50 / p95 / max of that delay.

- ``training`` (default): during training on the CPU in the panel's thread worker, and with the viewer idle
  for comparison. Target: p95 < 50 ms.
- ``browse``: with napari's asynchronous rendering OFF (napari's default: napari slices on the GUI thread), the
  panel reconstructs xz-restored and fused layers of the sample with an untrained network, then the script
  browses them the way a user does: pages through y, rolls the axes to xy and yz, transposes, switches to 3D
  and back, ticks yz and presses Reconstruct again (the view turns to yz while the xz layers are visible).
  Each phase's delay is printed, and all of them together. Target: p95 < 100 ms, max < 1 s. The script puts
  napari's preference back as it found it.

Run under a virtual X server::

    QT_QPA_PLATFORM=xcb xvfb-run -a python benchmarks/bench_gui_responsiveness.py --steps 200
    QT_QPA_PLATFORM=xcb xvfb-run -a python benchmarks/bench_gui_responsiveness.py --scenario browse
"""

from __future__ import annotations

import argparse
import os
import platform
import time


class _Delay:
    """Records the lateness of a 10 ms QTimer on the GUI thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.delays: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.delays.append(max(0.0, (now - self._last) * 1000.0 - 10.0))
        self._last = now

    def stop(self) -> list[float]:
        self._tick()  # an action still blocking when the phase ends counts too
        self.timer.stop()
        return self.delays


def _run(app, seconds: float | None, until=None) -> None:
    start = time.perf_counter()
    while True:
        app.processEvents()
        time.sleep(0.001)
        if until is not None and until():
            break
        if seconds is not None and time.perf_counter() - start > seconds:
            break


def _measure(app, seconds: float | None, until=None) -> list[float]:
    delay = _Delay()
    _run(app, seconds, until)
    return delay.stop()


def _summary(delays: list[float]) -> str:
    import numpy as np

    d = np.asarray(delays)
    # NOTE: a freeze is one late tick however long it lasts, so percentiles hide it: max and the frozen time tell.
    frozen = d[d > 100].sum() / 1000.0
    return (
        f"n={d.size} p50={np.percentile(d, 50):.1f} ms p95={np.percentile(d, 95):.1f} ms max={d.max():.1f} ms "
        f"frozen(>100 ms)={frozen:.1f} s"
    )


def _device_line() -> str:
    import torch

    return (
        f"device: cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def _training(args) -> None:
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_emsr.plugin._widget import EMSRWidget

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-emsr", "medulla_anisotropic")
    panel = EMSRWidget(viewer)
    viewer.window.add_dock_widget(panel)
    app = QApplication.instance()
    params = panel.params
    params.device = "cpu"
    params.method = "isotropic"
    params.steps, params.patch, params.size = args.steps, args.patch, args.size
    params.preview_every = max(1, args.steps // 10)
    params.threads = args.threads or None
    idle = _measure(app, 3.0)
    panel.start_training()
    # skip the trainer's start-up (reading the volume, building the net) so only steps are measured
    while panel.status.busy and panel.status.step == 0:
        app.processEvents()
        time.sleep(0.005)
    t0 = time.perf_counter()
    busy = _measure(app, None, until=lambda: not panel.status.busy)
    seconds = time.perf_counter() - t0
    print(_device_line() + f", torch threads during training {torch.get_num_threads()}")
    print(f"training: {args.steps} steps, net rescnn/{args.size}, patch {args.patch}, {seconds:.1f} s")
    print(f"event-loop delay idle:     {_summary(idle)}")
    print(f"event-loop delay training: {_summary(busy)}")
    viewer.close()


def _browse(args) -> None:
    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    from napari_emsr.plugin._widget import EMSRWidget
    from napari_emsr.train import TrainConfig, Trainer

    settings = get_settings().experimental
    before = settings.async_
    settings.async_ = False
    try:
        viewer = napari.Viewer(show=True)
        viewer.open_sample("napari-emsr", "medulla_anisotropic")
        panel = EMSRWidget(viewer)
        viewer.window.add_dock_widget(panel)
        app = QApplication.instance()
        panel.params.device = "cpu"
        volume = panel.current_volume()
        # an untrained network: timing only, quality is irrelevant
        panel.model = Trainer(volume, TrainConfig(size=args.size, steps=1, patch=32, device="cpu")).model
        _run(app, 2.0)
        print(_device_line() + f"; napari asynchronous rendering {'on' if settings.async_ else 'off'}")
        print(f"input {volume.shape}, network rescnn/{args.size} (untrained)")
        step = float(viewer.layers[0].scale[1])
        phases: dict[str, list[float]] = {}

        def phase(name: str, action, seconds: float) -> None:
            delay = _Delay()
            t0 = time.perf_counter()
            action()
            _run(app, seconds)
            phases[name] = delay.stop()
            print(f"  {name:<34} {_summary(phases[name])}  ({time.perf_counter() - t0:.1f} s)", flush=True)

        def reconstruct(planes) -> None:
            panel.reconstruct_params.planes = planes
            old = panel.reconstructed_layers
            panel.reconstruct_layers()
            _run(app, 600, until=lambda: panel.reconstructed_layers is not old)

        ny = volume.shape[1]

        def page() -> None:
            for y in range(ny // 8, ny, ny // 8):
                viewer.dims.set_point(1, y * step)
                _run(app, args.pause)

        print("event-loop delay while browsing (async rendering off):")
        # napari's own cost, for reference: the input alone in 3D (software OpenGL under Xvfb is slow)
        phase("reference: 3D, input layer only", lambda: setattr(viewer.dims, "ndisplay", 3), args.pause)
        phase("reference: back to 2D", lambda: setattr(viewer.dims, "ndisplay", 2), args.pause)
        reference = set(phases)
        phase("reconstruct xz + fused", lambda: reconstruct(("xz", "fuse")), args.pause)
        phase("page through y (xz view)", page, args.pause)
        phase("roll to xy", lambda: setattr(viewer.dims, "order", (0, 1, 2)), args.pause)
        phase("page through z (xy view)", lambda: viewer.dims.set_point(0, 300.0), args.pause)
        phase("transpose", viewer.dims.transpose, args.pause)
        phase("roll to yz", lambda: setattr(viewer.dims, "order", (2, 0, 1)), args.pause)
        phase("3D view", lambda: setattr(viewer.dims, "ndisplay", 3), args.pause)
        phase("back to 2D", lambda: setattr(viewer.dims, "ndisplay", 2), args.pause)
        phase("tick yz, Reconstruct again", lambda: reconstruct(("xz", "yz", "fuse")), args.pause)
        phase("page through x (yz view)", lambda: viewer.dims.set_point(2, ny // 3 * step), args.pause)
        phase("back to xz, wait for blocks", lambda: setattr(viewer.dims, "order", (1, 0, 2)), args.settle)
        everything = [d for name, delays in phases.items() if name not in reference for d in delays]
        print(f"event-loop delay, all phases but the reference: {_summary(everything)}")
        for layer in panel.reconstructed_layers:
            seconds = getattr(layer.data, "seconds", [])
            took = ", ".join(f"{s:.1f}" for s in seconds)
            print(f"  {layer.name}: {len(seconds)} block(s) restored in the background ({took} s)")
        panel.cleanup()
        _run(app, 60, until=lambda: not panel.workers)
        viewer.close()
    finally:
        settings.async_ = before  # napari saves its settings: leave the user's choice


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("training", "browse"), default="training")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", default="small")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores but one)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds after each browsing action")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of the last browsing phase")
    args = parser.parse_args(argv)
    if args.scenario == "training":
        _training(args)
    else:
        _browse(args)


if __name__ == "__main__":
    main()
