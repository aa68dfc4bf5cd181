"""Screenshots of the napari-emsr panel for the README: a dropped file, training, the comparison views, export.

Run under a virtual X server (the window must really be drawn; Qt's xcb platform)::

    xvfb-run -a -s "-screen 0 1920x1200x24" env QT_QPA_PLATFORM=xcb OMP_NUM_THREADS=1 \
        python scripts/screenshots.py --steps 300

It opens napari (a 1900 x 1150 window) with the panel docked and no image, and saves:

- ``docs/images/start.png``: the empty viewer, the panel offering the sample;
- ``docs/images/dropped.png``: a TIFF that states its voxel size, opened by napari's own reader (scale 1, 1, 1):
  the Input box offers the file's voxel size;
- ``docs/images/picked.png``: the bundled sample picked, the budget this device is recommended under the budget;
- ``docs/images/training.png`` half-way through training: the bar with the steps and the time left (with
  ``--steps``, estimated from the measured speed; the script prints the estimate and the time it really took),
  the loss and gain plot, the labelled live preview planes;
- ``docs/images/reconstruction.png``: *Side by side* in xz (input | cubic | restored in napari's grid at the
  same plane, fitted to the window, the cells named on the canvas) with the quality readout (no ground truth)
  and the cost of a new plane in the panel;
- ``docs/images/compare_yz.png``: the same in yz (page through x);
- ``docs/images/uncertainty.png``: a fused Reconstruct and its uncertainty layer (where the xz and yz
  restorations disagree) side by side;
- ``docs/images/export.png``: a fused export running: blocks, elapsed and time left under the Export button;
- ``docs/images/paired.png``: the paired method: the sample pair (File > Open Sample > napari-emsr > LR / HR
  pair: an LR stack, x2 coarser, and a noisy HR crop) picked under Paired LR / HR, the registered HR field
  outlined on the LR layer, a trained model's lazy x2 layer beside it (LR | x2 in napari's grid, the outline on
  both).

``--only dropped`` or ``--only paired`` makes that one alone.
"""

from __future__ import annotations

