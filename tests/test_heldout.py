"""Real held-out sections as the judge (napari_emsr.heldout): synthetic stacks whose truth is known."""

import numpy as np
import pytest
from scipy import ndimage

from napari_emsr import heldout
from napari_emsr.degrade import make_anisotropic
from napari_emsr.errors import InputError


def _tissue(n=64, seed=0):
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=(n, n, n)), 1.5)
    v = (v - v.min()) / (v.max() - v.min()) * 255
    return v.astype(np.float32)


@pytest.mark.parametrize("truth, wrong", [("slab", "point"), ("point", "slab"), ("gaussian", "point")])
def test_the_true_profile_predicts_the_held_out_sections_best(truth, wrong):
    """A perfect restorer (the isotropic truth itself) blurred by the right profile predicts the real held-out
    sections exactly; by a wrong one it does not: the measure ranks right above wrong, both ways round."""
    gt = _tissue()
    stack = make_anisotropic(gt, 4, truth).astype(np.float32)
    kept, held = heldout.split_sections(stack, crop=None)
    m = len(held)
    assert m == len(kept) - 1 and m >= 3
    # kept section i sits at isotropic z = 8 i: the truth is the restoration of the kept sections on that grid
    right = heldout.score_prediction(held, heldout.predict_from_restored(gt, m, 4, truth), kept)
    bad = heldout.score_prediction(held, heldout.predict_from_restored(gt, m, 4, wrong), kept)
    assert right.psnr > 45  # exact up to float rounding
    assert right.gain_db > bad.gain_db + 3
    assert right.gain_db > 0


def test_noise_in_the_held_out_sections_is_taken_off_the_score():
    """Sections with noise no restorer can predict: scored against them as they are, a noise-free prediction
    gains 11 dB less over cubic than on the same stack without noise; with the sections' estimated noise variance
    taken off both errors, it gains what it gains on the noise-free stack (within 0.5 dB)."""
    gt = _tissue()
    stack = make_anisotropic(gt, 4, "slab").astype(np.float32)
    noisy = stack + np.random.default_rng(1).normal(0, 20, stack.shape).astype(np.float32)
    kept, held = heldout.split_sections(stack, crop=None)
    pred = heldout.predict_from_restored(gt, len(held), 4, (0.5, 0.0))  # a thinner slab than the truth's
    clean = heldout.score_prediction(held, pred, kept)
    kept_n, held_n = heldout.split_sections(noisy, crop=None)
    noisy_score = heldout.score_prediction(held_n, pred, kept_n)
    assert noisy_score.noise_sigma == pytest.approx(20, rel=0.05) and clean.noise_sigma < 1
    assert noisy_score.raw_gain_db < clean.gain_db - 8
    assert noisy_score.gain_db == pytest.approx(clean.gain_db, abs=0.5)
    assert noisy_score.as_dict()["raw_gain_db"] == round(noisy_score.raw_gain_db, 2)
    # the noise's share of cubic's error on the held-out sections: what tells a noisy stack
    assert clean.noise_share < 0.01 < heldout.NOISY_SHARE < noisy_score.noise_share < 0.7
    # the lateral planes too: cubic against itself still gains nothing, noise or not
    planes = gt[::8] + np.random.default_rng(2).normal(0, 20, gt[::8].shape).astype(np.float32)
    assert heldout.lateral_gains("cubic", planes, 4, 4.0, "point", device="cpu")[0] == pytest.approx(0, abs=1e-6)


def test_cubic_against_itself_gains_nothing_and_small_stacks_are_refused():
    stack = make_anisotropic(_tissue(), 4, "point").astype(np.float32)
    kept, held = heldout.split_sections(stack)
    s = heldout.heldout_score(kept, held, 4.0)
    assert s.gain_db == pytest.approx(0.0, abs=1e-9) and s.sections == len(held) and s.factor == 8.0
    assert s.as_dict()["sections"] == len(held)
    with pytest.raises(InputError, match="at least 7"):
        heldout.split_sections(stack[:6])


def test_coarse_profile_keeps_the_physical_section():
    assert heldout.coarse_profile("point") == "point"
    assert heldout.coarse_profile("slab") == (0.5, 0.0)
    assert heldout.coarse_profile((0.7, 0.2)) == pytest.approx((0.35, 0.1))
    t, s = heldout.coarse_profile("gaussian")
    assert t == 0 and s == pytest.approx(0.2123, abs=1e-3)
    with pytest.raises(InputError, match="held-out"):
        heldout.coarse_profile("learned")


def test_a_judge_trained_on_the_kept_sections_is_scored_on_the_held_out_ones():
    """A real (tiny) training at 2F on the kept sections, then a real reconstruction scored on the held-out ones."""
    stack = make_anisotropic(_tissue(48), 2, "slab").astype(np.float32)
    kept, held = heldout.split_sections(stack, crop=32)
    model = heldout.train_judge(kept, 2.0, "slab", steps=3, net="rescnn", size="tiny", patch=32, batch=2, seed=0,
                                device="cpu")
    assert model.config["factor"] == 4.0
    s = heldout.heldout_score(kept, held, 2.0, model, "slab", device="cpu")
    assert s.sections == len(held) and np.isfinite(s.gain_db) and s.factor == 4.0


