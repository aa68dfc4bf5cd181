"""The paired LR/HR method (papers 002 and 004): registration, pairs, training, lateral application, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emsr.errors import InputError
from napari_emsr.methods.paired.registration import downsample, register


@pytest.fixture(scope="module")
def medulla():
    from napari_emsr.sample import _ground_truth

    return np.asarray(_ground_truth()[:6, :144, :144])


def _lr_of(planes: np.ndarray, factor: float, sigma: float, seed: int) -> np.ndarray:
    """A second acquisition: every plane down-sampled by ``factor`` with its own noise, uint8."""
    rng = np.random.default_rng(seed)
    out = [downsample(p.astype(np.float32), factor) for p in planes]
    return np.stack([np.clip(o + rng.normal(0, sigma, o.shape), 0, 255) for o in out]).round().astype(np.uint8)


@pytest.mark.parametrize("factor", [2.0, 3.0, 2.5])
def test_registration_of_a_shifted_and_cropped_pair(medulla, factor):
    plane = medulla[3].astype(np.float32)
    lr = _lr_of(plane[None], factor, 4.0, 0)[0]
    y0, x0 = 30, 18  # HR pixels
    hr = plane[y0 : y0 + 90, x0 : x0 + 84] + np.random.default_rng(1).normal(0, 4, (90, 84))
    reg = register(lr, hr, factor)
    assert reg.searched
    assert reg.offset == pytest.approx((y0 / factor, x0 / factor), abs=0.15)
    assert reg.residual < 0.5
    assert "residual" in reg.note


def test_registration_refuses_unrelated_images_with_the_residual(medulla):
    lr = _lr_of(medulla[3:4].astype(np.float32), 2.0, 4.0, 0)[0]
    noise = np.random.default_rng(2).random((80, 80)).astype(np.float32)
    with pytest.raises(InputError, match=r"could not be registered.*residual \d\.\d+"):
        register(lr, noise, 2.0)


def test_registration_refuses_an_hr_larger_than_the_lr_field(medulla):
    lr = _lr_of(medulla[3:4, :60, :60].astype(np.float32), 2.0, 4.0, 0)[0]  # 30 x 30 LR px
    with pytest.raises(InputError, match="more than the LR image"):
        register(lr, medulla[3, :100, :100], 2.0)


def test_pair_checks(medulla):
    from napari_emsr.methods.paired import as_stack, check_pair, pair_factor

    hr = as_stack(medulla[:, :96, :96])
    lr = as_stack(_lr_of(medulla[:, :96, :96], 2.0, 2.0, 0))
    assert pair_factor(lr, hr) == pytest.approx(2.0)
    check_pair(lr, hr)
    with pytest.raises(InputError, match="uint8.*float32|pixel type"):
        check_pair(lr, as_stack(medulla[:, :96, :96].astype(np.float32)))
    with pytest.raises(InputError, match="2D image.*stack of 6 planes|same dimensions"):
        check_pair(as_stack(np.asarray(lr.data[0])), hr)
    with pytest.raises(InputError, match="does not fit the sizes"):
        pair_factor(as_stack(_lr_of(medulla[:, :96, :80], 2.0, 2.0, 0)), hr)


def _train(hr, options, steps=6, net="rescnn", factor=2.0):
    from napari_emsr.train import TrainConfig, Trainer

    cfg = TrainConfig(method="paired", factor=factor, net=net, size="tiny", steps=steps, patch=32, batch=2,
                      val_every=3, options=options, threads=1)
    t = Trainer(hr, cfg)
    events = list(t.run())
    return t, events


def test_training_from_a_real_pair_registers_and_validates(medulla):
    from napari_emsr.methods.paired import as_stack, lr_source

    lr = _lr_of(medulla, 2.0, 4.0, 0)
    hr = as_stack(medulla[:, 20:116, 10:106])
    t, events = _train(hr, {"lr_image": lr_source(lr)})
    assert events[-1].done and events[-1].val_psnr is not None and events[-1].cubic_psnr is not None
    reg = t.info["registration"]
    assert reg["offset"] == pytest.approx([10.0, 5.0], abs=0.15)
    assert any("registration" in n for n in t.notes)
    x, y = t.pairs.validation()
    assert x.shape == y.shape and x.shape[1:] == (32, 32)
    m = t.model
    assert m.config["method"] == "paired" and m.factor == 2.0 and m.config["recipe"] == "real"
    xb, yb = t.pairs.batch(3)
    assert tuple(xb.shape) == (6, 1, 32, 32) and tuple(yb.shape) == (3, 1, 32, 32)  # y and y' interleaved


@pytest.mark.parametrize("recipe", ["I", "II"])
def test_synthetic_recipes_from_hr_alone(medulla, recipe):
    from napari_emsr.methods.paired import as_stack

    t, events = _train(as_stack(medulla[2, :80, :80]), {"recipe": recipe, "noisier": "off"}, steps=3, factor=3.0)
    assert t.info["recipe"] == recipe and t.info["registration"] is None
    xb, yb = t.pairs.batch(4)
    assert xb.shape == yb.shape
    gap = float((xb - yb).abs().mean())
    assert gap > 0.01  # the inputs are degraded
    assert t.preview().shape == (80, 20)  # the held-out right quarter


def test_recipe_ii_is_noisier_than_recipe_i(medulla):
    from napari_emsr.methods.paired.pairs import degrade

    hr = medulla[:2, :60, :60].astype(np.float32) / 255
    rng = np.random.default_rng(0)
    a, b = degrade(hr, 2.0, "I", rng), degrade(hr, 2.0, "II", rng)
    assert a.shape == b.shape == (2, 30, 30)
    assert np.abs(np.diff(b, axis=-1)).mean() > np.abs(np.diff(a, axis=-1)).mean()


def test_noisier_copy_loss():
    torch = pytest.importorskip("torch")
    from napari_emsr.methods.paired.pairs import noisier_copy_loss

    x = torch.zeros(2, 1, 4, 4)
    pred = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 3.0)] * 2)  # f(y) = 1, f(y') = 3
    assert float(noisier_copy_loss(pred, x)) == pytest.approx(1 + 3 + 2)
    assert float(noisier_copy_loss(pred[:2], x)) == pytest.approx(2.0)  # no noisier copy: l1


def test_lateral_application_is_lazy_banded_and_scaled(medulla, tmp_path):
    from napari_emsr.io import as_volume, open_volume
    from napari_emsr.methods.paired import as_stack, lr_source
    from napari_emsr.methods.paired.apply import export_lateral, lateral

    lr = _lr_of(medulla, 2.5, 4.0, 0)  # 57 x 57 LR px
    t, _ = _train(as_stack(medulla[:, 20:116, 10:106]), {"lr_image": lr_source(lr)}, steps=2, factor=2.5)
    model = t.model
    vol = as_volume(lr, spacing=(40.0, 25.0, 25.0))
    arr = lateral(vol, model)
    assert arr.shape == (6, 143, 143) and arr.dtype == np.uint8
    assert arr.chunks[0] == (1,) * 6  # plane by plane
    whole = arr[2].compute()
    banded = lateral(vol, model, rows=40)
    assert banded.chunks[1] == (40, 40, 40, 23)
    assert np.array_equal(banded[2].compute(), whole)  # bands with margins give the same planes
    enhanced = lateral(vol, model, enhance=True)
    assert enhanced.shape == lr.shape
    out = export_lateral(vol, model, tmp_path / "sr.ome.zarr")
    back = open_volume(out)
    assert back.shape == (6, 143, 143) and back.spacing == pytest.approx((40.0, 10.0, 10.0))
    assert np.array_equal(np.asarray(back.data[2]), whole)


def test_lateral_refuses_other_pixel_types_and_models(medulla, tiny_stack):
    from napari_emsr.methods.paired import as_stack
    from napari_emsr.methods.paired.apply import lateral
    from napari_emsr.train import TrainConfig, Trainer

    t, _ = _train(as_stack(medulla[2, :80, :80]), {"recipe": "I", "noisier": "off"}, steps=1)
    with pytest.raises(InputError, match="trained on uint8 images and the input is float32"):
        lateral(medulla[:2].astype(np.float32), t.model)
    iso = Trainer(tiny_stack[0], TrainConfig(net="rescnn", size="tiny", steps=1, patch=32, batch=1)).model
    with pytest.raises(InputError, match="method 'isotropic'"):
        lateral(medulla[:2], iso)
    from napari_emsr.reconstruct import reconstruct

    with pytest.raises(InputError, match="super-resolves xy planes"):
        reconstruct(tiny_stack[0], t.model)  # e.g. the panel's Reconstruct with a paired model


# ------------------------------------------------------------------------------------------------ command line
TINY = ["--net", "rescnn", "--size", "tiny", "--patch", "32", "--batch", "2", "-q"]


@pytest.fixture(scope="module")
def pair_files(medulla, tmp_path_factory):
    """An LR stack (independent noise, 10 nm -> 20 nm pixels) and an HR crop inside it, as ImageJ TIFFs."""
    import tifffile

    d = tmp_path_factory.mktemp("pair")
    lr = _lr_of(medulla, 2.0, 4.0, 0)
    hr = medulla[:, 20:116, 10:106]
    tifffile.imwrite(d / "lr.tif", lr, imagej=True, resolution=(1 / 20, 1 / 20), metadata={"spacing": 40, "unit": "nm"})
    tifffile.imwrite(d / "hr.tif", hr, imagej=True, resolution=(1 / 10, 1 / 10), metadata={"spacing": 40, "unit": "nm"})
    tifffile.imwrite(d / "hr16.tif", hr.astype(np.uint16))
    tifffile.imwrite(d / "hr2d.tif", hr[2])
    tifffile.imwrite(d / "noise.tif", np.random.default_rng(0).integers(0, 255, hr.shape, dtype=np.uint8))
    return d


def test_cli_paired_train_save_load_apply(pair_files, tmp_path, capsys):
    import json

    from napari_emsr.cli import main
    from napari_emsr.io import open_volume
    from napari_emsr.model import EMSRModel

    d = pair_files
    model = tmp_path / "pair.emsr.pt"
    rc = main(["train", "--method", "paired", "--lr", str(d / "lr.tif"), "--hr", str(d / "hr.tif"), "-o", str(model),
               "--steps", "3", "--json", *TINY])
    assert rc == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["method"] == "paired" and payload["factor"] == pytest.approx(2.0)  # from the voxel sizes
    m = EMSRModel.load(model)
    assert m.config["registration"]["offset"] == pytest.approx([10.0, 5.0], abs=0.15)
    assert m.config["options"]["lr_image"].endswith("lr.tif")
    out = tmp_path / "sr.tif"
    assert main(["apply", str(d / "lr.tif"), "--model", str(model), "-o", str(out), "-q"]) == 0
    back = open_volume(out)
    assert back.shape == (6, 144, 144) and back.dtype == np.uint8
    assert back.spacing == pytest.approx((40.0, 10.0, 10.0))
    enh = tmp_path / "enh.ome.zarr"
    assert main(["apply", str(d / "hr.tif"), "--model", str(model), "-o", str(enh), "--enhance", "-q"]) == 0
    assert open_volume(enh).shape == (6, 96, 96)
    capsys.readouterr()
    # the same command again finds its finished export: nothing to do; another result into it is refused, before work
    assert main(["apply", str(d / "hr.tif"), "--model", str(model), "-o", str(enh), "--enhance"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["apply", str(d / "lr.tif"), "--model", str(model), "-o", str(enh), "--enhance"]) == 2
    err = capsys.readouterr().err
    assert "the finished export of something else" in err and "input" in err and "--overwrite" in err
    assert main(["apply", str(d / "hr.tif"), "--model", str(model), "-o", str(enh)]) == 2
    assert "lateral x1" in capsys.readouterr().err and open_volume(enh).shape == (6, 96, 96)
    # the learning rate is still --lr RATE (or --learning-rate); HR alone with a recipe and --factor
    model2 = tmp_path / "recipe.emsr.pt"
    assert main(["train", str(d / "hr2d.tif"), "--method", "paired", "--recipe", "II", "--factor", "3", "--lr", "2e-3",
                 "-o", str(model2), "--steps", "2", *TINY]) == 0
    m2 = EMSRModel.load(model2)
    assert m2.config["recipe"] == "II" and m2.config["train"]["lr"] == 2e-3 and m2.factor == 3.0


@pytest.mark.parametrize("case, message", [
    ("dtype", "uint8 and the HR image uint16"),
    ("dims", "a stack of 6 planes and the HR image a 2D image"),
    ("sizes", "does not fit the sizes"),
    ("registration", r"could not be registered.*residual \d\.\d{3}"),
    ("larger", "more than the LR image"),
    ("no-factor", "give the factor"),
    ("lr-elsewhere", "inputs of --method paired"),
])
def test_cli_bad_paired_input_exits_2(pair_files, tmp_path, capsys, case, message):
    from napari_emsr.cli import main

    d = pair_files
    lr, hr = str(d / "lr.tif"), str(d / "hr.tif")
    args = {
        "dtype": ["--lr", lr, "--hr", str(d / "hr16.tif")],
        "dims": ["--lr", lr, "--hr", str(d / "hr2d.tif"), "--factor", "2"],
        "registration": ["--lr", lr, "--hr", str(d / "noise.tif"), "--factor", "2"],
        "larger": ["--lr", lr, "--hr", hr, "--factor", "1.2"],
        "no-factor": ["--hr", hr],
    }.get(case)
    if case == "sizes":  # same pixel type and planes, no voxel sizes, sizes of another ratio along y and x
        import tifffile

        tifffile.imwrite(tmp_path / "a.tif", np.zeros((6, 40, 30), np.uint8))
        tifffile.imwrite(tmp_path / "b.tif", np.zeros((6, 80, 90), np.uint8))
        args = ["--lr", str(tmp_path / "a.tif"), "--hr", str(tmp_path / "b.tif")]
    cmd = ["train", "--method", "paired", *args] if case != "lr-elsewhere" else ["train", hr, "--lr", lr]
    rc = main([*cmd, "-o", str(tmp_path / "m.pt"), "--steps", "1", *TINY])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_stop_and_resume_keep_the_pairs_and_steps(medulla, tmp_path):
    from napari_emsr.methods.paired import as_stack, lr_source
    from napari_emsr.model import EMSRModel
    from napari_emsr.train import TrainConfig, Trainer

    lr = lr_source(_lr_of(medulla, 2.0, 4.0, 0))
    hr = as_stack(medulla[:, 20:116, 10:106])
    ckpt = tmp_path / "ckpt.emsr.pt"
    cfg = TrainConfig(method="paired", factor=2.0, net="aeanet", size="tiny", steps=6, patch=32, batch=2,
                      options={"lr_image": lr}, checkpoint=str(ckpt), preview_every=2)
    t = Trainer(hr, cfg)
    previews = []
    for ev in t.run():
        if ev.preview is not None:
            previews.append(ev.preview)
        if ev.step == 3:
            t.stop()
    assert t.step == 3 and previews and previews[0].shape == (96, 96)
    saved = EMSRModel.load(ckpt)
    assert saved.step == 3 and saved.config["registration"] is not None
    r = Trainer(hr, TrainConfig(method="paired", factor=2.0, steps=2, patch=32, batch=2), resume=ckpt)
    assert r.config.factor == 2.0 and r.config.net == "aeanet" and r.config.options["lr_image"] == lr
    list(r.run())
    assert r.step == 5


@pytest.mark.slow
def test_bench_paired_smoke(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_paired.py"
    spec = importlib.util.spec_from_file_location("bench_paired", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--factors", "2", "--nets", "rescnn", "--steps", "2", "--patch", "32", "--batch", "2",
                       "--train-planes", "8", "--test-planes", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("| x2 | - | bicubic |", "| x2 | real pair | rescnn/tiny |", "| x2 | recipe II | rescnn/tiny |"):
        assert row in out
