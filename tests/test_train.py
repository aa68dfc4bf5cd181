import numpy as np
import pytest

from napari_emsr.errors import InputError, ModelError
from napari_emsr.model import EMSRModel
from napari_emsr.train import TrainConfig, Trainer, train

TINY = dict(net="rescnn", size="tiny", patch=24, batch=4, device="cpu", val_every=5, preview_every=5, lr=2e-3)


def test_trainer_yields_events_and_improves_loss(tiny_stack):
    vol, _ = tiny_stack
    t = Trainer(vol, TrainConfig(steps=30, **TINY))
    events = list(t.run())
    steps = [e.step for e in events if not e.done]
    assert steps == list(range(1, 31))
    assert events[-1].done and events[-1].val_psnr is not None
    assert any(e.preview is not None for e in events)
    prev = next(e.preview for e in events if e.preview is not None)
    assert prev.shape == t.preview_input().shape and prev.dtype == np.float32
    assert t.config.factor == 4.0  # from the voxel size
    m = t.model
    assert m.step == 30 and len(m.history) >= 6 and m.history[-1]["cubic_psnr"] > 10


def test_seeded_reproducible_on_cpu(tiny_stack):
    vol, _ = tiny_stack
    a = train(vol, TrainConfig(steps=5, seed=3, **TINY))
    b = train(vol, TrainConfig(steps=5, seed=3, **TINY))
    for k in a.state_dict:
        assert np.array_equal(a.state_dict[k].numpy(), b.state_dict[k].numpy())


def test_stop_keeps_usable_model_and_resume_continues(tiny_stack, tmp_path):
    vol, _ = tiny_stack
    ck = tmp_path / "ck.emsr.pt"
    t = Trainer(vol, TrainConfig(steps=50, checkpoint=str(ck), checkpoint_every=3, **TINY))
    for ev in t.run():
        if ev.step == 7:
            t.stop()
    assert t.step == 7
    m = EMSRModel.load(ck)
    assert m.step == 7
    t2 = Trainer(vol, TrainConfig(steps=4, **TINY), resume=ck)
    assert t2.optimizer_state is not None
    last = [e for e in t2.run()][-1]
    assert last.step == 11 and t2.model.step == 11


def test_model_file_is_safe_and_round_trips(tiny_stack, tmp_path):
    vol, _ = tiny_stack
    m = train(vol, TrainConfig(steps=2, **TINY))
    p = m.save(tmp_path / "m.emsr.pt")
    m2 = EMSRModel.load(p)
    assert m2.config["factor"] == 4.0 and m2.config["net"] == "rescnn"
    # a pickle that would run code is refused
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"format": "napari-emsr-model", "x": Evil()}))
    with pytest.raises(ModelError):
        EMSRModel.load(bad)
    with pytest.raises(ModelError, match="factor"):
        m2.check_compatible(8.0, 0)
    with pytest.raises(ModelError, match="axis"):
        m2.check_compatible(4.0, 1)


