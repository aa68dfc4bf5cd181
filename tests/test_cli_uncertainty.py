"""emsr apply/reconstruct --uncertainty: where the xz and yz restorations disagree, written beside the result."""

import numpy as np
import pytest
import tifffile

from napari_emsr.cli import main
from napari_emsr.io import as_volume, open_volume
from napari_emsr.reconstruct import uncertainty
from napari_emsr.train import TrainConfig, train


@pytest.fixture(scope="module")
def stack_and_model(tmp_path_factory):
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.sample import _ground_truth

    d = tmp_path_factory.mktemp("unc")
    a = make_anisotropic(_ground_truth()[:33, :48, :40], 4, "slab")
    path = d / "stack.tif"
    tifffile.imwrite(path, a, imagej=True, resolution=(0.1, 0.1), metadata={"spacing": 40.0, "unit": "nm"})
    vol = as_volume(a, spacing=(40.0, 10.0, 10.0))
    model = train(vol, TrainConfig(steps=3, net="rescnn", size="tiny", patch=24, batch=4, device="cpu",
                                   val_every=5, preview_every=0))
    model.save(d / "m.emsr.pt")
    return d, path, d / "m.emsr.pt"


def test_apply_writes_the_uncertainty_beside_the_result(stack_and_model):
    d, stack, model = stack_and_model
    out, unc = d / "iso.ome.zarr", d / "iso.uncertainty.ome.zarr"
    assert main(["apply", str(stack), "--model", str(model), "-o", str(out), "--uncertainty", str(unc),
                 "--device", "cpu", "-q"]) == 0
    iso, gap = open_volume(out), open_volume(unc)
    assert gap.shape == iso.shape and gap.dtype == iso.dtype
    np.testing.assert_allclose(gap.spacing, iso.spacing)
    expected = uncertainty(open_volume(stack), str(model), device="cpu").compute()
    np.testing.assert_array_equal(np.asarray(gap.data), expected)


@pytest.mark.parametrize("args, words", [
    (["--model", "cubic"], "train a model"),
    (["--model", "MODEL", "--uncertainty-at-input"], "is the input"),
])
def test_apply_refuses_a_bad_uncertainty_before_writing(stack_and_model, capsys, args, words):
    d, stack, model = stack_and_model
    out = d / "refused.ome.zarr"
    args = [str(model) if a == "MODEL" else a for a in args]
    target = str(stack) if "--uncertainty-at-input" in args else str(d / "u.ome.zarr")
    args = [a for a in args if a != "--uncertainty-at-input"]
    assert main(["apply", str(stack), *args, "-o", str(out), "--uncertainty", target, "-q"]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_reconstruct_with_cubic_refuses_uncertainty_before_training(stack_and_model, capsys):
    d, stack, _ = stack_and_model
    assert main(["reconstruct", str(stack), "--method", "cubic", "-o", str(d / "c.ome.zarr"),
                 "--uncertainty", str(d / "cu.ome.zarr"), "-q"]) == 2
    assert "train a model" in capsys.readouterr().err


def test_the_uncertainty_costs_no_second_restoration(stack_and_model, monkeypatch):
    """``emsr apply --uncertainty``: the export leaves each chunk's uncertainty for the map, so the planes restored
    are those of the fused export alone; the map is the one computed on its own, and no spill folder is left."""
    from napari_emsr.engine import Engine

    d, stack, model = stack_and_model
    restored = []
    orig = Engine.restore

    def counting(self, planes):
        restored.append(int(np.prod(planes.shape)))
        return orig(self, planes)

    monkeypatch.setattr(Engine, "restore", counting)
    assert main(["apply", str(stack), "--model", str(model), "-o", str(d / "alone.tif"), "--device", "cpu",
                 "-q"]) == 0
    alone = sum(restored)
    restored.clear()
    out, unc = d / "both.tif", d / "both.uncertainty.ome.zarr"
    assert main(["apply", str(stack), "--model", str(model), "-o", str(out), "--uncertainty", str(unc),
                 "--device", "cpu", "-q"]) == 0
    assert sum(restored) == alone  # (two passes would restore twice as many)
    expected = uncertainty(open_volume(stack), str(model), device="cpu").compute()
    np.testing.assert_array_equal(np.asarray(open_volume(unc).data), expected)
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), np.asarray(open_volume(d / "alone.tif").data))
    assert not list(d.glob(".emsr-spill-*"))
