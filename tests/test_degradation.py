"""Issue 9: the section profile fitted continuously, the learned degradation (paper 001's CycleGAN) as a stage of the
isotropic method, and the inspection of a degradation (``emsr info --degradation``). Real training steps on tiny
networks, real files."""

import json

import numpy as np
import pytest
import tifffile

from napari_emsr.degrade import profile_kernel, section_blur, section_kernel
from napari_emsr.errors import InputError
from napari_emsr.model import EMSRModel
from napari_emsr.profile_fit import fit_profile
from napari_emsr.train import TrainConfig, Trainer

TINY = dict(net="rescnn", size="tiny", patch=32, batch=2, device="cpu", val_every=2, preview_every=0, lr=2e-3)
LEARNED = {"profile": "learned", "degradation_steps": 3, "degradation_size": "tiny"}


@pytest.fixture(scope="module")
def gt():
    from napari_emsr.sample import _ground_truth

    return _ground_truth()


def _cut(gt, profile, factor, z=(0, 125), lat=96):
    v = gt[z[0] : z[1], :lat, :lat].astype(np.float32)
    return np.clip(np.rint(section_blur(v, profile, factor, axis=0)[::factor]), 0, 255).astype(np.uint8)


def test_section_kernel_family_spans_the_named_profiles():
    assert section_kernel(0.0, 0.0, 4.0) is None  # point sampling
    slab = section_kernel(1.0, 0.0, 4.0)
    assert np.allclose(slab, profile_kernel("slab", 4.0), atol=0.02)
    for t, s in ((0.7, 0.0), (1.0, 0.2), (0.0, 0.64), (1.5, 0.3)):
        k = section_kernel(t, s, 8.0)
        assert k.sum() == pytest.approx(1.0, abs=1e-5) and (k >= 0).all()
        assert np.allclose(k, k[::-1], atol=1e-6)  # centred on the kept sample
    # wider kernels spread more
    spread = [float((section_kernel(t, 0.1, 4.0) * (np.arange(-(len(section_kernel(t, 0.1, 4.0)) // 2),
                                                             len(section_kernel(t, 0.1, 4.0)) // 2 + 1)) ** 2).sum())
              for t in (0.3, 0.7, 1.2)]
    assert spread[0] < spread[1] < spread[2]
    with pytest.raises(InputError, match="non-negative"):
        section_kernel(-1.0, 0.0, 4.0)


def test_fit_profile_measures_how_thick_the_sections_are(gt):
    """Stacks cut thin, as a slab of F and as a wide Gaussian: the fitted kernel's width follows the truth."""
    fits = {name: fit_profile(_cut(gt, prof, 4, lat=160), 4.0) for name, prof in
            (("point", "point"), ("slab", "slab"), ("wide", (0.0, 0.64)))}
    assert all(f.reliable for f in fits.values())
    assert fits["point"].fwhm < 0.6 and fits["point"].fwhm < fits["slab"].fwhm < fits["wide"].fwhm
    assert fits["slab"].fwhm == pytest.approx(1.0, abs=0.35)  # a 160 x 160 crop: the fit is rougher than on 250^2
    assert fits["wide"].fwhm == pytest.approx(1.5, abs=0.35)
    tiny = fit_profile(_cut(gt, "slab", 4, z=(0, 20), lat=40), 4.0)
    assert not tiny.reliable and tiny.profile == (0.0, 0.0)  # too small to tell: point sampling, said so
    assert "not fitted" in tiny.note


def test_fit_profile_works_on_the_eleven_sections_left_at_f12(gt):
    """F = 12 on 125 slices leaves 11 sections: the fit still tells point sampling from a wide Gaussian there (it
    used to give up below 12 and train point sampling on every stack, below cubic on a Gaussian one)."""
    point = fit_profile(_cut(gt, "point", 12, lat=192), 12.0)
    wide = fit_profile(_cut(gt, (0.0, 0.64), 12, lat=192), 12.0)
    assert point.reliable and wide.reliable
    assert point.fwhm < 0.5
    assert wide.fwhm == pytest.approx(1.5, abs=0.35)


def test_the_fit_tells_noise_the_profile_averaged_from_acquisition_noise():
    """Noise of the imaged volume is averaged by the section profile like the tissue: behind a profile wider than F
    it correlates between neighbouring sections and is low-pass along z. The fit measures that correlation and
    simulates such noise through the profile; it used to treat all noise as white acquisition noise and fitted a
    1.9 F box to a 1.5 F Gaussian (its distance 1.04, now 0.01)."""
    from napari_emsr.degrade import profile_kernel as kernel_of
    from napari_emsr.profile_fit import _noise_correlation, _SpectrumMatch, section_correlation

    rng = np.random.default_rng(1)
    imaged = rng.normal(128.0, 20.0, (200, 128, 128)).astype(np.float32)  # an isotropic volume of pure noise
    wide = (0.0, 0.64)
    stack = section_blur(imaged, wide, 4, axis=0)[::4]
    expected = _noise_correlation(kernel_of(wide, 4.0), 4.0)
    assert expected == pytest.approx(0.54, abs=0.03)
    assert section_correlation(stack) == pytest.approx(expected, abs=0.04)
    m = _SpectrumMatch(stack, 4.0)
    assert m.distance(wide) < 0.1 and m.distance(wide) < 0.5 * min(m.distance(p) for p in ("point", "slab", "gaussian"))
    assert fit_profile(stack, 4.0).fwhm == pytest.approx(1.5, abs=0.2)
    # acquisition noise added to each section does not correlate: the measured share follows its size
    kept = float((kernel_of(wide, 4.0) ** 2).sum())  # the averaged noise's variance: 400 * kept
    acquired = stack + rng.normal(0.0, 20.0, stack.shape).astype(np.float32)
    share = 400 * kept / (400 * kept + 400)
    assert section_correlation(acquired) == pytest.approx(expected * share, abs=0.02)
    assert abs(section_correlation(section_blur(imaged, "point", 4, axis=0)[::4])) < 0.02  # point sampling


def test_the_fit_keeps_point_sampling_under_acquisition_noise(gt):
    """Acquisition noise is added to each section after cutting: white along z, whatever the profile. The fit used
    to pass it through each candidate's projection correction and top it up, which made a thin blurred slab look
    closer than point sampling on a noisy point-sampled stack (the sample with detector noise of 16 grey levels:
    fitted 0.20/0.10, FWHM 0.28 F); simulated as white it is point sampling again."""
    stack = gt[::4].astype(np.float32) + np.random.default_rng(0).normal(0.0, 16.0, gt[::4].shape)
    fit = fit_profile(np.clip(np.rint(stack), 0, 255).astype(np.uint8), 4.0)
    assert fit.profile == (0.0, 0.0) and fit.fwhm == 0.0


@pytest.mark.parametrize(("blurred", "lines"), [(2, "y"), (1, "x")])
def test_the_fit_matches_z_to_the_lateral_axis_it_resembles(gt, blurred, lines):
    """The two lateral axes of an image can differ (a detector's bandwidth blurs the fast scan direction); z need
    not resemble their mean. Here one lateral axis is blurred and z point-sampled: z is as sharp as the other
    lateral axis, so the fit takes that axis alone (best distance 0.34 and 0.25, against 0.52 and 0.44 with both
    axes) and still finds point sampling."""
    from scipy import ndimage

    from napari_emsr.profile_fit import LINES_MARGIN, _SpectrumMatch

    v = ndimage.gaussian_filter1d(gt.astype(np.float32), 2.0, axis=blurred)
    stack = np.clip(np.rint(v[::4]), 0, 255).astype(np.uint8)
    fit = fit_profile(stack, 4.0)
    assert fit.lateral_lines == lines and f"lines along {lines} (closer" in fit.note
    assert fit.fwhm < 0.5
    d = _SpectrumMatch(stack, 4.0, planes=8).distances(fit.profile)
    assert d[lines] < (1.0 - LINES_MARGIN) * d["yx"]
    assert fit.as_dict()["lateral_lines"] == lines
    # emsr info --degradation scores the candidates against the same lines
    from napari_emsr.sections import compare_sections

    report = compare_sections(stack, 4.0)
    assert report["fit"]["lateral_lines"] == lines and report["closest"] in ("point", "fitted")
    assert report["stats"]["point"]["distance"] < 0.8 * _SpectrumMatch(stack, 4.0).distances("point")["yx"]
    # and the panel's Inspect-sections summary says which lines the fit and the distances use
    from napari_emsr.plugin.sections_widget import summary

    assert f"lateral lines along {lines} alone" in summary(report)
    # the sample cut with slab sections is matched with both axes, and its summary does not say "alone"
    slab = np.clip(np.rint(section_blur(gt.astype(np.float32), "slab", 4, axis=0)[::4]), 0, 255).astype(np.uint8)
    both = compare_sections(slab, 4.0)
    assert both["fit"]["lateral_lines"] == "yx" and "alone" not in summary(both)


def test_auto_fits_the_profile_and_a_resume_keeps_it(gt, tmp_path):
    """The default (auto) is the fitted profile, recorded as numbers in the model; a resumed run trains on with
    the same numbers instead of fitting again."""
    stack = _cut(gt, "slab", 4, z=(0, 125), lat=160)
    t = Trainer(stack, TrainConfig(factor=4, steps=2, **TINY))
    o = t.config.options
    assert o["profile"] == "fitted" and 0.6 < o["thickness"] + o["softness"] and o["thickness"] < 1.6
    assert t.info["profile_fit"]["reliable"]
    for _ in t.run():
        pass
    path = t.model.save(tmp_path / "m.pt")
    m = EMSRModel.load(path)
    assert m.config["options"]["thickness"] == o["thickness"]
    r = Trainer(stack[:, :64, :64], TrainConfig(factor=4, steps=2, **TINY), resume=path)
    assert r.config.options["thickness"] == o["thickness"] and r.info["profile_fit"] is None
    # given numbers are used as they are
    g = Trainer(stack, TrainConfig(factor=4, steps=1, options={"profile": "fitted", "thickness": 0.7,
                                                             "softness": 0.1}, **TINY))
    assert (g.config.options["thickness"], g.config.options["softness"]) == (0.7, 0.1)


def test_learned_degradation_trains_saves_and_feeds_the_restorer(gt, tmp_path):
    from napari_emsr.methods.isotropic.degradation import geometry

    stack = _cut(gt, "slab", 4, z=(0, 125), lat=96)
    t = Trainer(stack, TrainConfig(factor=4, steps=3, options=LEARNED, **TINY))
    assert t.stage_names == ["degradation", "restore"]
    events = list(t.run())
    stages = [e.stage for e in events]
    assert stages[:3] == ["degradation"] * 3 and stages[-1] == "restore"
    assert events[0].stage_count == 2 and events[0].total == 3 and np.isfinite(events[2].loss)
    learner = t.ctx.stages["degradation"]
    # G_hl turns lateral planes into axial-shaped ones: m rows every F, the full width
    side, m = geometry(32, 4.0)
    hr = __import__("torch").from_numpy(learner.real_hr(2))[:, None]
    assert learner.degrade(hr).shape == (2, 1, m, side)
    assert learner.real_lr(2).shape == (2, m, side)
    # the restorer learned on G_hl's pairs; the model keeps the stage's weights and what it learned
    x, y = t.pairs.validation()
    assert x.shape == y.shape == (16, 32, 32) and not np.allclose(x, y)
    model = t.model
    assert model.config["options"]["profile"] == "learned" and "degradation" in model.stages
    assert model.config["degradation"]["size"] == "tiny" and model.config["stages"][0]["done"]
    path = model.save(tmp_path / "learned.pt")
    back = EMSRModel.load(path)
    assert set(back.stages["degradation"]) >= {"g_hl", "g_lh", "d_l", "d_h"}
    # a resumed run does not train the stage again: it loads it
    r2 = Trainer(stack, TrainConfig(factor=4, steps=2, options=LEARNED, **TINY), resume=path)
    assert {e.stage for e in r2.run()} == {"restore"}
    np.testing.assert_allclose(r2.ctx.stages["degradation"].kernel(), learner.kernel())
    # other profiles do not run the stage
    assert Trainer(stack, TrainConfig(factor=4, steps=1, options={"profile": "slab"}, **TINY)).stage_names == [
        "restore"]


def test_learned_degradation_refuses_a_stack_too_thin_for_it(gt):
    thin = _cut(gt, "slab", 4, z=(0, 24), lat=96)  # 6 sections: fewer than a patch's LR rows
    with pytest.raises(InputError, match="learned degradation needs real axial planes of at least"):
        list(Trainer(thin, TrainConfig(factor=4, steps=1, options=LEARNED, **TINY)).run())


def test_info_degradation_writes_planes_and_compares_spectra(gt, tmp_path):
    from napari_emsr.cli import main

    # the whole sample's width: on a 160 x 160 crop slab and point sampling are within 0-3 % of each other
    stack = _cut(gt, "slab", 4, z=(0, 125), lat=192)
    src = tmp_path / "slab.tif"
    tifffile.imwrite(src, stack, imagej=True, resolution=(0.1, 0.1), metadata={"spacing": 40.0, "unit": "nm"})
    t = Trainer(stack, TrainConfig(factor=4, steps=1, options=LEARNED, **TINY))
    list(t.run())
    model = t.model.save(tmp_path / "m.pt")
    out = tmp_path / "deg.tif"
    assert main(["info", str(src), "--degradation", str(out), "--model", str(model), "--fast", "--json", "-q"]) == 0
    arr = tifffile.imread(out)
    kinds = json.loads(tifffile.TiffFile(out).pages[0].description)["kinds"]
    assert kinds[0] == "real" and "learned (model)" in kinds and "fitted" in kinds
    assert arr.shape[0] == len(kinds) and arr.shape[1] == 4  # kinds x planes x z x x
    assert (tmp_path / "deg.png").stat().st_size > 1000
    report = json.loads((tmp_path / "deg.json").read_text())
    st = report["stats"]
    # a slab stack: slab (and the fit) are closer to the real z spectrum than point sampling or the Gaussian
    assert st["slab"]["distance"] < st["point"]["distance"] and st["fitted"]["distance"] < st["gaussian"]["distance"]
    assert np.isfinite(st["learned (model)"]["distance"])
    # never over an existing report without --overwrite, never onto the input
    assert main(["info", str(src), "--degradation", str(out), "--fast", "-q"]) == 2
    assert main(["info", str(src), "--degradation", str(src), "--fast", "--overwrite", "-q"]) == 2
    assert main(["info", str(src), "--degradation", str(tmp_path / "x.png"), "--fast", "-q"]) == 2
