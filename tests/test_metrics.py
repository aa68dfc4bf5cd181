"""Tests of napari_emsr.metrics: PSNR, SSIM, FRC and the reference-free anisotropy score."""

from __future__ import annotations

import math
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_emsr.errors import InputError
from napari_emsr.metrics import anisotropy, frc, frc_resolution, psnr, section_banding, ssim

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "napari_emsr" / "data" / "medulla_gt_129x192x192.tif"


@pytest.fixture(scope="module")
def medulla() -> np.ndarray:
    return tifffile.imread(BUNDLED).astype(np.float32)


def test_psnr_identical_is_inf():
    a = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    assert psnr(a, a) == float("inf")


def test_psnr_known_value():
    ref = np.zeros((10, 10), np.uint8)
    test = np.full((10, 10), 10, np.uint8)  # MSE 100 -> 10 log10(255^2 / 100)
    assert psnr(ref, test) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(ref.astype(np.float32), test.astype(np.float32), data_range=1.0) == pytest.approx(-20.0)
    ref16 = np.zeros((4, 4), np.uint16)
    assert psnr(ref16, ref16 + 1) == pytest.approx(20 * math.log10(65535))
    # float default range: max - min of the reference
    ref_f = np.linspace(0, 2, 100).reshape(10, 10)
    assert psnr(ref_f, ref_f + 0.2) == pytest.approx(10 * math.log10(4 / 0.04))
    assert psnr(da.from_array(ref), da.from_array(test)) == pytest.approx(psnr(ref, test))


def test_psnr_errors():
    with pytest.raises(InputError, match="shape"):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="data_range"):
        psnr(np.zeros((3, 3)), np.ones((3, 3)))


def test_ssim():
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 255, (12, 16, 20), dtype=np.uint8)
    assert ssim(vol, vol) == pytest.approx(1.0)
    assert ssim(vol, vol, planes="xz") == pytest.approx(1.0)
    noisy = np.clip(vol + rng.normal(0, 40, vol.shape), 0, 255).astype(np.uint8)
    s3 = ssim(vol, noisy)
    sxz = ssim(vol, noisy, planes="xz")
    assert 0 < s3 < 0.95 and 0 < sxz < 0.95
    assert ssim(vol[0], noisy[0]) < 1
    with pytest.raises(InputError, match="planes"):
        ssim(vol, vol, planes="ab")


def test_frc_identical_and_independent():
    rng = np.random.default_rng(2)
    img = ndi.gaussian_filter(rng.normal(size=(128, 128)), 1.0)
    f, v = frc(img, img)
    assert f[0] == 0 and f[-1] == pytest.approx(0.5)
    assert np.all(v[1:] > 0.999)
    assert frc_resolution(img, img) == 0.5
    a = rng.normal(size=(128, 128))
    b = rng.normal(size=(128, 128))
    _, v = frc(a, b)
    assert abs(float(np.mean(v[5:]))) < 0.05
    assert frc_resolution(a, b) < 0.1


def test_frc_resolution_finds_cutoff():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(256, 256))
    # Signal band-limited by a Gaussian, each image with its own noise: FRC falls with frequency.
    signal = ndi.gaussian_filter(truth, 2.0) * 10
    a = signal + rng.normal(size=truth.shape)
    b = signal + rng.normal(size=truth.shape)
    r = frc_resolution(a, b)
    assert 0.05 < r < 0.4
    sharper = ndi.gaussian_filter(truth, 1.0) * 10
    assert frc_resolution(sharper + rng.normal(size=truth.shape), sharper + rng.normal(size=truth.shape)) > r


def test_anisotropy_isotropic_crop_near_one(medulla):
    r = anisotropy(medulla, spacing=(10, 10, 10))
    assert 0.65 < r["ratio"] < 1.35
    assert not r["axial_at_nyquist"]
    assert r["axial_cutoff"] == pytest.approx(r["cutoffs"][0])
    assert set(r) >= {"ratio", "axial_cutoff", "lateral_cutoff", "method"}


def test_anisotropy_z_blur_and_subsampling(medulla):
    iso = anisotropy(medulla)["ratio"]
    blurred = anisotropy(ndi.gaussian_filter1d(medulla, 3, axis=0))["ratio"]
    assert blurred > 1.5 and blurred > 2 * iso
    up = ndi.zoom(medulla[::4], (4, 1, 1), order=3)
    cubic = anisotropy(up)["ratio"]
    assert cubic > 1.5
    # The anisotropic stack as stored: with its spacing the ratio reflects the 4x thicker sections.
    stored = anisotropy(medulla[::4], spacing=(40, 10, 10))
    assert stored["axial_at_nyquist"]
    assert stored["ratio"] > 1.5
    assert stored["axial_cutoff"] == pytest.approx(0.5 / 40)


def test_section_banding(medulla):
    # the isotropic ground truth has as much detail at every z
    assert section_banding(medulla, 4)["ratio"] > 0.9
    # cubic interpolation of every 4th plane mixes neighbouring sections and keeps their detail (little
    # banding); a reconstruction that keeps its sections and blurs the planes between them bands
    sections = np.zeros(medulla.shape[0], bool)
    sections[::4] = True
    cubic = ndi.zoom(medulla[::4], (4, 1, 1), order=3)[: medulla.shape[0]]
    banded = np.where(sections[:, None, None], medulla, ndi.gaussian_filter(medulla, (0, 3, 3)))
    c, b = section_banding(cubic, 4), section_banding(banded, 4)
    assert b["ratio"] < 0.5 < c["ratio"]
    assert len(b["by_phase"]) == 4 and b["by_phase"][0] == max(b["by_phase"])
    # the same along another axis, lazily
    lazy = da.from_array(np.moveaxis(banded, 0, 2), chunks=32)
    assert section_banding(lazy, 4, axis=2)["ratio"] == pytest.approx(b["ratio"], rel=1e-5)
    with pytest.raises(InputError, match="factor"):
        section_banding(medulla, 1)
    with pytest.raises(InputError, match="3D"):
        section_banding(medulla[0], 4)


def test_anisotropy_lazy_other_axis_and_errors(medulla):
    lazy = da.from_array(np.swapaxes(ndi.gaussian_filter1d(medulla, 3, axis=0), 0, 2), chunks=(64, 64, 64))
    assert anisotropy(lazy, axis=2)["ratio"] > 1.5
    assert anisotropy(medulla, rng=5) == anisotropy(medulla, rng=5)
    with pytest.raises(InputError):
        anisotropy(medulla[0])
    with pytest.raises(InputError):
        anisotropy(medulla[:4])
    with pytest.raises(InputError):
        anisotropy(np.zeros((16, 16, 16)))
