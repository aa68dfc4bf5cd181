"""The networks' precision on the CPU: bf16 autocast and channels-last weights where the CPU has bf16 matrix units,
fp32 elsewhere or when ``NAPARI_EMSR_CPU_BF16=0`` says so; both give the same restoration within bf16's rounding.

Real networks, a real training step, the real predict path; bf16 forced on with ``NAPARI_EMSR_CPU_BF16=1`` where
the machine has no bf16 units (emulated: slower, the same numbers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_nets import _one_thread, _randomise  # noqa: F401  (the one-thread fixture applies here too)

from napari_emsr.device import CPU_BF16_ENV, _native_bf16, cpu_bf16, fast_precision
from napari_emsr.model import autocast, predict
from napari_emsr.nets import build_net


def test_the_choice_follows_the_cpu_and_the_environment(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert not cpu_bf16() and not fast_precision("cpu")
    assert fast_precision("cuda:0")  # CUDA always runs in bf16, whatever the CPU's setting
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert cpu_bf16() and fast_precision("cpu")
    assert not fast_precision("mps")
    monkeypatch.setenv(CPU_BF16_ENV, "auto")
    info = Path("/proc/cpuinfo")
    flags = set(info.read_text().split()) if info.exists() else set()
    assert cpu_bf16() == bool(flags & {"amx_bf16", "avx512_bf16"}) == _native_bf16()
    with autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") == cpu_bf16()


@pytest.mark.parametrize("name", ["rescnn-sections", "rescnn"])
def test_bf16_restores_what_fp32_does_within_its_rounding(monkeypatch, name):
    kwargs = {"factor": 4} if name.endswith("-sections") else {}
    net = build_net(name, size="tiny", **kwargs)
    _randomise(net)
    planes = np.random.default_rng(0).normal(0.0, 1.0, (3, 33, 40)).astype(np.float32)
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    ref = predict(net, planes, "cpu")
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    got = predict(net, planes, "cpu")
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert not np.array_equal(got, ref)  # it did run in bf16
    scale = float(np.abs(ref).max())
    assert float(np.abs(got - ref).max()) < 0.05 * scale  # bf16 keeps 8 bits of mantissa


def test_a_training_step_in_bf16_keeps_fp32_weights_in_channels_last(monkeypatch, tmp_path):
    from napari_emsr.io import as_volume
    from napari_emsr.train import TrainConfig, Trainer

    monkeypatch.setenv(CPU_BF16_ENV, "1")
    data = np.random.default_rng(1).integers(0, 255, (9, 48, 48), dtype=np.uint8)
    vol = as_volume(data, spacing=(40.0, 10.0, 10.0))
    trainer = Trainer(vol, TrainConfig(net="rescnn-sections", size="tiny", steps=3, patch=24, batch=2, device="cpu",
                                       preview_every=0, val_every=10**6))
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    for _ in trainer.run():
        pass
    after = trainer.model.state_dict
    assert all(v.dtype == torch.float32 for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it learned
    conv = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # the saved model loads and restores as usual, in either precision
    path = trainer.model.save(tmp_path / "m.emsr.pt")
    from napari_emsr.model import EMSRModel

    m = EMSRModel.load(path)
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    out = predict(m.network("cpu"), np.zeros((1, 33, 24), np.float32), "cpu")
    assert np.isfinite(out).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_predict_through_pinned_buffers_matches_the_cpu(monkeypatch):
    """On CUDA, predict stages each batch in a page-locked buffer reused across batches (a last batch of another
    shape gets its own): the result is the CPU's within bf16's rounding, batch after batch."""
    net = build_net("rescnn-sections", size="tiny", factor=4)
    _randomise(net)
    planes = np.random.default_rng(3).normal(0.0, 1.0, (5, 33, 40)).astype(np.float32)
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    ref = predict(net, planes, "cpu", batch=2)
    got = predict(net.cuda(), planes, "cuda", batch=2)
    assert float(np.abs(got - ref).max()) < 0.05 * float(np.abs(ref).max())
