"""The paired method in the dock panel (issue 10): LR and HR layers, the registration overlay, Train, the lazy
lateral Reconstruct, Export, and bad pairs, with a real viewer and real thread workers."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

TIMEOUT = 120_000  # ms
LR_SCALE, HR_SCALE = (40.0, 20.0, 20.0), (40.0, 10.0, 10.0)
Y0, X0 = 20, 10  # where the HR crop starts (HR pixels): LR (10, 5) at factor 2


@pytest.fixture(scope="module")
def pair():
    """An LR stack (its own noise, 20 nm pixels) of the sample's medulla crop and an HR crop inside it (10 nm)."""
    from napari_emsr.methods.paired.registration import downsample
    from napari_emsr.sample import _ground_truth

    planes = np.asarray(_ground_truth()[:6, :144, :144])
    rng = np.random.default_rng(0)
    lr = np.stack([np.clip(downsample(p.astype(np.float32), 2.0) + rng.normal(0, 4.0, (72, 72)), 0, 255)
                   for p in planes]).round().astype(np.uint8)
    return lr, planes[:, Y0 : Y0 + 96, X0 : X0 + 96].copy()


def _notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def _wait_for_message(qtbot, before, words):
    qtbot.waitUntil(lambda: any(words in m for m in _notifications()[before:]), timeout=TIMEOUT)
    return [m for m in _notifications()[before:] if words in m][-1]


def _pick_paired(panel):
    params = panel.params
    params.method = "paired"  # resets the network, patch and steps to the method's: tiny ones again
    params.net, params.size, params.steps, params.patch = "rescnn", "tiny", 4, 32
    params.val_every, params.preview_every = 2, 2


