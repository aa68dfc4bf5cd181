"""Screenshots of the napari-emsr panel for the docs: training in progress, then a reconstruction.

Run under a virtual X server (the window must really be drawn)::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" python scripts/screenshots.py

It opens napari with the bundled anisotropic sample, docks the panel, trains a small network on the CPU,
saves ``docs/images/training.png`` mid-training (plot and live preview visible), then adds the lazy xz
reconstruction and saves ``docs/images/reconstruction.png`` with an xz plane of the input beside the
reconstructed one (grid mode, dims rolled so that y is the slider).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _wait(app, condition, timeout: float) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("timed out waiting for the panel")
        app.processEvents()
        time.sleep(0.01)


def _settle(app, seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps (the first shot is at half)")
    parser.add_argument("--size", default="small", help="network size preset")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_emsr.plugin._widget import PREVIEW_CUBIC_LAYER, PREVIEW_LAYER, EMSRWidget

    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-emsr")
    viewer.window.resize(1600, 1200)
    viewer.open_sample("napari-emsr", "medulla_anisotropic")
    panel = EMSRWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Isotropic reconstruction", area="right")
    app = QApplication.instance()
    params = panel.params
    params.device = "cpu"
    params.method = "isotropic"
    params.steps, params.patch, params.size = args.steps, args.patch, args.size
    every = max(1, args.steps // 20)
    params.preview_every = params.val_every = every
    _settle(app, 1.0)

    panel.start_training()
    half = args.steps // 2
    _wait(
        app,
        lambda: panel.status.step >= half and PREVIEW_LAYER in viewer.layers,
        1800,
    )
    viewer.reset_view()
    _settle(app, 0.5)
    shot = viewer.screenshot(str(args.out / "training.png"), canvas_only=False, flash=False)
    print(f"training.png {shot.shape} at step {panel.status.step}")
    _wait(app, lambda: not panel.status.busy, 3600)
    print(panel.status.message)

    for name in (PREVIEW_LAYER, PREVIEW_CUBIC_LAYER):
        viewer.layers.remove(name)
    source = viewer.layers["medulla anisotropic"]
    ny = source.data.shape[1]
    # NOTE: roll the dims to the xz view before the reconstruction arrives (the panel would do it too);
    # Mesa's software GL under Xvfb has crashed repainting in the middle of that change.
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_point(1, float(source.scale[1]) * (ny // 2))
    _settle(app, 0.5)
    panel.reconstruct_params.planes = ("xz",)
    panel.reconstruct_layers()
    _wait(app, lambda: bool(panel.reconstructed_layers), 600)
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 2)
    viewer.reset_view()
    _settle(app, 1.5)
    shot = viewer.screenshot(str(args.out / "reconstruction.png"), canvas_only=False, flash=False)
    print(f"reconstruction.png {shot.shape}; layer data {np.shape(panel.reconstructed_layers[0].data)}")
    viewer.close()


if __name__ == "__main__":
    main()
