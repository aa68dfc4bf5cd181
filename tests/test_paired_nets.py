"""The networks of the paired method (EMSR, paper 002; AEANet, paper 004): shapes, learning, equivariance."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_nets import _one_thread, _randomise  # noqa: E402, F401  (the one-thread fixture applies here too)

from napari_emsr.nets import build_net, net_names, net_sizes  # noqa: E402
from napari_emsr.nets.aeanet_arch import AugmentedAttention  # noqa: E402
from napari_emsr.nets.emsr_arch import atrous_wavelet  # noqa: E402

NAMES = ["emsr", "aeanet"]
ODD_SIZES = [(5, 7), (17, 23), (1, 1), (32, 32)]


def test_registered_with_sizes():
    for name in NAMES:
        assert name in net_names()
        assert {"tiny", "small", "base"} <= set(net_sizes(name))
    assert net_sizes("emsr")["base"]["channels"] == 64  # the paper's C


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_identity_at_init(name):
    torch.manual_seed(0)
    net = build_net(name, size="tiny")
    for h, w in ODD_SIZES:
        x = torch.rand(2, 1, h, w)
        y = net(x)
        assert y.shape == x.shape
        assert torch.equal(y, x), "an untrained residual network is the identity"
    _randomise(net)
    net.eval()
    x = torch.rand(3, 1, 17, 23)
    y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x)


@pytest.mark.parametrize("scale", [2, 3])
def test_emsr_pixel_shuffle_scale(scale):
    net = build_net("emsr", size="tiny", scale=scale)
    x = torch.rand(2, 1, 9, 13)
    y = net(x)
    assert y.shape == (2, 1, 9 * scale, 13 * scale)
    # untrained: the cubic up-sampling of the input (the body's last convolution starts at zero)
    up = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    assert torch.allclose(y, up)


def test_atrous_wavelet_details_sum_to_image_minus_smooth():
    x = torch.rand(1, 1, 20, 24)
    d = atrous_wavelet(x, 3)
    assert d.shape == (1, 3, 20, 24)
    const = atrous_wavelet(torch.full((1, 1, 20, 24), 0.7), 3)
    assert const.abs().max() < 1e-6  # a flat image has no edges
    assert d[:, 0].abs().mean() > d[:, 2].abs().mean() * 0.5  # noise-like input: fine scale strongest


@pytest.mark.parametrize("name", NAMES)
def test_a_few_training_steps_lower_the_loss(name):
    torch.manual_seed(0)
    net = build_net(name, size="tiny")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    clean = torch.nn.functional.avg_pool2d(torch.rand(8, 1, 32, 32, generator=g), 3, 1, 1)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    with torch.no_grad():
        first = torch.nn.functional.l1_loss(net(noisy), clean).item()
    for _ in range(25):
        loss = torch.nn.functional.l1_loss(net(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        last = torch.nn.functional.l1_loss(net(noisy), clean).item()
    assert last < 0.8 * first


def test_shared_reference_attention_is_permutation_equivariant():
    """Paper 004, theorem 2: A_R(T_pi(X)) = T_pi(A_R(X)) for any spatial permutation pi (references fixed)."""
    torch.manual_seed(0)
    att = AugmentedAttention(16, references=8).eval()
    x = torch.randn(2, 16, 6, 5)
    perm = torch.randperm(30)
    permuted = x.flatten(2)[:, :, perm].reshape(x.shape)
    with torch.no_grad():
        a = att(permuted)
        b = att(x).flatten(2)[:, :, perm].reshape(x.shape)
    assert torch.allclose(a, b, atol=1e-5)
    # the references matter: without them the result differs
    att0 = AugmentedAttention(16, references=0).eval()
    att0.load_state_dict({k: v for k, v in att.state_dict().items() if k != "refs"})
    with torch.no_grad():
        assert not torch.allclose(att0(x), att(x), atol=1e-4)


def test_batch_aware_attention_only_in_training():
    torch.manual_seed(0)
    att = AugmentedAttention(8, references=4)
    x = torch.randn(4, 8, 4, 4)
    other = x.clone()
    other[0] = torch.randn(8, 4, 4)  # change an image of the first half
    att.train()
    with torch.no_grad():
        # training: the second half attends to each other (batch-aware) ...
        y, y2 = att(x), att(other)
        assert torch.allclose(y[2:], y2[2:])  # ... but not to the first half
        third = x.clone()
        third[3] = torch.randn(8, 4, 4)
        assert not torch.allclose(att(third)[2], y[2])  # image 2 sees image 3 in training
    att.eval()
    with torch.no_grad():
        assert torch.allclose(att(third)[2], att(x)[2])  # prediction: each image on its own


@pytest.mark.parametrize("name", NAMES)
def test_backbone_of_the_isotropic_method(tiny_stack, name):
    from napari_emsr.reconstruct import reconstruct
    from napari_emsr.train import TrainConfig, Trainer

    t = Trainer(tiny_stack[0], TrainConfig(net=name, size="tiny", steps=2, patch=32, batch=2, val_every=1))
    events = list(t.run())
    assert events[-1].done and events[-1].val_psnr is not None
    out = reconstruct(tiny_stack[0], t.model, device="cpu")
    assert out.shape == (33, 48, 48)
    assert np.asarray(out[:, 20].compute()).dtype == np.uint8
