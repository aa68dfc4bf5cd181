"""Methods are data: a toy method registered here trains and applies through the trainer and the CLI, and a
two-stage toy method shows the trainer running stages with their own events into one model file.

Nothing in train.py, cli.py or the panel knows these methods: they come from the registry alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_emsr import cli
from napari_emsr.methods import Method, Option, Stage, get_method, method_names, register_method, unregister_method
from napari_emsr.model import EMSRModel
from napari_emsr.train import TrainConfig, Trainer


def _row_mean(y, width: int):
    """Average each row with its neighbours (a toy axial degradation), torch or numpy, (..., H, W)."""
    import torch

    t = torch.as_tensor(y)
    k = torch.ones(1, 1, width, 1, dtype=t.dtype) / width
    out = torch.nn.functional.conv2d(t.reshape(-1, 1, *t.shape[-2:]), k, padding=(width // 2, 0))
    return out.reshape(t.shape)


def toy_pairs(ctx):
    """A pair-maker of a few lines: targets are lateral patches, inputs their rows averaged."""
    import torch

    width = int(ctx.options["toy_width"])

    class ToyPairs:
        info = {"notes": [f"toy pairs: rows averaged in {width}s"], "toy": width}

        def batch(self, n):
            y = torch.from_numpy(ctx.lateral_patches(n)).to(ctx.device)[:, None]
            return _row_mean(y, width), y

        def validation(self):
            y = ctx.lateral_patches(4, ctx.held_out_planes(), np.random.default_rng(0))
            return _row_mean(y, width).numpy(), y

    return ToyPairs()


TOY = Method(
    name="toy",
    description="a test method: restore rows averaged in threes",
    pairs=toy_pairs,
    net="rescnn",
    size="tiny",
    loss="l1",
    order=1,
    defaults={"steps": 4, "patch": 24, "batch": 2},
    options=(Option("toy_width", 3, type=int, help="rows averaged together"),),
)


@pytest.fixture
def toy_method():
    register_method(TOY)
    yield TOY
    unregister_method(TOY.name)


@pytest.fixture
def tiny_tif(tiny_stack, tmp_path):
    vol, _ = tiny_stack
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.asarray(vol.data), imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 40.0, "unit": "nm", "axes": "ZYX"})
    return path


def test_registry_holds_the_builtin_methods_and_refuses_twins():
    assert method_names()[:3] == ["isotropic", "cubic", "linear"]
    assert get_method("isotropic").trains and not get_method("cubic").trains
    with pytest.raises(ValueError, match="already registered"):
        register_method(get_method("cubic"))


def test_a_registered_toy_method_trains_and_applies_through_the_cli(toy_method, tiny_tif, tmp_path, capsys):
    model_path, out = tmp_path / "toy.emsr.pt", tmp_path / "iso.tif"
    assert cli.main(["train", str(tiny_tif), "-o", str(model_path), "--method", "toy", "--toy-width", "5",
                     "--device", "cpu", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["method"] == "toy" and res["options"] == {"toy_width": 5} and res["steps"] == 4
    model = EMSRModel.load(model_path)
    assert model.config["method"] == "toy" and model.config["toy"] == 5 and model.order == 1
    assert cli.main(["apply", str(tiny_tif), "--model", str(model_path), "-o", str(out), "--json", "-q"]) == 0
    iso = tifffile.imread(out)
    assert iso.shape == (33, 48, 48) and iso.dtype == np.uint8
    # an option of another method is refused with a clear message and exit code 2
    assert cli.main(["train", str(tiny_tif), "-o", str(tmp_path / "x.pt"), "--method", "toy", "--profile", "slab",
                     "-q"]) == 2
    assert "--profile is not an option of method 'toy'" in capsys.readouterr().err


class _Warmup:
    """A stage that learns a 3x1 filter mapping lateral patches to themselves (real torch steps); its state nests
    the network's and the optimizer's states, as a GAN stage's would."""

    def __init__(self, ctx):
        import torch

        self.ctx = ctx
        self.conv = torch.nn.Conv2d(1, 1, (3, 1), padding=(1, 0), bias=False)
        self.opt = torch.optim.SGD(self.conv.parameters(), lr=0.1, momentum=0.9)

    def step(self):
        import torch

        y = torch.from_numpy(self.ctx.lateral_patches(2))[:, None]
        loss = torch.nn.functional.l1_loss(self.conv(y), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss)}

    def state_dict(self):
        return {"conv": self.conv.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, sd):
        self.conv.load_state_dict(sd["conv"])
        self.opt.load_state_dict(sd["opt"])