import argparse
import tempfile
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
    parser.add_argument("--minutes", type=float, default=1.0, help="training budget in minutes (the shot is at half)")
    parser.add_argument("--steps", type=int, default=0,
                        help="training budget in steps instead of minutes (the shot is at half; the time left is "
                             "then the panel's estimate, compared with the time it takes)")
    parser.add_argument("--size", default="small", help="network size preset")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    parser.add_argument("--only", choices=("all", "dropped", "paired"), default="all", help="which screenshots to make")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_emsr.plugin.panel import EMSRWidget

    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-emsr")
    viewer.window.resize(1900, 1150)
    panel = EMSRWidget(viewer)
    dock = viewer.window.add_dock_widget(panel, name="Isotropic reconstruction", area="right")
    app = QApplication.instance()
    _settle(app, 0.5)
    # NOTE: napari docks the panel narrower than its rows (a horizontal scroll bar, buttons cut at the right edge);
    # widen the dock to the panel's own width, as a user drags the splitter.
    wanted = panel.scroll.widget().sizeHint().width() + panel.scroll.verticalScrollBar().sizeHint().width() + 8
    print(f"dock width: {dock.width()} px, the panel's rows want {wanted} px")
    dock.window().resizeDocks([dock], [wanted], Qt.Orientation.Horizontal)
    params = panel.params
    params.device = "cpu"
    params.method = "isotropic"
    params.patch, params.size = args.patch, args.size
    _settle(app, 1.0)
    if args.only == "paired":
        _paired(app, viewer, panel, args)
        _close(app, viewer, panel)
        return
    shot = viewer.screenshot(str(args.out / "start.png"), canvas_only=False, flash=False)
    print(f"start.png {shot.shape}: {panel.sample_button.text()}")

    with tempfile.TemporaryDirectory() as tmp:
        _dropped(app, viewer, panel, args, Path(tmp))
    if args.only == "dropped":
        _close(app, viewer, panel)
        return

    panel.sample_button.click()  # the npe2 sample, picked
    # NOTE: the dropped stack had a recommendation of its own: wait for the sample's (the hint says "measuring" first)
    _wait(app, lambda: panel.recommended is not None and panel.budget_hint.text().startswith("Recommended:"), 600)
    _settle(app, 1.0)
    shot = viewer.screenshot(str(args.out / "picked.png"), canvas_only=False, flash=False)
    print(f"picked.png {shot.shape}: {panel.budget_hint.text()}")
    _train(app, viewer, panel, args)

    # NOTE: roll the dims to the xz view before the layers arrive (the panel does it too); Mesa's software GL
    # under Xvfb has crashed repainting in the middle of that change.
    source = viewer.layers["medulla anisotropic"]
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_point(1, float(source.scale[1]) * (source.data.shape[1] // 2))
    _settle(app, 0.5)
    panel.reconstruct_params.planes = ("xz",)
    panel.reconstruct_layers()
    _wait(app, lambda: bool(panel.reconstructed_layers), 600)
    _wait(app, lambda: panel.quality is not None, 600)
    panel.show_side_by_side("xz")
    _wait(app, lambda: panel.comparing is not None, 600)
    restored = panel.comparing[2]
    _wait(app, lambda: restored.data.view == "restored" and panel.block_worker is None, 600)
    _settle(app, 1.5)
    shot = viewer.screenshot(str(args.out / "reconstruction.png"), canvas_only=False, flash=False)
    print(f"reconstruction.png {shot.shape}: {panel.reconstruct.quality_label.text()}")

    panel.show_side_by_side("yz")
    _wait(app, lambda: panel.comparing is not None and panel.comparing[2].name.endswith("yz-restored"), 600)
    restored = panel.comparing[2]
    _wait(app, lambda: restored.data.view == "restored" and panel.block_worker is None, 600)
    _settle(app, 1.5)
    shot = viewer.screenshot(str(args.out / "compare_yz.png"), canvas_only=False, flash=False)
    print(f"compare_yz.png {shot.shape}")

    # a fused Reconstruct: the fused layer and its uncertainty over it, in xz, one block restored
    viewer.grid.enabled = False
    panel.reconstruct_params.planes = ("fuse",)
    panel.reconstruct_layers()
    _wait(app, lambda: any(layer.name.endswith("uncertainty") for layer in panel.reconstructed_layers), 600)
    fused, unc = panel.reconstructed_layers
    for layer in viewer.layers:
        layer.visible = layer in (fused, unc)
    # fused | uncertainty in napari's grid (the panel draws the uncertainty over the fused layer)
    for member in (fused, unc):
        viewer.layers.move(viewer.layers.index(member), len(viewer.layers))
        member.name_overlay.visible = True
    viewer.grid.stride, viewer.grid.shape, viewer.grid.enabled = 1, (1, 2), True
    # NOTE: the canvas still says "input | cubic | restored" from Side by side; the name overlays say it here.
    viewer.canvas.overlays["text"].visible = False
    viewer.fit_to_view(layers=[fused])
    _wait(app, lambda: unc.data.view == "restored" and panel.block_worker is None, 900)
    _settle(app, 1.5)
    shot = viewer.screenshot(str(args.out / "uncertainty.png"), canvas_only=False, flash=False)
    print(f"uncertainty.png {shot.shape}: {panel.reconstruct.estimate_label.text()}")

    # a fused export, a few seconds in: blocks, elapsed and time left under the button
    with tempfile.TemporaryDirectory() as tmp:
        panel.reconstruct_params.export_planes = "fuse"
        panel.export_volume(str(Path(tmp) / "iso.ome.zarr"))
        _wait(app, lambda: panel.export_status.elapsed >= 3.0, 600)
        _settle(app, 0.5)
        shot = viewer.screenshot(str(args.out / "export.png"), canvas_only=False, flash=False)
        print(f"export.png {shot.shape}: {panel.export.progress_bar.text()}")
        _wait(app, lambda: not panel.export_status.busy, 1800)
        print(panel.export_status.message, f"(estimated {panel.export_status.estimate:.0f} s)")
    viewer.grid.enabled = False
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    _paired(app, viewer, panel, args)
    _close(app, viewer, panel)


def _dropped(app, viewer, panel, args, tmp: Path) -> None:
    """dropped.png: a TIFF stating its voxel size, opened by napari's own reader, and the panel's offer."""
    import numpy as np
    import tifffile

    from napari_emsr.plugin._sample_data import make_sample_anisotropic

    data = np.asarray(make_sample_anisotropic()[0][0])
    path = tmp / "stack.tif"  # z 40 nm, xy 10 nm, as ImageJ writes them
    tifffile.imwrite(path, data, imagej=True, resolution=(100.0, 100.0), metadata={"spacing": 0.04, "unit": "um"})
    layer = viewer.open(str(path), plugin="napari")[0]  # napari's own reader keeps no voxel size
    panel.input.set_layer(layer)
    offer = panel.inputs.offer
    _wait(app, lambda: offer.isVisibleTo(panel), 600)
    viewer.reset_view()
    _settle(app, 1.0)
    shot = viewer.screenshot(str(args.out / "dropped.png"), canvas_only=False, flash=False)
    print(f"dropped.png {shot.shape}: {offer.label.text()}")
    offer.button.click()
    _wait(app, lambda: abs(panel.input_params.factor - 4.0) < 1e-6, 60)
    print(f"after 'Use the file's': scale {tuple(layer.scale)}, factor {panel.input_params.factor:g}")
    viewer.layers.remove(layer)
    _wait(app, lambda: panel.sample_button.isVisibleTo(panel), 60)


def _train(app, viewer, panel, args) -> None:
    """training.png half-way through training; prints the time left the panel said and the time it took."""
    from napari_emsr.plugin.panel import PREVIEW_LAYER

    params = panel.params
    if args.steps:
        params.budget, params.steps = "steps", args.steps
        speed = panel.train_speed
        if speed is not None:
            print(f"the panel's probe: {speed.how}: {speed.rate:.3g} steps/s, so {args.steps} steps in about "
                  f"{args.steps / speed.rate:.0f} s")
        reached = lambda: panel.status.step >= args.steps // 2  # noqa: E731
    else:
        params.budget, params.minutes = "minutes", args.minutes
        reached = lambda: panel.status.elapsed >= args.minutes * 30.0  # noqa: E731
    started = time.perf_counter()
    panel.start_training()
    _wait(app, lambda: reached() and PREVIEW_LAYER in viewer.layers, 3600)
    viewer.reset_view()
    _settle(app, 0.5)
    shot = viewer.screenshot(str(args.out / "training.png"), canvas_only=False, flash=False)
    said, at = panel.status.seconds_left(), time.perf_counter()
    print(f"training.png {shot.shape}: {panel.train.progress_bar.format()}")
    _wait(app, lambda: not panel.status.busy, 3600)
    ended = time.perf_counter()
    print(panel.status.message)
    if said is not None:
        print(f"time left: the panel said {said:.0f} s at the shot, it took {ended - at:.0f} s "
              f"(training {ended - started:.0f} s in all)")


def _close(app, viewer, panel) -> None:
    panel.cleanup()
    _wait(app, lambda: not panel.workers, 600)
    viewer.close()


def _paired(app, viewer, panel, args) -> None:
    """paired.png: an LR stack and a noisy HR crop of the sample, registered, trained, the x2 layer beside the LR."""
    viewer.open_sample("napari-emsr", "medulla_pair")  # an LR stack (20 nm) and an HR crop (10 nm), both noisy
    lr_layer, hr_layer = viewer.layers["medulla LR (20 nm)"], viewer.layers["medulla HR crop (10 nm)"]
    params = panel.params
    params.method = "paired"
    params.device, params.patch, params.size = "cpu", args.patch, args.size
    params.budget, params.minutes = "minutes", args.minutes
    panel.paired_box.set_layers(lr_layer, hr_layer)
    field = f"{lr_layer.name} HR field"
    _wait(app, lambda: field in viewer.layers, 600)
    print(f"paired: {panel.status_label.text()}")
    panel.start_training()
    _wait(app, lambda: not panel.status.busy, 3600)
    print(panel.status.message)
    for name in ("emsr preview", "emsr preview cubic"):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    panel.reconstruct_layers()
    result = f"{lr_layer.name} x2"
    _wait(app, lambda: result in viewer.layers, 600)
    sr = viewer.layers[result]
    _wait(app, lambda: sr.data.view == "restored" and panel.block_worker is None, 900)
    # LR and its outline | x2 and the same outline, in napari's grid
    outline = viewer.layers[field]
    copy = viewer.add_shapes(outline.data, shape_type="rectangle", edge_color="yellow", face_color="transparent",
                             edge_width=float(outline.edge_width[0]), name=f"{field} (on x2)", units="nm")
    for layer in viewer.layers:
        layer.visible = layer in (lr_layer, outline, sr, copy)
    # NOTE: napari's grid groups the layers by their index in the list, hidden ones included: first in the list,
    # (LR, outline) and (x2, outline) are the two cells, each outline drawn over its image.
    for member in (copy, sr, outline, lr_layer):
        viewer.layers.move(viewer.layers.index(member), 0)
    for member in (lr_layer, sr):
        member.name_overlay.visible = True
    viewer.grid.stride, viewer.grid.shape, viewer.grid.enabled = 2, (1, 2), True
    viewer.fit_to_view(layers=[lr_layer])
    _settle(app, 0.5)
    _wait(app, lambda: sr.data.view == "restored" and panel.block_worker is None, 900)
    _settle(app, 1.5)
    shot = viewer.screenshot(str(args.out / "paired.png"), canvas_only=False, flash=False)
    print(f"paired.png {shot.shape}: {panel.paired_box.registration_label.text()}")


if __name__ == "__main__":
    main()
