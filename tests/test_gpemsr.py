"""Method gpemsr (paper 003): each stage steps, the quantiser's straight-through gradient, and a three-stage run
that saves, reloads and applies through the command line."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_emsr.cli import main
from napari_emsr.degrade import make_anisotropic
from napari_emsr.errors import InputError
from napari_emsr.io import as_volume
from napari_emsr.model import EMSRModel
from napari_emsr.nets import build_net
from napari_emsr.nets.vqgan_arch import VQGAN, GPRestorer, Indexer
from napari_emsr.sample import _ground_truth
from napari_emsr.train import TrainConfig, Trainer

TINY = {"prior": "tiny", "vqgan_steps": 3, "indexer_steps": 3, "profile": "point"}


@pytest.fixture(scope="module")
def stack():
    gt = _ground_truth()[:65, :64, :64]
    return as_volume(make_anisotropic(gt, 8, "point"), spacing=(80.0, 10.0, 10.0))


def _trainer(stack, **options):
    return Trainer(stack, TrainConfig(method="gpemsr", factor=8, steps=2, patch=32, batch=2, size="tiny",
                                      options={**TINY, **options}, val_every=1, preview_every=0))


def test_quantiser_passes_the_decoders_input_gradient_straight_to_the_encoder():
    torch.manual_seed(0)
    vq = VQGAN("tiny")
    x = torch.rand(2, 1, 16, 16)
    z = vq.encoder(x)
    z.retain_grad()
    zq, idx, codebook, commitment = vq.quantizer(z)
    zq.retain_grad()
    # in value, the quantised latent is the nearest code vectors
    torch.testing.assert_close(zq, vq.quantizer.lookup(idx))
    assert idx.shape == (2, 4, 4) and float(codebook.detach()) > 0 and float(commitment.detach()) > 0
    rec, feats = vq.decoder(zq)
    assert rec.shape == x.shape and [f.shape[-1] for f in feats] == [4, 8, 16]
    (rec * torch.randn_like(rec)).sum().backward()
    assert zq.grad is not None and float(zq.grad.abs().sum()) > 0
    torch.testing.assert_close(z.grad, zq.grad)  # straight through: the encoder gets the decoder's input gradient
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in vq.encoder.conv_in.parameters())
    assert vq.quantizer.codebook.weight.grad is None  # the codebook learns from its own loss only
    codebook.backward()
    assert float(vq.quantizer.codebook.weight.grad.abs().sum()) > 0


def test_each_stage_steps_and_the_restorer_carries_the_prior(stack):
    t = _trainer(stack)
    assert t.stage_names == ["vqgan", "indexer", "restore"]
    events = list(t.run())
    assert [e.stage for e in events[:6]] == ["vqgan"] * 3 + ["indexer"] * 3
    assert all(np.isfinite(e.loss) for e in events)
    assert events[-1].stage == "restore" and events[-1].done and events[0].stage_count == 3
    vq, ix = t.ctx.stages["vqgan"], t.ctx.stages["indexer"]
    assert vq.steps == 3 and ix.steps == 3
    # stage I stepped: its weights moved from a fresh model's; the discriminator joined (after 25 % of stage I)
    fresh = VQGAN("tiny")
    assert not torch.equal(fresh.decoder.conv_in.weight, vq.model.decoder.conv_in.weight.cpu())
    # stage II learns the codes of stage I's encoder: a cross-entropy over the codebook
    assert events[3].loss > 0 and events[3].loss < 10
    # the restorer carries frozen copies of the indexer, codebook and decoder; only its own layers trained
    net = t.net
    assert isinstance(net, GPRestorer) and net.spec["codes"] == 32
    torch.testing.assert_close(net.prior.decoder.conv_in.weight, vq.model.decoder.conv_in.weight)
    torch.testing.assert_close(net.prior.indexer.head[1].weight, ix.indexer.head[1].weight)
    assert not any(p.requires_grad for p in net.prior.parameters())
    assert t.model.step == 2 and {"vqgan", "indexer"} <= set(t.model.stages)
    assert "codebook prior tiny" in " ".join(t.notes)
    # the indexer stage stepped: a step of it changes its weights
    before = ix.indexer.head[1].weight.detach().clone()
    ix.step()
    assert not torch.equal(before, ix.indexer.head[1].weight)


def test_restorer_is_the_identity_untrained_and_rebuilds_for_a_saved_prior():
    net = build_net("gpemsr", size="tiny")
    x = torch.rand(2, 1, 21, 30)  # any plane size: padded to the compression patch and cropped back
    with torch.no_grad():
        torch.testing.assert_close(net(x), x)
    small = GPRestorer(width=8, prior="small")
    small.set_prior(VQGAN("small"), Indexer("small"))
    tiny = GPRestorer(width=8, prior="tiny")
    tiny.load_state_dict(small.state_dict())
    assert tiny.spec == small.spec
    with torch.no_grad():
        torch.testing.assert_close(tiny(x), small(x))


def test_refuses_another_restoring_network(stack):
    t = Trainer(stack, TrainConfig(method="gpemsr", factor=8, steps=1, patch=32, batch=2, net="rescnn", size="tiny",
                                   options=TINY))
    with pytest.raises(InputError, match="needs its own restoring network"):
        list(t.run())


def test_three_stages_save_reload_and_apply_from_the_command_line(stack, tmp_path):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, np.asarray(stack.data), imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 80.0, "unit": "nm"})
    out, model = tmp_path / "iso.tif", tmp_path / "gp.pt"
    opts = ["--method", "gpemsr", "--prior", "tiny", "--vqgan-steps", "2", "--indexer-steps", "2", "--steps", "2",
            "--patch", "32", "--batch", "2", "--size", "tiny", "--profile", "point", "--device", "cpu", "-q"]
    assert main(["reconstruct", str(src), "-o", str(out), "--save-model", str(model), *opts]) == 0
    rec = tifffile.imread(out)
    assert rec.shape == (65, 64, 64) and rec.dtype == np.uint8
    m = EMSRModel.load(model)
    assert m.config["method"] == "gpemsr" and m.config["net"] == "gpemsr"
    assert [s["name"] for s in m.config["stages"]] == ["vqgan", "indexer"] and all(
        s["done"] for s in m.config["stages"])
    assert m.config["prior"]["codes"] == 32
    out2 = tmp_path / "again.tif"
    assert main(["apply", str(src), "--model", str(model), "-o", str(out2), "-q", "--device", "cpu"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out2), rec)  # the model file applies on its own
    # a resumed run loads the finished stages instead of training them again
    r = Trainer(stack, TrainConfig(method="gpemsr", factor=8, steps=1, patch=32, batch=2, options=TINY),
                resume=model)
    assert {e.stage for e in r.run()} == {"restore"}


def test_measures_of_bands_and_texture_see_interpolation_and_truth_apart():
    from napari_emsr.geometry import output_positions
    from napari_emsr.interpolation import interpolate_axis
    from napari_emsr.metrics import plane_frc, spectral_match

    gt = _ground_truth()[:65, :64, :64].astype(np.float32)
    lr = make_anisotropic(gt.astype(np.uint8), 8, "point").astype(np.float32)
    cubic = interpolate_axis(lr, output_positions(len(lr), 8), 3, axis=0)[:65]
    truth, interp = spectral_match(gt), spectral_match(cubic)
    assert abs(truth["ratio_db"]) < 5 and truth["rms_db"] < 5  # the truth is near isotropic
    assert interp["ratio_db"] < truth["ratio_db"] - 15 and interp["rms_db"] > truth["rms_db"] + 15  # z too smooth
    same, frc_cubic = plane_frc(gt, gt), plane_frc(gt, cubic)
    assert same["mean"] == pytest.approx(1.0) and same["resolution"] == 0.5
    assert 0 < frc_cubic["mean"] < 0.6 and frc_cubic["resolution"] < 0.2
    with pytest.raises(InputError):
        plane_frc(gt, cubic[:-1])
    with pytest.raises(InputError):
        spectral_match(gt[:8])