def test_train_and_reconstruct_report_the_held_out_section_figure(tmp_path, capsys):
    """`--heldout` adds quality.heldout_sections to --json (and a line to the summary), from a real judge training."""
    import json

    from emsr_helpers import write_tif

    from napari_emsr import cli

    stack = make_anisotropic(_tissue(48), 4, "point").astype(np.uint8)
    src = write_tif(tmp_path / "s.tif", stack)
    tiny = ["--net", "rescnn", "--size", "tiny", "--patch", "32", "--batch", "2", "--steps", "2", "--device", "cpu",
            "-q"]
    assert cli.main(["train", str(src), "-o", str(tmp_path / "m.emsr.pt"), *tiny, "--heldout", "--heldout-steps", "2",
                     "--json"]) == 0
    q = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["quality"]["heldout_sections"]
    assert q["sections"] == (len(stack) - 1) // 2 and q["factor"] == 4.0 and q["judged_at"] == 8.0
    assert all(np.isfinite(q[k]) for k in ("gain_db", "sections_gain_db", "lateral_gain_db", "judge_lateral_gain_db",
                                           "noise_sigma", "sections_raw_gain_db"))
    assert q["noise_sigma"] >= 0
    # the estimate is the calibrated combination of the real held-out sections and the lateral planes
    want = heldout.combine(q["sections_gain_db"], q["lateral_gain_db"])
    assert q["gain_db"] == pytest.approx(want, abs=0.03)
    assert q["noise_share"] < heldout.NOISY_SHARE and q["noisy"] is False
    assert q["error_db"] == heldout.QUIET_ERROR_DB
    assert cli.main(["reconstruct", str(src), "-o", str(tmp_path / "r.tif"), *tiny, "--heldout"]) == 0
    out = capsys.readouterr().out
    assert "estimated gain over cubic:" in out and "noisy stack" not in out
    assert f"dB, give or take {heldout.QUIET_ERROR_DB:.1f} dB (from" in out
    # a noisy stack: the estimate says how far off it was on such stacks
    noisy = np.clip(stack + np.random.default_rng(0).normal(0, 40, stack.shape), 0, 255).astype(np.uint8)
    noisy_tif = write_tif(tmp_path / "n.tif", noisy)
    assert cli.main(["reconstruct", str(noisy_tif), "-o", str(tmp_path / "rn.tif"), *tiny, "--heldout", "--json"]) == 0
    qn = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["quality"]["heldout_sections"]
    assert qn["noisy"] is True and qn["noise_share"] >= heldout.NOISY_SHARE and qn["error_db"] == heldout.NOISY_ERROR_DB
    assert cli.main(["reconstruct", str(noisy_tif), "-o", str(tmp_path / "rn2.tif"), *tiny, "--heldout"]) == 0
    out = capsys.readouterr().out
    assert "noisy stack: noise is" in out and f"give or take {heldout.NOISY_ERROR_DB:.1f} dB" in out
    assert cli.main(["train", str(src), "-o", str(tmp_path / "n.emsr.pt"), *tiny, "--heldout", "--heldout-steps",
                     "0"]) == 2
    assert "--heldout-steps 0" in capsys.readouterr().err


def test_profile_judged_trains_a_judge_per_candidate_and_keeps_the_better_one():
    """--profile judged on a slab stack: point and the fitted profile are each trained briefly at 2F and scored on the
    held-out sections; the model records both scores and uses the one that scored higher."""
    from napari_emsr.io import as_volume
    from napari_emsr.train import TrainConfig, train

    stack = make_anisotropic(_tissue(64, seed=1), 4, "slab").astype(np.float32)
    cfg = TrainConfig(steps=2, net="rescnn", size="tiny", patch=32, batch=2, device="cpu",
                      options={"profile": "judged", "judge_steps": 2})
    model = train(as_volume(stack, spacing=(40.0, 10.0, 10.0)), cfg)
    judged = model.config["profile_judged"]
    fit = model.config["profile_fit"]
    assert fit["thickness"] > 0 or fit["softness"] > 0  # a slab stack: the fit is not point sampling
    assert set(judged) == {"point", "fitted"} and all(v["sections"] == 7 for v in judged.values())
    best = max(judged, key=lambda k: judged[k]["gain_db"])
    opts = model.config["options"]
    want = (0.0, 0.0) if best == "point" else (fit["thickness"], fit["softness"])
    assert opts["profile"] == "fitted" and (opts["thickness"], opts["softness"]) == pytest.approx(want)


def test_lateral_gains_of_cubic_are_nothing_unblurred_and_a_loss_when_blurred_again():
    """Cubic restores lateral planes as cubic does (gain 0); blurring it by a thick profile before scoring it
    against blurred planes blurs twice, which the blurred score must see as a loss (point sampling: no blur, 0)."""
    planes = _tissue(64)[::8]
    for profile, blurred_loss in (("point", False), ("slab", True)):
        unblurred, blurred = heldout.lateral_gains("cubic", planes, 4, 4.0, profile, device="cpu")
        assert unblurred == pytest.approx(0.0, abs=1e-6)
        assert (blurred < -0.5) if blurred_loss else blurred == pytest.approx(0.0, abs=1e-6)


def test_the_estimate_is_said_with_its_error_on_such_stacks():
    from napari_emsr.plugin.controllers.quality import heldout_line

    quiet = heldout.QualityEstimate(1.234, 0.8, 2.0, 31, 4.0, noise_share=0.02)
    noisy = heldout.QualityEstimate(4.5, 3.0, 7.0, 31, 4.0, noise_share=0.4)
    assert quiet.error_db == heldout.QUIET_ERROR_DB < noisy.error_db == heldout.NOISY_ERROR_DB
    assert quiet.as_dict()["error_db"] == heldout.QUIET_ERROR_DB and noisy.as_dict()["error_db"] == 1.8
    assert heldout_line(quiet) == "estimated gain over cubic: +1.23 dB \u00b1 0.8 (31 held-out sections)"
    assert heldout_line(noisy).startswith(
        "estimated gain over cubic: +4.50 dB \u00b1 1.8 (31 held-out sections); noisy stack")
    assert quiet.caveat == "" and "40 %" in noisy.caveat
