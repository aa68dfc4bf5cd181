"""Uncertainty: where the xz and yz restorations disagree, computed with the fused volume, written beside it."""

import numpy as np
import pytest

from napari_emsr.errors import InputError
from napari_emsr.io import as_volume, open_volume
from napari_emsr.reconstruct import export, export_uncertainty, reconstruct, reconstruct_pair, uncertainty
from napari_emsr.train import TrainConfig, train

TINY = dict(net="rescnn", size="tiny", patch=24, batch=4, device="cpu", val_every=5, preview_every=0)


@pytest.fixture(scope="module")
def tiny_model():
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.sample import _ground_truth

    gt = _ground_truth()[:33, :48, :40]
    # NOTE: float input: a few steps change the planes by less than a grey level, which uint8 would round away
    vol = as_volume(make_anisotropic(gt, 4, "slab").astype(np.float32), spacing=(40.0, 10.0, 10.0))
    return vol, train(vol, TrainConfig(steps=3, **TINY))


def test_pair_is_the_fused_volume_and_the_gap_between_directions(tiny_model):
    vol, model = tiny_model
    fused, gap = reconstruct_pair(vol, model, device="cpu", chunks=(16, 24))
    assert fused.shape == gap.shape == (33, 48, 40) and fused.dtype == gap.dtype == np.float32
    assert fused.chunks == gap.chunks
    alone = reconstruct(vol, model, planes="fuse", device="cpu", chunks=(16, 24)).compute()
    np.testing.assert_array_equal(fused.compute(), alone)  # the same bits as planes="fuse"
    # the gap is between the network's two restorations as they come (the fused volume is the debanded mean)
    xz = reconstruct(vol, model, planes="xz", device="cpu", deband=False).compute()
    yz = reconstruct(vol, model, planes="yz", device="cpu", deband=False).compute()
    g = gap.compute()
    np.testing.assert_allclose(g, np.abs(xz - yz), atol=1e-3)
    assert g.max() > 0.01  # a 3-step network does not restore both directions alike
    np.testing.assert_array_equal(uncertainty(vol, model, device="cpu", chunks=(16, 24)).compute(), g)
    # one block of the common stack gives both blocks
    stack = reconstruct(vol, model, planes="pair", device="cpu", chunks=(16, 24))
    block = np.asarray(stack.blocks[0, 0, 1, 0].compute())
    np.testing.assert_array_equal(block[0], alone[:, 16:32, :24])
    np.testing.assert_array_equal(block[1], g[:, 16:32, :24])


def test_interpolation_has_no_uncertainty(tiny_model, tmp_path):
    vol, _ = tiny_model
    with pytest.raises(InputError, match="train a model first"):
        uncertainty(vol, "cubic")
    with pytest.raises(InputError, match="train a model first"):
        export_uncertainty(vol, "cubic", tmp_path / "u.ome.zarr")
    assert not (tmp_path / "u.ome.zarr").exists()


def test_export_uncertainty_beside_the_result(tiny_model, tmp_path):
    vol, model = tiny_model
    result = export(vol, model, tmp_path / "iso.ome.zarr", device="cpu")
    done = []
    out = export_uncertainty(vol, model, tmp_path / "iso.uncertainty.ome.zarr", device="cpu",
                             progress=lambda d, t: done.append((d, t)))
    iso, unc = open_volume(result), open_volume(out)
    assert unc.shape == iso.shape and unc.dtype == iso.dtype
    np.testing.assert_allclose(unc.spacing, iso.spacing)
    expected = uncertainty(vol, model, device="cpu").compute()
    np.testing.assert_array_equal(np.asarray(unc.data), expected)
    assert done and done[-1][0] == done[-1][1]
    # the same path again is refused unless asked to overwrite (as export does)
    from napari_emsr.errors import EMSRError

    with pytest.raises(EMSRError):
        export_uncertainty(vol, model, out, device="cpu")
