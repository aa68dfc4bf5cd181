"""Multi-slice context: the fusion network, the training pairs with neighbouring sections, and the neighbours
taken at application."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_emsr.errors import InputError
from napari_emsr.train import TrainConfig, Trainer

# NOTE: experimental, kept with the benchmark that measures it (benchmarks/bench_large_factors.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from context_arch import ContextNet
from context_pairs import ContextPairs, context_stacks


def test_context_net_starts_as_its_base_network_and_learns_from_the_neighbours():
    torch.manual_seed(0)
    net = ContextNet(context=2, base_size="tiny", width=4)
    x = torch.rand(2, 5, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x[:, 2:3])  # untrained: the middle plane, as the base network gives it
        torch.testing.assert_close(net(x[:, 2:3]), x[:, 2:3])  # one plane is its own context
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    target = x[:, 1:2]  # only the neighbours hold it
    for _ in range(3):
        loss = (net(x) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(net.fuse[2].weight.abs().sum()) > 0
    with pytest.raises(InputError):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError):
        ContextNet(context=0)


def test_application_neighbours_are_stride_planes_apart_and_mirrored():
    planes = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 2, 3), np.float32)
    st = context_stacks(planes, 2, 2)
    assert st.shape == (6, 5, 2, 3)
    np.testing.assert_array_equal(st[2, :, 0, 0], [2, 0, 2, 4, 4])  # 2 - 4 mirrors to 2
    np.testing.assert_array_equal(st[0, :, 0, 0], [4, 2, 0, 2, 4])  # mirrored at the start
    np.testing.assert_array_equal(st[5, :, 0, 0], [1, 3, 5, 3, 1])  # and at the end
    np.testing.assert_array_equal(context_stacks(planes[:1], 1, 3)[0, :, 0, 0], [0, 0, 0])


def test_training_context_is_the_neighbouring_sections_degraded_alike(tiny_stack):
    vol, _ = tiny_stack
    t = Trainer(vol, TrainConfig(factor=4, steps=1, patch=32, batch=2, size="tiny",
                                 options={"profile": "point", "noise": "none"}))
    pairs = ContextPairs(t.ctx, context=2)
    x, y = pairs.batch(6)
    assert x.shape == (6, 5, 32, 32) and y.shape == (6, 1, 32, 32)
    # the middle channel is the target degraded; its neighbours are other sections, further from the target
    err = (x - y).abs().mean(dim=(2, 3)).mean(0)
    assert err[2] < err[1] and err[2] < err[3] and err[1] < err[0] + 0.05
    vx, vy = pairs.validation()
    assert vx.shape == (16, 5, 32, 32) and vy.shape == (16, 32, 32)
    # the same degradation as the isotropic pairs: the middle channel of a noise-free point pair is U D of the target
    hr = torch.from_numpy(np.ascontiguousarray(vy[:1]))
    gaps = [float((pairs._degrade(hr, torch.tensor([k]))[0] - torch.from_numpy(vx[0, 2])).abs().max())
            for k in range(len(pairs.D))]
    assert min(gaps) < 1e-4
