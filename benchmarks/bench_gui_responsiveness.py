"""How responsive napari stays while the panel trains in its thread worker on the CPU.

A QTimer asks to tick every 10 ms on the GUI thread; each tick's lateness (actual interval - 10 ms) is the
delay the user would feel. Printed: p50 / p95 / max of that delay during training, and for comparison with
the viewer idle. Target: p95 < 50 ms.

Run under a virtual X server::

    QT_QPA_PLATFORM=xcb xvfb-run -a python benchmarks/bench_gui_responsiveness.py --steps 200
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def _measure(app, seconds: float | None, until=None) -> list[float]:
    from qtpy.QtCore import QTimer

    delays: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        delays.append(max(0.0, (now - last[0]) * 1000.0 - 10.0))
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    start = time.perf_counter()
    while True:
        app.processEvents()
        time.sleep(0.001)
        if until is not None and until():
            break
        if seconds is not None and time.perf_counter() - start > seconds:
            break
    timer.stop()
    return delays


def _summary(delays: list[float]) -> str:
    import numpy as np

    d = np.asarray(delays)
    return (
        f"n={d.size} p50={np.percentile(d, 50):.1f} ms p95={np.percentile(d, 95):.1f} ms max={d.max():.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", default="small")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores but one)")
    args = parser.parse_args(argv)

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
    print(
        f"device: cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()}); "
        f"torch {torch.__version__}, torch threads during training {torch.get_num_threads()}"
    )
    print(f"training: {args.steps} steps, net rescnn/{args.size}, patch {args.patch}, {seconds:.1f} s")
    print(f"event-loop delay idle:     {_summary(idle)}")
    print(f"event-loop delay training: {_summary(busy)}")
    viewer.close()


if __name__ == "__main__":
    main()
