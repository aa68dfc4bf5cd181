"""Tests of napari_emsr.nets: registry, shapes, identity at init, learning, windows."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from napari_emsr.errors import InputError  # noqa: E402
from napari_emsr.nets import (  # noqa: E402
    DESCRIPTIONS,
    NETS,
    build_net,
    net_names,
    net_sizes,
)

NAMES = ["uformer", "rescnn", "gpemsr"]
#: Networks that restore one plane only (their prior is of single planes).
SINGLE_PLANE = {"gpemsr"}
ODD_SIZES = [(5, 7), (17, 23), (1, 1), (2, 9), (32, 32), (33, 64)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks run fastest on one thread (and do not fight a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise(net: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter (the zero-initialised tail included) non-zero values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_registry():
    assert set(NAMES) <= set(net_names())  # more register from their folders (tests/test_paired_nets.py)
    assert set(NETS) == set(DESCRIPTIONS) >= set(NAMES)
    for name in NAMES:
        sizes = net_sizes(name)
        assert {"tiny", "small", "base"} <= set(sizes)


def test_import_does_not_import_torch():
    code = "import sys, napari_emsr.nets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_and_size():
    with pytest.raises(InputError) as info:
        build_net("no-such-net")
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(InputError, match="tiny"):
        build_net("rescnn", size="huge")
    with pytest.raises(InputError):
        build_net("rescnn", size="tiny", no_such_argument=1)


def test_kwargs_override_size():
    net = build_net("rescnn", size="tiny", blocks=2)
    assert net.blocks == 2 and net.channels == net_sizes("rescnn")["tiny"]["channels"]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_identity_at_init(name):
    torch.manual_seed(0)
    net = build_net(name, size="tiny")
    for h, w in ODD_SIZES:
        x = torch.rand(2, 1, h, w)
        y = net(x)
        assert y.shape == x.shape
        assert torch.equal(y, x), "untrained residual net must be the identity"


@pytest.mark.parametrize("name", NAMES)
def test_shapes_trained_weights_and_no_residual(name):
    net = build_net(name, size="tiny", residual=False)
    _randomise(net)
    for h, w in ODD_SIZES:
        x = torch.rand(1, 1, h, w)
        y = net(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert not torch.equal(y, x)


def test_multichannel():
    for name in NAMES:
        if name in SINGLE_PLANE:
            with pytest.raises(InputError):
                build_net(name, size="tiny", in_channels=3)
            continue
        net = build_net(name, size="tiny", in_channels=3)
        x = torch.rand(1, 3, 9, 11)
        assert net(x).shape == x.shape
        with pytest.raises(InputError):
            net(torch.rand(1, 1, 9, 11))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_seed(name):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = build_net(name, size="tiny", residual=False)
        outs.append(net(torch.ones(1, 1, 12, 12)))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    net = build_net(name, size="tiny")
    _randomise(net, seed=1)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other = build_net(name, size="tiny")
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.rand(1, 1, 13, 10)
    with torch.inference_mode():
        assert torch.equal(net(x), other(x))


@pytest.mark.parametrize("name", NAMES)
def test_learns_to_undo_vertical_blur(name):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 32, 32, generator=gen)
    kernel = torch.ones(1, 1, 5, 1) / 5.0
    blurred = torch.nn.functional.conv2d(target, kernel, padding=(2, 0))
    net = build_net(name, size="tiny")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (net(blurred) - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_uformer_window_padding_and_attention():
    from napari_emsr.nets.uformer_arch import UFormer

    net = UFormer(embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4, residual=False)
    _randomise(net)
    assert net.pad_multiple == 8
    for h, w in [(3, 5), (9, 13), (8, 8), (16, 24)]:
        y = net(torch.rand(1, 1, h, w))
        assert y.shape == (1, 1, h, w) and torch.isfinite(y).all()
    # the relative position bias is used: changing it changes the output
    x = torch.rand(1, 1, 8, 8)
    y0 = net(x)
    with torch.no_grad():
        net.encoders[0][0].attn.bias_table.add_(1.0 * torch.randn_like(
            net.encoders[0][0].attn.bias_table))
    assert not torch.allclose(net(x), y0)


def test_window_attention_matches_reference():
    """Plain and shifted window attention against a direct per-window computation."""
    from napari_emsr.nets.uformer_arch import WindowAttention

    torch.manual_seed(0)
    m, dim, heads, h, w = 4, 8, 2, 8, 12
    for shift in (0, 2):
        attn = WindowAttention(dim, heads, m, shift=shift)
        with torch.no_grad():
            attn.bias_table.normal_()
        x = torch.randn(2, h, w, dim)
        got = attn(x)

        # reference: label of each pixel's region before the roll; tokens of one window that
        # came from different regions must not attend to each other
        xs = torch.roll(x, (-shift, -shift), (1, 2)) if shift else x
        region = torch.zeros(h, w, dtype=torch.long)
        if shift:
            rows = torch.zeros(h, dtype=torch.long)
            cols = torch.zeros(w, dtype=torch.long)
            rows[h - m:h - shift] = 1
            rows[h - shift:] = 2
            cols[w - m:w - shift] = 1
            cols[w - shift:] = 2
            region = rows[:, None] * 3 + cols[None, :]
        bias = attn.position_bias()
        d = dim // heads
        ref = torch.empty_like(xs)
        for b in range(2):
            for i in range(0, h, m):
                for j in range(0, w, m):
                    tok = xs[b, i:i + m, j:j + m].reshape(m * m, dim)
                    lab = region[i:i + m, j:j + m].reshape(-1)
                    qkv = attn.qkv(tok).reshape(m * m, 3, heads, d).permute(1, 2, 0, 3)
                    q, k, v = qkv[0], qkv[1], qkv[2]
                    logits = q @ k.transpose(-1, -2) / d**0.5 + bias
                    logits = logits.masked_fill(lab[:, None] != lab[None, :], float("-inf"))
                    o = (logits.softmax(-1) @ v).transpose(0, 1).reshape(m * m, dim)
                    ref[b, i:i + m, j:j + m] = attn.proj(o).reshape(m, m, dim)
        if shift:
            ref = torch.roll(ref, (shift, shift), (1, 2))
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_uformer_shifted_windows_shapes():
    net = build_net("uformer", size="tiny", depths=(2, 2), shift_windows=True, residual=False)
    _randomise(net)
    for h, w in [(5, 7), (17, 23), (16, 16)]:
        y = net(torch.rand(1, 1, h, w))
        assert y.shape == (1, 1, h, w) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_and_autocast(name):
    net = build_net(name, size="tiny", residual=False)
    _randomise(net)
    x = torch.rand(1, 1, 17, 23)
    ref = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    y = net_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = net(x)
    assert yb.shape == x.shape and torch.isfinite(yb).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_bf16_channels_last(name):
    net = build_net(name, size="tiny", residual=False).cuda().to(memory_format=torch.channels_last)
    _randomise(net)
    x = torch.rand(2, 1, 17, 23, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = net(x)
        y.float().mean().backward()
    assert y.shape == x.shape and torch.isfinite(y).all()