def test_bad_inputs(tiny_stack):
    vol, _ = tiny_stack
    import dask.array as da

    from napari_emsr.io import as_volume

    with pytest.raises(InputError, match="--factor"):
        Trainer(as_volume(vol.data), TrainConfig(steps=1, **TINY))
    with pytest.raises(InputError, match="smaller than one training patch"):
        Trainer(as_volume(vol.data[:, :8, :8], spacing=(40, 10, 10)), TrainConfig(steps=1, **TINY))
    bad = np.asarray(vol.data, dtype=np.float32).copy()
    bad[:, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Trainer(as_volume(bad, spacing=(40, 10, 10)), TrainConfig(steps=1, **TINY))
    with pytest.raises(InputError, match="needs no training"):
        Trainer(vol, TrainConfig(method="cubic"))
    with pytest.raises(InputError, match="factor"):
        Trainer(vol, TrainConfig(steps=1, factor=0.5, **TINY))
    assert isinstance(vol.data, da.Array)


def test_uformer_trains_a_step(tiny_stack):
    vol, _ = tiny_stack
    cfg = dict(TINY, net="uformer")
    ev = list(Trainer(vol, TrainConfig(steps=3, **cfg)).run())
    assert ev[-1].done and np.isfinite(ev[-1].loss)


def test_cuda_gets_a_larger_default_batch():
    """Batch 8 leaves a GPU idle; the method's measured ``batch_cuda`` applies there unless a batch is given."""
    from napari_emsr.methods import get_method

    m = get_method("isotropic")
    d = m.training_defaults()
    assert TrainConfig().resolved("cuda:0").batch == d["batch_cuda"] > d["batch"]
    assert TrainConfig().resolved("cpu").batch == d["batch"]
    assert TrainConfig(batch=4).resolved("cuda").batch == 4


def test_training_ends_with_the_best_held_out_weights(tiny_stack):
    """If the last weights score worse on the held-out planes than earlier ones, the earlier ones are kept."""
    import torch

    vol, _ = tiny_stack
    t = Trainer(vol, TrainConfig(steps=10, **{**TINY, "val_every": 1}))
    list(t.run())
    best, best_step, _ = t._best
    assert best_step >= 1 and best >= max(h["val_psnr"] for h in t.history) - 1e-9
    with torch.no_grad():  # wreck the weights, as a diverging run would
        for p in t.net.parameters():
            p.add_(torch.randn_like(p))
    t.step += 1
    t.history.append({"step": t.step, "loss": 1.0, "val_psnr": t.validate(), "cubic_psnr": t.cubic_psnr})
    assert t.history[-1]["val_psnr"] < best - 0.05
    t._restore_best()
    assert abs(t.validate() - best) < 1e-4
    assert t.model.history[-1]["restored_step"] == best_step


def test_auto_profile_is_fitted_and_recorded():
    """The default section profile is fitted to the stack and stored with the model (as numbers)."""
    from napari_emsr.sample import load_sample

    aniso, _ = load_sample(4, "slab")
    t = Trainer(aniso, TrainConfig(steps=1, **TINY))
    o = t.config.options
    assert o["profile"] == "fitted" and 0.7 <= o["thickness"] + o["softness"] <= 1.5
    m = t.model
    assert m.config["profile"] == "fitted" and m.config["profile_fit"]["thickness"] == o["thickness"]
    # thick simulated sections get back the noise their blur averaged away; point sections get fresh noise at
    # the stack's full level (they would otherwise share their noise with the target)
    assert o["noise"] == "gaussian"
    assert 0 < o["noise_level"] < t.info["noise_estimate"]["sigma"]
    assert m.config["noise_level"] == o["noise_level"]
    point, _ = load_sample(4, "point")
    tp = Trainer(point, TrainConfig(steps=1, **TINY))
    assert tp.config.options["profile"] == "fitted" and tp.config.options["thickness"] < 0.5
    assert tp.config.options["noise"] == "gaussian" and tp.config.options["noise_level"] > 0
    # an explicit profile is taken as given, and a wrong name is refused clearly
    assert Trainer(aniso, TrainConfig(steps=1, options={"profile": "point"}, **TINY)).info["profile_fit"] is None
    with pytest.raises(InputError, match="unknown profile .thick.*choose one of auto"):
        Trainer(aniso, TrainConfig(steps=1, options={"profile": "thick"}, **TINY))


def test_matched_noise_gives_back_what_the_blur_averaged(rng):
    from napari_emsr.degrade import profile_kernel
    from napari_emsr.methods.isotropic import matched_noise

    planes = rng.normal(0.5, 0.1, (4, 128, 128)).astype(np.float32)
    k = profile_kernel("slab", 4.0)
    est = matched_noise(planes, "slab", 4.0)
    assert est["sigma"] == pytest.approx(0.1, rel=0.05)
    assert est["level"] == pytest.approx(0.1 * np.sqrt(1 - (k.astype(float) ** 2).sum()), rel=0.05)
    # point sections keep their plane's noise, shared with the target: they get fresh noise at full strength
    assert matched_noise(planes, "point", 4.0)["level"] == pytest.approx(0.1, rel=0.05)
    assert matched_noise(np.full((4, 64, 64), 0.5, np.float32), "point", 4.0)["level"] == 0.0
    # the simulated slab sections are then as noisy as real ones: white noise at full strength
    blurred = np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 1, planes - 0.5)
    sampled = blurred[:, ::4]
    topped = sampled + rng.normal(0, est["level"], sampled.shape)
    assert topped.std() == pytest.approx(0.1, rel=0.05)


def test_divergence_rolls_back_and_halves_the_learning_rate(tiny_stack):
    """A learning rate far too high blows training up; the trainer goes back to its best weights each time."""
    vol, _ = tiny_stack
    t = Trainer(vol, TrainConfig(steps=40, **{**TINY, "lr": 0.5, "val_every": 4}))
    events = list(t.run())
    rollbacks = [h for h in t.history if "rolled_back_to" in h]
    assert rollbacks, [round(h["val_psnr"], 2) for h in t.history]
    assert t._lr_scale == 0.5 ** len(rollbacks)
    best = max(h["val_psnr"] for h in t.history)
    assert events[-1].val_psnr >= best - 0.05 and np.isfinite(events[-1].val_psnr)
    # the model in hand scores what the history says
    assert t.validate() == pytest.approx(events[-1].val_psnr, abs=1e-3)


def test_a_time_budget_alone_is_not_cut_short_by_the_default_step_count(tiny_stack):
    """``--minutes`` without ``--steps`` trains for the minutes: the default 3,000 steps used to end a fast
    machine's 10-minute run after about 4 (bf16 CPU); with both given, the first to run out ends it."""
    from napari_emsr.methods import TRAINING_DEFAULTS
    from napari_emsr.train_config import UNCAPPED_STEPS

    alone = TrainConfig(minutes=10).resolved()
    assert alone.steps == UNCAPPED_STEPS
    both = TrainConfig(minutes=10, steps=500).resolved()
    assert both.steps == 500
    assert TrainConfig().resolved().steps == TRAINING_DEFAULTS["steps"]
    # a real run: a short time budget with a tiny network runs past a handful of steps and stops on time
    import time

    t0 = time.perf_counter()
    vol, _ = tiny_stack
    trainer = Trainer(vol, TrainConfig(size="tiny", patch=24, batch=2, minutes=0.05, device="cpu",
                                       preview_every=0, val_every=10**6))
    for _ in trainer.run():
        pass
    assert time.perf_counter() - t0 < 60
    assert trainer.model.step > 5