def test_paired_pair_overlay_train_reconstruct_export(panel, qtbot, pair, tmp_path):
    from napari_emsr.io import open_volume
    from napari_emsr.methods.paired.apply import export_lateral, lateral
    from napari_emsr.model import EMSRModel
    from napari_emsr.plugin.flows.paired import layer_volume

    viewer = panel.viewer
    lr_data, hr_data = pair
    lr = viewer.add_image(lr_data, name="lr", scale=LR_SCALE, units="nm")
    hr = viewer.add_image(hr_data, name="hr", scale=HR_SCALE, units="nm")
    _pick_paired(panel)
    assert panel.paired_box.isVisibleTo(panel) and not panel.input.isVisibleTo(panel)
    assert not panel.compare.isVisibleTo(panel) and panel.reconstruct.enhance_check.isVisibleTo(panel)
    assert list(panel.method.option_combos) == ["recipe", "noisier"]  # the recipe picker (I / II without an LR)

    # picking the pair: the factor from the pixel sizes, then the registration in a worker, drawn on the LR layer
    panel.paired_box.set_layers(lr, hr)
    assert panel.paired.params.factor == pytest.approx(2.0)
    assert panel.paired_box.factor_note.text() == "from pixel sizes"
    qtbot.waitUntil(lambda: "lr HR field" in viewer.layers, timeout=TIMEOUT)
    field = viewer.layers["lr HR field"]
    assert field.shape_type == ["rectangle"]
    reg = panel.paired.registration
    assert reg.offset == pytest.approx((Y0 / 2, X0 / 2), abs=0.15)
    corners = np.asarray(field.data[0])
    top, left = (np.array(reg.offset) - 0.5) * 20.0  # LR pixel edges in world units (nm)
    assert corners.min(axis=0) == pytest.approx((top, left), abs=1e-6)
    assert corners.max(axis=0) - corners.min(axis=0) == pytest.approx((960.0, 960.0))  # 96 HR px of 10 nm
    assert corners[0] == pytest.approx(((Y0 / 2 - 0.5) * 20, (X0 / 2 - 0.5) * 20), abs=3.0)  # the crop's corner
    assert "residual" in panel.status_label.text() and "residual" in panel.paired_box.registration_label.text()

    # Train: the HR layer is the target, the LR layer the input (registered by the trainer too)
    seen = {}

    def look(*_):
        for name in ("emsr preview", "emsr preview cubic", "emsr preview input"):
            if name in viewer.layers:
                seen[name] = viewer.layers[name].data.shape

    panel.status.events.step.connect(look)
    panel.start_training()
    assert panel.status.busy
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    panel.status.events.step.disconnect(look)
    model = panel.model
    assert model is not None and model.step == 4 and model.config["method"] == "paired"
    assert model.factor == pytest.approx(2.0) and model.config["recipe"] == "real"
    assert model.config["registration"]["offset"] == pytest.approx([Y0 / 2, X0 / 2], abs=0.15)
    assert panel.plot.steps == [1, 2, 3, 4] and panel.status.gain is not None
    assert seen["emsr preview"] == seen["emsr preview cubic"] == (96, 96)  # a held-out HR plane, beside the HR
    assert "emsr preview input" not in seen  # the HR layer itself is the left image
    # gone when training ends
    assert not any(name.startswith("emsr preview") for name in [layer.name for layer in viewer.layers])
    assert "s = 2" in panel.models.info_label.text()
    panel.params.steps = 2  # Resume: the same pair, the steps continue
    panel.start_training(resume=True)
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    assert panel.model.step == 6 and panel.model.config["options"]["lr_image"] == model.config["options"]["lr_image"]
    model = panel.model
    saved = tmp_path / "pair.emsr.pt"
    worker = panel.save_model(str(saved))
    qtbot.waitUntil(lambda: worker not in panel.workers, timeout=TIMEOUT)
    assert EMSRModel.load(saved).config["method"] == "paired"

    # Reconstruct: the LR layer's xy planes twice finer, lazily, over the LR layer
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: "lr x2" in viewer.layers, timeout=TIMEOUT)
    sr = viewer.layers["lr x2"]
    assert sr.data.shape == (6, 144, 144) and sr.data.dtype == np.uint8
    np.testing.assert_allclose(sr.scale, (40.0, 10.0, 10.0))
    np.testing.assert_allclose(sr.translate, (0.0, -5.0, -5.0))  # HR pixel 0's centre at LR -0.25 px
    assert sr.visible and tuple(viewer.dims.order) == (0, 1, 2)
    qtbot.waitUntil(lambda: sr.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT)
    z = int(round(viewer.dims.point[0] / 40.0))
    expected = np.asarray(lateral(layer_volume(lr), model)[z])
    np.testing.assert_array_equal(np.asarray(sr._slice.image.view), expected)
    panel.reconstruct_params.enhance = True  # the enhancer: same resolution, same place
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: "lr enhanced" in viewer.layers, timeout=TIMEOUT)
    enhanced = viewer.layers["lr enhanced"]
    assert enhanced.data.shape == lr_data.shape
    np.testing.assert_allclose(enhanced.scale, LR_SCALE)
    np.testing.assert_allclose(enhanced.translate, (0.0, 0.0, 0.0))
    panel.reconstruct_params.enhance = False

    # Export: the same file as the library's export_lateral
    out = tmp_path / "sr.ome.zarr"
    worker = panel.export_volume(str(out))
    assert worker is not None and panel.export_status.busy
    qtbot.waitUntil(lambda: not panel.export_status.busy, timeout=TIMEOUT)
    assert panel.export_status.message.startswith(f"Exported to {out}")
    ref = export_lateral(layer_volume(lr), model, tmp_path / "ref.ome.zarr")
    got, want = open_volume(out), open_volume(ref)
    assert got.shape == want.shape == (6, 144, 144)
    assert got.spacing == pytest.approx(want.spacing) and got.spacing == pytest.approx((40.0, 10.0, 10.0))
    np.testing.assert_array_equal(np.asarray(got.data), np.asarray(want.data))

    # bad pairs: a clear error each, and nothing made so far is lost
    kept = (panel.model, sr, enhanced, field)

    def nothing_lost():
        assert panel.model is kept[0]
        assert all(layer in viewer.layers for layer in kept[1:])

    before = len(_notifications())
    hr16 = viewer.add_image(hr_data.astype(np.uint16), name="hr16", scale=HR_SCALE, units="nm")
    panel.paired_box.set_layers(lr, hr16)
    message = _wait_for_message(qtbot, before, "uint8 and the HR image uint16")
    assert "same pixel type" in message
    assert panel.start_training() is None and not panel.status.busy
    nothing_lost()
    before = len(_notifications())
    panel.paired_box.set_layers(lr, viewer.add_image(hr_data[2], name="hr2d", scale=(10, 10), units="nm"))
    assert "a stack of 6 planes and the HR image a 2D image" in _wait_for_message(qtbot, before, "2D image")
    nothing_lost()
    before = len(_notifications())
    noise = np.random.default_rng(2).integers(0, 255, hr_data.shape, dtype=np.uint8)
    panel.paired_box.set_layers(lr, viewer.add_image(noise, name="noise", scale=HR_SCALE, units="nm"))
    message = _wait_for_message(qtbot, before, "could not be registered")
    assert "residual" in message and "Factor s" in message and "--factor" not in message
    nothing_lost()
    before = len(_notifications())
    panel.paired_box.set_layers(lr, hr)
    panel.paired_box.factor_box.setValue(1.2)  # typed: the HR would cover more than the LR field
    assert panel.paired.params.factor_from == "typed"
    message = _wait_for_message(qtbot, before, "more than the LR image")
    assert "the LR and HR layers are not swapped" in message
    nothing_lost()
    before = len(_notifications())
    panel.paired_box.set_layers(lr, viewer.add_image(hr_data[:, :90, :80], name="odd", units="nm"))  # no pixel sizes
    assert "does not fit the sizes" in _wait_for_message(qtbot, before, "factor")
    nothing_lost()


