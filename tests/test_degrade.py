import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_emsr.degrade import degrade_axis, make_anisotropic, profile_kernel
from napari_emsr.errors import InputError
from napari_emsr.geometry import check_factor, output_length, output_positions, training_phases
from napari_emsr.interpolation import interpolate_axis, interpolation_matrix
from napari_emsr.methods.isotropic import N_PHASES
from napari_emsr.methods.isotropic import degradation_ops as _degradation_ops

# NOTE: the three-way estimate lives with the benchmarks that compare it with the fit
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("order", [1, 3])

def test_interpolate_axis_matches_scipy_mirror(order, rng):
    x = rng.random((9, 5)).astype(np.float32)
    pos = np.linspace(-0.3, 8.7, 31)
    ours = interpolate_axis(x, pos, order)
    ref = np.stack(
        [ndimage.map_coordinates(x[:, j].astype(float), [pos], order=order, mode="mirror") for j in range(5)], 1
    )
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(interpolation_matrix(9, pos, order) @ x, ours, atol=1e-5)


def test_geometry_contract():
    # input slice i at output i*F; output reaches the last input slice
    assert output_length(31, 4) == 121
    assert output_length(10, 3.33) == 31  # ceil(9*3.33)=30 -> 31 slices, the last at 30 >= 29.97
    pos = output_positions(10, 3.33)
    assert pos[0] == 0 and pos[-1] >= 9
    x = np.arange(31, dtype=np.float32)[:, None] ** 2
    y = interpolate_axis(x, output_positions(31, 4), 3)
    np.testing.assert_allclose(y[::4, 0], x[:, 0], rtol=1e-5, atol=1e-3)  # exact at the samples


@pytest.mark.parametrize("profile,f", [("slab", 4), ("slab", 3.33), ("gaussian", 8), ("point", 4)])
def test_profile_kernels_normalised(profile, f):
    k = profile_kernel(profile, f)
    if profile == "point":
        assert k is None
    else:
        assert abs(k.sum() - 1) < 1e-6 and len(k) % 2 == 1 and np.allclose(k, k[::-1])


def test_bad_factor_messages():
    for bad in (0.5, -1, float("nan"), 1000, "abc"):
        with pytest.raises(InputError, match="factor"):
            check_factor(bad)


def test_matrix_degradation_equals_reference(rng):
    """The trainer's precomputed matrices do exactly what degrade_axis does."""
    p, f = 32, 4.0
    hr = rng.random((p, p)).astype(np.float32)
    D, U = _degradation_ops(p, f, "slab", 3)
    for i in (0, 5, N_PHASES - 1):
        phase = training_phases(f, N_PHASES)[i]
        ref = degrade_axis(hr, f, "slab", phase=phase, order=3)
        np.testing.assert_allclose(U[i] @ (D[i] @ hr), ref, atol=1e-4)


def test_make_anisotropic_point_keeps_slices():
    v = np.random.default_rng(1).integers(0, 255, (17, 4, 4)).astype(np.uint8)
    a = make_anisotropic(v, 4, "point")
    assert a.dtype == np.uint8 and a.shape == (5, 4, 4)
    np.testing.assert_array_equal(a, v[::4])


def test_mixed_profile_stacks_every_profile(rng):
    p, f = 24, 4.0
    D, U = _degradation_ops(p, f, "mixed", 3)
    assert D.shape[0] == U.shape[0] == 3 * N_PHASES
    hr = rng.random((p, p)).astype(np.float32)
    outs = [U[k] @ (D[k] @ hr) for k in (0, N_PHASES, 2 * N_PHASES)]
    assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])


def test_training_phases_match_the_reconstruction_grid():
    """Integer F: the kept sections are whole rows, so a point-sampled training input holds exact rows."""
    ph = training_phases(4.0, N_PHASES)
    assert set(ph.tolist()) == {0.0, 1.0, 2.0, 3.0}
    D, _ = _degradation_ops(32, 4.0, "point", 3)
    assert np.all(np.isin(D, (0.0, 1.0)))  # one-hot rows: sampling, no blending
    # fractional F: the phases a crop at offset o sees, (-o) mod F, all inside [0, F)
    ph = training_phases(10 / 3, 6)
    np.testing.assert_allclose(ph, [0, 7 / 3, 4 / 3, 1 / 3, 8 / 3, 5 / 3], atol=1e-9)


@pytest.mark.parametrize("profile", ["point", "slab", "gaussian"])
def test_estimate_profile_finds_how_the_stack_was_cut(profile):
    """The bundled FIB-SEM crop cut three ways at F = 4: the estimate names the profile it was cut with."""
    from old_profile import estimate_profile

    from napari_emsr.sample import load_sample

    aniso, _ = load_sample(4, profile)
    est = estimate_profile(aniso.data, 4.0)
    assert est.reliable and est.profile == profile, est.note
    assert set(est.scores) == {"point", "slab", "gaussian"} and est.noise_sigma > 0


def test_estimate_profile_with_noise_and_axis(rng):
    """Noise added after cutting (as a detector adds it) does not fool it; another anisotropic axis works."""
    from old_profile import estimate_profile

    from napari_emsr.sample import load_sample

    aniso, _ = load_sample(4, "slab")
    noisy = np.clip(np.asarray(aniso.data, np.float32) + rng.normal(0, 8, aniso.shape), 0, 255)
    assert estimate_profile(noisy, 4.0).profile == "slab"
    assert estimate_profile(np.moveaxis(noisy, 0, 2), 4.0, axis=2).profile == "slab"


def test_estimate_profile_too_small_falls_back_to_point():
    from old_profile import estimate_profile

    v = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
    est = estimate_profile(v, 4.0)
    assert not est.reliable and est.profile == "point" and "too few" in est.note
    with pytest.raises(InputError, match="3D"):
        estimate_profile(v[0], 4.0)
    v[2, 3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        estimate_profile(v, 4.0)
