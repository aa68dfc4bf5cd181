"""The benchmark scripts' small helpers that the README's figures hang on: the stack names ``--stacks`` takes and
how their noisy variants are cut, the run files ``bench_heldout.py --calibrate`` reads, and how
``bench_lateral_anatomy.py`` takes the noise's share off cubic's error."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_degradation as bd
import bench_fit as bf
import bench_heldout as bh
import bench_lateral_anatomy as bla


def test_stack_names_take_the_noisy_variants_and_refuse_the_rest():
    for name in ("point", "slab-poisson", "point-poisson", "gauss1.5-poisson80", "slab-tail-poisson120"):
        assert bd.stack_name(name) == name
    for name in ("foo", "foo-poisson", "point-poison", "slab-poisson-poisson", "point-poisson0"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown stack"):
            bd.stack_name(name)
    assert bd.split_stack("point-poisson80") == ("point", 80) and bd.split_stack("slab-tail") == ("slab-tail", None)
    assert bd.split_stack("slab-poisson") == ("slab", 40)
    # a noisy variant is matched (and mismatched) like the stack under the noise
    assert bd.matched("point-poisson") == "point" and bd.matched("slab-poisson120") == "slab"
    assert bd.matched("gauss1.5-poisson") == bd.MATCHED["gauss1.5"] and bd.matched("slab-tail-poisson") is None


def test_the_fit_table_names_the_fwhm_each_stack_was_cut_with():
    assert bf.true_fwhm("point") == 0.0 and bf.true_fwhm("point-poisson") == 0.0
    assert bf.true_fwhm("slab") == 1.0 and bf.true_fwhm("slab0.7") == pytest.approx(0.7)
    assert bf.true_fwhm("gauss1.5-poisson80") == pytest.approx(1.5, abs=0.01)
    assert bf.true_fwhm("slab-tail") is None  # outside the family


def test_a_noisy_variant_is_its_stack_with_poisson_noise():
    gt = np.random.default_rng(0).uniform(60, 200, (33, 16, 16)).astype(np.float32)
    clean, noisy, fewer = (bd.cut(gt, s, 4) for s in ("point", "point-poisson", "point-poisson10"))
    assert clean.shape == noisy.shape == (9, 16, 16) and not np.array_equal(clean, noisy)
    d40, d10 = (np.std(x.astype(float) - clean) for x in (noisy, fewer))
    assert 10 < d40 < d10  # about sqrt(128 * 128 / 40) grey levels at mid grey; fewer photons, more noise


def test_calibration_reads_both_kinds_of_run_file(tmp_path, capsys):
    auto = {"psnr": 31.0, "steps": 100, "as": "fitted 0.00/0.00",
            "heldout": {"sections_gain_db": 0.9, "lateral_gain_db": 1.5, "judge_lateral_gain_db": 1.1}}
    deg = {"half": "dev", "command": "bench_degradation.py --gt medulla_fibsem_iso10nm_ts1_250.tif",
           "results": [{"factor": 4, "stack": "point", "rows": {"cubic": {"psnr": 30.0}, "auto": auto}},
                       {"factor": 8, "stack": "slab", "rows": {"cubic": {"psnr": 25.0}}}]}
    (tmp_path / "deg.json").write_text(json.dumps(deg))
    (tmp_path / "fits.json").write_text(json.dumps({"fits": []}))
    one = {"volume": "ts1", "half": "dev", "factor": 8, "stack": "slab", "steps": 50, "true_db": 1.4,
           "sections_db": 0.4, "lateral_db": 2.4, "judge_lateral_db": 0.2}
    (tmp_path / "one.json").write_text(json.dumps(one))
    rows = bh.load_rows(str(tmp_path / "deg.json"))
    assert len(rows) == 1 and rows[0]["true_db"] == pytest.approx(1.0) and rows[0]["lateral_db"] == 1.5
    assert bh.load_rows(str(tmp_path / "fits.json")) == [] and bh.load_rows(str(tmp_path / "one.json")) == [one]
    bh.calibrate([str(tmp_path / "deg.json"), str(tmp_path / "one.json")], [str(tmp_path / "deg.json")])
    out = capsys.readouterr().out
    assert "least squares on 2 runs" in out and "| ts1 | dev | 4 | point | 100 |" in out


def test_calibration_offers_the_perturbed_forms_only_where_every_row_has_them(tmp_path, capsys):
    rows = [{"volume": "ts1", "half": "dev", "factor": 4, "stack": st, "steps": 50, "true_db": t, "sections_db": 0.5,
             "lateral_db": lat, "judge_lateral_db": 0.3, "lateral_pert": {"thicker": lat - d, "sharper": lat - 2 * d}}
            for st, t, lat, d in (("point", 1.2, 1.4, 0.1), ("slab", 1.0, 1.8, 0.5), ("gauss1.5", 2.9, 4.4, 0.8))]
    for i, r in enumerate(rows):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    forms = bh._forms(rows)
    design, names = forms["perturbed"]
    assert names == ["lateral", "lateral - perturbed mean"]
    assert design[:, 1] == pytest.approx([0.15, 0.75, 1.2])  # the mean drop of each row
    assert forms["perturbed-worst"][0][:, 1] == pytest.approx([0.2, 1.0, 1.6])
    assert "perturbed" not in bh._forms([{**rows[0], "lateral_pert": {"thicker": 1.0}}, {
        k: v for k, v in rows[1].items() if k != "lateral_pert"}])
    bh.calibrate([str(tmp_path / f"r{i}.json") for i in range(3)])
    assert "perturbed: lateral x" in capsys.readouterr().out


def test_the_fit_region_measures_a_model_over_the_profiles_the_spectrum_cannot_tell_apart():
    from napari_emsr.heldout import lateral_planes, split_sections
    from napari_emsr.io import as_volume
    from napari_emsr.train import TrainConfig, train

    gt = np.random.default_rng(0).uniform(0, 255, (97, 64, 64)).astype(np.float32)
    from scipy import ndimage

    gt = ndimage.gaussian_filter(gt, 1.5)  # tissue-like: correlated in every direction
    lr = bd.cut(gt, "slab", 4)
    model = train(as_volume(lr, spacing=(40.0, 10.0, 10.0)),
                  TrainConfig(factor=4, steps=2, net="rescnn", size="tiny", patch=24, batch=4, device="cpu",
                              preview_every=0))
    kept, _ = split_sections(lr)
    r = bh.fit_region(lr, 4, model, lateral_planes(kept), 0.0, stack_matched="slab")
    opts = model.config["options"]
    assert opts["profile"] == "fitted" and r["fit"] == [opts["thickness"], opts["softness"]]
    assert r["near"] and r["min_db"] == min(r["near"].values()) <= r["mean_db"] <= max(r["near"].values())
    assert f"{r['fit'][0]:.2f}/{r['fit'][1]:.2f}" in r["near"]  # the fit itself is always measured
    assert r["true_profile"] == [1.0, 0.0] and r["true_distance_ratio"] > 0 and np.isfinite(r["true_profile_gain_db"])
    rows = [{"true_db": 1.0, "sections_db": 0.5, "lateral_db": 2.0, "fit_region": r},
            {"true_db": 2.0, "sections_db": 0.5, "lateral_db": 3.0, "fit_region": {**r, "min_db": 1.0}}]
    design, names = bh._forms(rows)["lateral-region"]
    assert names == ["lateral", "lateral - region min"] and design[1, 1] == pytest.approx(2.0)
    assert "region-min" not in bh._forms([rows[0], {k: v for k, v in rows[1].items() if k != "fit_region"}])


def test_the_anatomy_takes_the_noise_off_cubic_interpolation_error():
    from napari_emsr.degrade import profile_kernel

    # cubic passes all of a sample's noise on at the sample, less between two
    assert bla.cubic_noise_gain(0.0) == pytest.approx(1.0, abs=1e-6)
    assert 0.5 < bla.cubic_noise_gain(0.5) < 0.8
    rng = np.random.default_rng(0)
    f, k = 4, profile_kernel("slab", 4)
    between = lambda n: np.arange(n) % f != 0  # noqa: E731
    # planes of pure white noise: nothing is tissue, so the tissue's error is nought (a tenth of the raw error)
    noise = rng.normal(0, 10.0, (4, 96, 64)).astype(np.float32)
    for kernel in (None, k):
        raw = bla.interpolation_error(noise, kernel, f, 0.0, between, False)
        assert raw > 50
        assert abs(bla.interpolation_error(noise, kernel, f, 100.0, between, False)) < 0.1 * raw
    # smooth tissue without noise: the error is the tissue's, and it grows with the spacing
    y = np.arange(96, dtype=np.float32)[None, :, None]
    tissue = np.broadcast_to(50 * np.sin(y / 3.0), (4, 96, 64)).copy()
    assert 0 < bla.interpolation_error(tissue, None, 4, 0.0, between, False) < bla.interpolation_error(
        tissue, None, 8, 0.0, lambda n: np.arange(n) % 8 != 0, False)
