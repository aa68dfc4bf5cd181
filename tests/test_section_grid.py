"""The section-grid networks: shapes at integer and fractional F, identity at initialisation, their work per output
pixel, whole planes along z in predict, a real training and reconstruction, and where they are refused."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_nets import _one_thread, _randomise  # noqa: E402, F401  (the one-thread fixture applies here too)

from napari_emsr.errors import InputError  # noqa: E402
from napari_emsr.nets import build_net, grid_of, net_names  # noqa: E402

SG = ["rescnn-sections", "uformer-sections"]


def test_registered_with_their_grid():
    for name in SG:
        assert name in net_names() and grid_of(name) == "sections"
    assert grid_of("rescnn") == grid_of("uformer") == "output"
    with pytest.raises(InputError, match="factor above 1"):
        build_net("rescnn-sections", size="tiny", factor=1.0)


@pytest.mark.parametrize("name", SG)
@pytest.mark.parametrize("factor", [4, 8, 2.5, 3.3])
def test_shapes_and_identity_at_init(name, factor):
    net = build_net(name, size="tiny", factor=factor)
    assert net.sub_rows == int(np.ceil(factor))
    for rows, cols in [(1, 7), (5, 9), (33, 40), (int(10 * factor) + 3, 17)]:
        x = torch.rand(2, 1, rows, cols)
        with torch.no_grad():
            y = net(x)
        assert y.shape == x.shape
        assert torch.equal(y, x), "an untrained section-grid network must return the interpolated plane"


@pytest.mark.parametrize("factor", [4, 3.3])
def test_trained_weights_change_every_row_and_read_only_the_sections(factor):
    """With non-zero weights the correction reaches every output row, and (integer F) the network depends on the
    section rows only: changing a row between sections changes nothing but that row (the residual)."""
    net = build_net("rescnn-sections", size="tiny", factor=factor)
    _randomise(net)
    x = torch.rand(1, 1, 41, 24)
    with torch.no_grad():
        y = net(x)
    assert torch.isfinite(y).all()
    assert ((y - x).abs().amax(dim=-1) > 0).all(), "every row gets a correction"
    if factor == 4:
        x2 = x.clone()
        x2[..., 6, :] += 1.0  # between sections 4 and 8
        with torch.no_grad():
            y2 = net(x2)
        diff = (y2 - y).abs().amax(dim=-1)[0, 0]
        assert diff[6] > 0.99 and float(diff[torch.arange(41) != 6].max()) < 1e-6


def test_work_per_output_pixel_falls_with_the_factor():
    from napari_emsr.nets.flops import flops_per_pixel

    old = build_net("rescnn", size="small")
    for f in (4, 8, 12):
        new = build_net("rescnn-sections", size="small", factor=f)
        ratio = flops_per_pixel(old, f) / flops_per_pixel(new, f)
        assert 0.8 * f < ratio < 1.2 * f, (f, ratio)


def test_predict_keeps_whole_planes_along_z(monkeypatch):
    """predict cuts planes taller than a tile into tiles along z for an output-grid network; a section-grid
    network gets them whole (a tile's row 0 would not be a section): the result is the network on the plane."""
    from napari_emsr.device import CPU_BF16_ENV
    from napari_emsr.model import predict

    monkeypatch.setenv(CPU_BF16_ENV, "0")  # fp32, to compare with the network called directly

    net = build_net("rescnn-sections", size="tiny", factor=4)
    _randomise(net, seed=2)
    planes = np.random.default_rng(0).random((2, 157, 40), dtype=np.float32)
    got = predict(net, planes, "cpu", tile=64, overlap=8)
    with torch.no_grad():
        want = net(torch.from_numpy(planes)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    ref = build_net("rescnn", size="tiny", residual=False)
    _randomise(ref, seed=2)
    tiled = predict(ref, planes, "cpu", tile=64, overlap=8)
    with torch.no_grad():
        whole = ref(torch.from_numpy(planes)[:, None])[:, 0].numpy()
    assert np.abs(tiled - whole).max() > 1e-4, "the output-grid network is tiled along z (the check can fail)"


def test_train_and_reconstruct(tiny_stack, tmp_path):
    """A real training with the section-grid network: every patch starts with a section, the model file records the
    network and its factor, and the fused reconstruction has the output grid's shape."""
    from napari_emsr.model import EMSRModel
    from napari_emsr.reconstruct import reconstruct
    from napari_emsr.train import TrainConfig, Trainer

    vol, _ = tiny_stack
    t = Trainer(vol, TrainConfig(net="rescnn-sections", size="tiny", steps=6, patch=24, batch=2, device="cpu",
                                 preview_every=0))
    for _ in t.run():
        pass
    assert (t.pairs.D[:, 0, 0] != 0).all(), "every pair's first row is a section (phase 0)"
    path = tmp_path / "m.emsr.pt"
    t.model.save(path)
    m = EMSRModel.load(path)
    assert m.config["net"] == "rescnn-sections" and m.config["net_kwargs"]["factor"] == 4.0
    out = reconstruct(vol, m, planes="fuse", device="cpu").compute()
    assert out.shape == (33, 48, 48) and out.dtype == vol.dtype


def test_refused_where_the_pairs_do_not_keep_the_sections(tiny_stack):
    """A method whose pairs do not start with a section (here: real planes cut anywhere) refuses the network."""
    from napari_emsr.methods import METHODS, Method, register_method
    from napari_emsr.train import TrainConfig, Trainer

    class AnyRows:
        def __init__(self, ctx):
            self.ctx, self.info = ctx, {}

        def batch(self, n):
            x = torch.rand(n, 1, self.ctx.patch, self.ctx.patch)
            return x, x

        def validation(self):
            x = np.zeros((2, self.ctx.patch, self.ctx.patch), np.float32)
            return x, x

    register_method(Method(name="test-any-rows", description="pairs cut at any row", pairs=AnyRows, net="rescnn",
                           size="tiny", loss="l1", order=3, options=()), replace=True)
    try:
        vol, _ = tiny_stack
        with pytest.raises(InputError, match="section grid"):
            Trainer(vol, TrainConfig(method="test-any-rows", net="rescnn-sections", size="tiny", steps=1, patch=24,
                                     batch=2, device="cpu", preview_every=0))
    finally:
        METHODS.pop("test-any-rows", None)


def test_learned_degradation_pairs_start_with_a_section(tiny_stack):
    """``--profile learned`` trains a section-grid network too: its pairs are drawn at sampling phase 0."""
    from napari_emsr.train import TrainConfig, Trainer

    vol, _ = tiny_stack
    t = Trainer(vol, TrainConfig(net="rescnn-sections", size="tiny", steps=2, patch=16, batch=2, device="cpu",
                                 preview_every=0, options={"profile": "learned", "degradation_steps": 2,
                                                           "degradation_size": "tiny"}))
    for _ in t.run():
        pass
    assert t.pairs.section_grid and t.model.step == 2


def test_cli_train_info_and_apply(tiny_stack, tmp_path, capsys):
    """``emsr train --net rescnn-sections``, ``emsr info --model`` (the grid and the work per voxel, counted by
    torch) and a fused ``emsr apply`` with it."""
    import json

    import tifffile

    from napari_emsr.cli import main
    from napari_emsr.io import open_volume

    vol, _ = tiny_stack
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.asarray(vol.data), imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 40.0, "unit": "nm"})
    model = tmp_path / "m.emsr.pt"
    tiny = ["--size", "tiny", "--patch", "24", "--batch", "2", "--device", "cpu", "-q"]
    assert main(["train", str(stack), "-o", str(model), "--steps", "3", "--net", "rescnn-sections", *tiny]) == 0
    capsys.readouterr()
    assert main(["info", str(stack), "--model", str(model), "--fast", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["model"]
    assert info["net"] == "rescnn-sections" and info["grid"] == "sections" and info["factor"] == 4.0
    assert abs(info["flops_per_voxel_fused"] - 2 * info["flops_per_pixel"]) <= 1 and info["flops_per_pixel"] > 0
    assert main(["info", str(stack), "--model", str(model), "--fast"]) == 0
    assert "on the sections grid" in capsys.readouterr().out
    out = tmp_path / "iso.tif"
    assert main(["apply", str(stack), "--model", str(model), "-o", str(out), "-q", "--device", "cpu"]) == 0
    assert open_volume(out).shape == (33, 48, 48)


@pytest.mark.slow
def test_compiled_network_gives_the_same_planes(tiny_stack):
    """``compiled=True`` runs the network through torch.compile (slow to compile on a CPU: EMSR_SLOW=1)."""
    from napari_emsr.reconstruct import reconstruct
    from napari_emsr.train import TrainConfig, train

    vol, _ = tiny_stack
    model = train(vol, TrainConfig(net="rescnn-sections", size="tiny", steps=3, patch=24, batch=2, device="cpu"))
    plain = reconstruct(vol, model, planes="xz", deband=False, device="cpu").compute()
    fast = reconstruct(vol, model, planes="xz", deband=False, device="cpu", compiled=True).compute()
    assert np.abs(plain.astype(int) - fast.astype(int)).max() <= 1
    assert ("cpu", True) in model._nets