def test_models_of_the_other_kind_are_refused_clearly(panel, qtbot, pair, tmp_path):
    from napari_emsr.methods.paired import as_stack
    from napari_emsr.train import TrainConfig, Trainer

    viewer = panel.viewer
    lr_data, hr_data = pair
    lr = viewer.add_image(lr_data, name="lr", scale=LR_SCALE, units="nm")
    iso = Trainer(panel.current_volume(), TrainConfig(net="rescnn", size="tiny", steps=1, patch=32, batch=1)).model
    paired = Trainer(as_stack(hr_data[:, :64, :64]), TrainConfig(method="paired", factor=2.0, net="rescnn",
                                                                 size="tiny", steps=1, patch=32, batch=1,
                                                                 options={"recipe": "I"})).model
    _pick_paired(panel)
    panel.paired_box.set_layers(lr, None)
    panel.model = iso
    before = len(_notifications())
    assert panel.reconstruct_layers() is None
    assert panel.export_volume(str(tmp_path / "x.tif")) is None
    told = [m for m in _notifications()[before:] if "cannot make xy planes finer" in m]
    assert len(told) == 2 and "method 'isotropic'" in told[0]
    panel.params.method = "isotropic"
    panel.model = paired
    before = len(_notifications())
    assert panel.reconstruct_layers(["xz"]) is None
    assert any("super-resolves xy planes" in m and "method paired" in m for m in _notifications()[before:])
    assert not (tmp_path / "x.tif").exists()
    # the HR alone (no LR layer): recipe I makes the LR inputs, at the factor typed
    _pick_paired(panel)
    hr = viewer.add_image(hr_data, name="hr", scale=HR_SCALE, units="nm")
    panel.paired_box.set_layers(None, hr)
    panel.params.set_option("recipe", "I")
    panel.paired_box.factor_box.setValue(3.0)
    panel.params.steps = 2
    panel.start_training()
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    model = panel.model
    assert model is not paired and model.step == 2 and model.config["recipe"] == "I"
    assert model.factor == pytest.approx(3.0) and model.config["registration"] is None


def test_training_with_another_lr_layer_lets_the_old_one_go(panel, pair):
    """The panel keeps one in-memory LR image for the trainer: the same layer again reuses it, another layer's
    data replaces it (a removed or replaced LR stack is not kept alive by the plugin)."""
    from napari_emsr.methods.paired import pairs as paired

    viewer = panel.viewer
    lr_data, hr_data = pair
    lr1 = viewer.add_image(lr_data, name="lr1", scale=LR_SCALE, units="nm")
    lr2 = viewer.add_image(lr_data.copy(), name="lr2", scale=LR_SCALE, units="nm")
    hr = viewer.add_image(hr_data, name="hr", scale=HR_SCALE, units="nm")
    _pick_paired(panel)
    flow = panel.paired
    panel.paired_box.set_layers(lr1, hr)
    key1 = flow.training_inputs()[1].options["lr_image"]
    assert flow.training_inputs()[1].options["lr_image"] == key1 and key1 in paired._IN_MEMORY
    panel.paired_box.set_layers(lr2, hr)
    key2 = flow.training_inputs()[1].options["lr_image"]
    assert key2 != key1 and key2 in paired._IN_MEMORY and key1 not in paired._IN_MEMORY
    np.testing.assert_array_equal(np.asarray(paired.open_image(key2).data), lr_data)