def staged_pairs(ctx):
    """Uses the trained stage: its filter, frozen, degrades the targets."""
    import torch

    conv = ctx.stages["warmup"].conv

    class Pairs:
        info = {}

        def batch(self, n):
            y = torch.from_numpy(ctx.lateral_patches(n))[:, None]
            with torch.no_grad():
                return conv(y), y

        def validation(self):
            y = torch.from_numpy(ctx.lateral_patches(4, ctx.held_out_planes(), np.random.default_rng(0)))[:, None]
            with torch.no_grad():
                return conv(y)[:, 0].numpy(), y[:, 0].numpy()

    return Pairs()


def test_a_two_stage_method_runs_its_stages_into_one_model_file(tiny_stack, tmp_path):
    vol, _ = tiny_stack
    staged = register_method(Method(
        name="staged", description="a test method with a stage before the restorer", pairs=staged_pairs,
        net="rescnn", size="tiny", loss="l1", defaults={"steps": 3, "patch": 24, "batch": 2},
        stages=(Stage("warmup", 5, _Warmup),),
    ))
    try:
        ck = tmp_path / "staged.emsr.pt"
        t = Trainer(vol, TrainConfig(method="staged", device="cpu", checkpoint=str(ck)))
        assert t.pairs is None  # built after its stage has trained
        events = list(t.run())
        stages = [(e.stage, e.step, e.total) for e in events if not e.done]
        assert stages == [("warmup", i, 5) for i in range(1, 6)] + [("restore", i, 3) for i in range(1, 4)]
        assert {e.stage_count for e in events} == {2} and events[-1].done and events[-1].stage == "restore"
        model = EMSRModel.load(ck)
        assert set(model.stages) == {"warmup"}
        (entry,) = model.config["stages"]
        assert entry["name"] == "warmup" and entry["done"] and entry["trained_steps"] == 5
        assert all("val_psnr" in h for h in model.history)  # the history is the restorer's
        np.testing.assert_array_equal(model.stages["warmup"]["conv"]["weight"].numpy(),
                                      t.ctx.stages["warmup"].conv.weight.detach().numpy())
        # a resumed run loads the finished stage and goes on with the restorer only
        t2 = Trainer(vol, TrainConfig(method="staged", device="cpu", steps=2), resume=ck)
        assert t2.pairs is not None
        more = [(e.stage, e.step) for e in t2.run() if not e.done]
        assert more == [("restore", 4), ("restore", 5)]
        # a model of one method does not resume another
        with pytest.raises(Exception, match="trained with method 'staged'"):
            Trainer(vol, TrainConfig(device="cpu", steps=1), resume=ck)

        # stopped inside the stage: a checkpoint keeps what it learned, the model is refused for applying (its
        # restorer never trained), and a resume goes on from the stage's next step
        part = tmp_path / "part.emsr.pt"
        t3 = Trainer(vol, TrainConfig(method="staged", device="cpu", checkpoint=str(part)))
        for ev in t3.run():
            if ev.step == 3:
                t3.stop()
        stopped = EMSRModel.load(part)
        assert stopped.config["stages"][0]["done"] is False and stopped.config["stages"][0]["trained_steps"] == 3
        with pytest.raises(Exception, match="stopped in its stage 'warmup'"):
            stopped.validate()
        t4 = Trainer(vol, TrainConfig(method="staged", device="cpu"), resume=part)
        steps = [(e.stage, e.step) for e in t4.run() if not e.done]
        assert steps[:2] == [("warmup", 4), ("warmup", 5)] and steps[2][0] == "restore"
        t4.model.validate()
    finally:
        unregister_method(staged.name)


def test_a_method_option_cannot_shadow_a_setting_or_another_methods_flag():
    """One clash would break every `emsr` command (argparse refuses a flag twice): refused at registration."""
    with pytest.raises(ValueError, match="cannot be called 'lr'"):
        register_method(Method("bad", "x", pairs=toy_pairs, options=(Option("lr", 1.0, type=float),)))
    with pytest.raises(ValueError, match="declared by another method"):
        register_method(Method("bad", "x", pairs=toy_pairs, options=(Option("profile", 1, type=int),)))
    assert "bad" not in method_names()
    with pytest.raises(Exception, match="takes a float, got nan"):
        get_method("isotropic").resolve_options({"noise_level": float("nan")})
