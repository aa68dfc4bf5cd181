"""Section-phase equalisation (napari_emsr.deband): a banded volume loses its bands, intensities are kept, a chunk
with ``radius`` px of neighbours gives the whole volume's values, and reconstruct() applies it chunk by chunk."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_emsr.deband import fit, phase_bins
from napari_emsr.io import as_volume
from napari_emsr.metrics import section_banding
from napari_emsr.reconstruct import reconstruct


def _banded(factor: int = 8, nz: int = 41, n: int = 96, seed: int = 0, blur: float = 1.2) -> np.ndarray:
    """Random texture whose planes are blurred laterally the more the farther they lie from a section."""
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.normal(size=(nz, n, n)), (1.5, 1.0, 1.0))
    out = np.empty_like(base)
    for z in range(nz):
        d = min(z % factor, factor - z % factor) / factor  # 0 at a section, 0.5 half-way
        out[z] = gaussian_filter(base[z], blur * d)
    return (out / out.std()).astype(np.float32)


def test_phase_bins_follow_the_sections():
    assert phase_bins(9, 4).tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    b = phase_bins(26, 12.5)  # fractional F: ceil(F) bins, sections at 0, 12.5, 25
    assert b[0] == 0 and b[25] == 0 and b.max() == 12


def test_bands_go_and_intensities_stay():
    vol = _banded()
    before = section_banding(vol, 8)["ratio"]
    d = fit(vol, 8)
    out = d.apply(vol)
    after = section_banding(out, 8)["ratio"]
    assert before < 0.7 and after > 0.8, (before, after)
    for taps in d.filters.values():
        np.testing.assert_allclose(taps.sum(axis=1), 1.0, atol=1e-5)  # zero frequency untouched
    np.testing.assert_allclose(out.mean(axis=(1, 2)), vol.mean(axis=(1, 2)), atol=1e-3)
    g = d.gains()
    assert g["x"][4] > 1.15 > 0.85 > g["x"][0]  # half-way sharpened, sections softened


def test_strong_bands_need_the_refined_fit():
    """Planes half-way that kept a third of the sections' detail (ISBI-like, 0.36): gains fitted per axis from the
    unfiltered volume overshoot (filtering along x adds power along y too); refined on the filtered volume, they
    bring it to >= 0.85."""
    vol = _banded(blur=2.5)
    before = section_banding(vol, 8)["ratio"]
    one = section_banding(fit(vol, 8, passes=1).apply(vol), 8)["ratio"]
    refined = section_banding(fit(vol, 8).apply(vol), 8)["ratio"]
    assert before < 0.4 and one < 0.8 and refined >= 0.85, (before, one, refined)


def test_an_unbanded_volume_is_left_alone():
    rng = np.random.default_rng(1)
    vol = gaussian_filter(rng.normal(size=(41, 96, 96)), 1.0).astype(np.float32)
    d = fit(vol, 8)
    assert not d.active and d.banding >= 0.85
    np.testing.assert_array_equal(d.apply(vol), vol)
    forced = fit(vol, 8, banded=None)  # filters fitted anyway: they hardly change it
    assert forced.active
    assert np.abs(forced.apply(vol) - vol).mean() < 0.1 * np.abs(vol).mean()


def test_a_chunk_with_its_margin_gives_the_volumes_values():
    vol = _banded(nz=33, n=64)
    d = fit(vol, 8)
    whole = d.apply(vol)
    r = d.radius
    y0, y1, x0, x1 = 20, 40, 10, 50
    part = d.apply(vol[:, y0 - r : y1 + r, x0 - r : x1 + r])[:, r:-r, r:-r]
    np.testing.assert_allclose(part, whole[:, y0:y1, x0:x1], atol=1e-5)
    edge = d.apply(vol[:, 0 : 20 + r, 0 : 30 + r])[:, :20, :30]  # at the volume's edge: reflected the same way
    np.testing.assert_allclose(edge, whole[:, :20, :30], atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.sample import _ground_truth
    from napari_emsr.train import TrainConfig, train

    gt = _ground_truth()[:33, :64, :64]
    vol = as_volume(make_anisotropic(gt, 8, "point"), spacing=(80.0, 10.0, 10.0))
    cfg = TrainConfig(steps=3, net="rescnn", size="tiny", patch=24, batch=4, device="cpu", val_every=5,
                      preview_every=0)
    return vol, train(vol, cfg)


@pytest.mark.parametrize("planes", ["xz", "fuse"])
def test_reconstruct_debands_chunk_by_chunk(tiny_model, planes, monkeypatch):
    """deband=True changes the network's output and does not depend on the chunks (the filters are fitted
    however little the 3-step network bands)."""
    monkeypatch.setattr("napari_emsr.deband.BANDED", None)
    vol, model = tiny_model
    off = reconstruct(vol, model, planes=planes, deband=False).compute()
    on = reconstruct(vol, model, planes=planes).compute()
    small = reconstruct(vol, model, planes=planes, chunks=(16, 24)).compute()
    assert on.shape == off.shape == (33, 64, 64) and on.dtype == off.dtype
    assert np.abs(on.astype(int) - off.astype(int)).mean() > 0.05
    assert np.abs(small.astype(int) - on.astype(int)).max() <= 1  # float sums in other orders: a rounding apart
    assert abs(float(on.mean()) - float(off.mean())) < 0.5


def test_interpolation_is_never_filtered(tiny_model):
    vol, _ = tiny_model
    cubic = reconstruct(vol, "cubic").compute()
    np.testing.assert_array_equal(cubic, reconstruct(vol, "cubic", deband=False).compute())


def test_a_reconstruction_that_does_not_band_is_left_as_it_is(tiny_model, monkeypatch):
    monkeypatch.setattr("napari_emsr.deband.BANDED", 0.0)  # every probe counts as unbanded
    vol, model = tiny_model
    arr = reconstruct(vol, model, planes="xz")
    np.testing.assert_array_equal(arr.compute(), reconstruct(vol, model, planes="xz", deband=False).compute())


def test_the_filters_of_a_lazy_reconstruction_can_be_asked_for(tiny_model, monkeypatch):
    """debander_of: the filters a reconstruction (or a slice of it) applies, the same as fitting its probe; None
    for interpolation and with deband=False."""
    from napari_emsr.deband import fit as fit_probe
    from napari_emsr.deband import probe_region
    from napari_emsr.reconstruct import debander_of

    monkeypatch.setattr("napari_emsr.deband.BANDED", None)
    vol, model = tiny_model
    assert debander_of(reconstruct(vol, "cubic")) is None
    assert debander_of(reconstruct(vol, model, planes="xz", deband=False)) is None
    assert debander_of(np.zeros((3, 3, 3))) is None
    arr = reconstruct(vol, model, planes="xz")
    got = debander_of(arr[:, 10:12])
    raw = reconstruct(vol, model, planes="xz", deband=False).compute()
    y0, y1, x0, x1 = probe_region(raw.shape[1:])
    own = fit_probe(raw[:, y0:y1, x0:x1].astype(np.float32), 8.0, (2,), banded=None)
    assert got.active and got.filters.keys() == own.filters.keys() == {2}
    np.testing.assert_allclose(got.filters[2], own.filters[2], atol=0.02)  # own: from the uint8 output
    assert debander_of(arr) is got  # fitted once per reconstruction


def test_the_panels_layers_come_with_their_filters_fitted(tiny_stack):
    """The panel's reconstruction task (run in a worker) fits the deband filters itself, so the first plane napari
    shows computes that plane's chunk only, not the probe as well."""
    from napari_emsr.plugin.workers.tasks import reconstruct_task
    from napari_emsr.train import TrainConfig, train

    vol, _ = tiny_stack
    model = train(vol, TrainConfig(net="rescnn", size="tiny", steps=2, patch=24, batch=2, device="cpu"))
    (name, arr, _, _), = reconstruct_task(vol, model, ["xz"], "cpu", deband=True)
    node = next(v for k, v in arr.dask.items() if isinstance(k, str) and k.startswith("emsr-engine"))
    eng = getattr(node, "value", node)
    assert eng._debander is not None  # fitted in the task
    calls = []
    orig = eng.restore

    def recording(planes):
        calls.append(planes.shape)
        return orig(planes)

    eng.restore = recording
    arr[:, 20, :].compute()
    assert len(calls) == 1 and calls[0][0] == 1, calls  # one xz plane, no probe
