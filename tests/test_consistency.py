"""Section consistency (napari_emsr.consistency): the projection onto the volumes a stack could have come from.

Numbers only: a random volume, cut into a stack with a known profile, and restorations of it that are off.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_emsr.consistency import Consistency, applies, kernel_of
from napari_emsr.degrade import profile_kernel, section_blur, section_kernel
from napari_emsr.geometry import output_length


def _cut(x: np.ndarray, kernel, factor: float) -> np.ndarray:
    """The stack of ``x`` (every section, the end ones included) through the operator's own rows."""
    from napari_emsr.consistency import _operator

    d = _operator(int(round((len(x) - 1) / factor)) + 1, factor, kernel)
    return (d @ x.reshape(len(x), -1)).reshape((d.shape[0],) + x.shape[1:]).astype(np.float32)


def _truth(n_sections: int, factor: float, side: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (output_length(n_sections, factor), side, side)).astype(np.float32)


def c_kernel(profile, f):
    return profile_kernel(profile, f)


@pytest.mark.parametrize("profile", ["point", "slab", "gaussian", (0.6, 0.2)])
def test_the_operator_is_the_stack_cut(profile):
    f, ns = 4, 9
    x = _truth(ns, f)
    c = Consistency(ns, f, profile_kernel(profile, f))
    if isinstance(profile, str):
        cut = section_blur(x, profile, f)
    else:
        from scipy import ndimage

        cut = ndimage.convolve1d(x, section_kernel(*profile, f), axis=0, mode="mirror")
    inner = c.inner
    np.testing.assert_allclose((c.D @ x.reshape(len(x), -1)).reshape((len(inner),) + x.shape[1:]), cut[::f][inner],
                               atol=1e-5)
    # a section whose profile reaches past either end of the output is not a constraint (the mirror is not tissue)
    r = 0 if c_kernel(profile, f) is None else len(c_kernel(profile, f)) // 2
    assert list(inner) == [i for i in range(ns) if i * f - r >= 0 and i * f + r <= (ns - 1) * f]


@pytest.mark.parametrize("profile", ["slab", "gaussian"])
def test_projection_agrees_never_moves_away_from_the_truth_and_is_idempotent(profile):
    f, ns = 4, 12
    x = _truth(ns, f)
    k = profile_kernel(profile, f)
    c = Consistency(ns, f, k)
    s = _cut(x, k, f)
    rng = np.random.default_rng(1)
    # a restoration that is off: too smooth along z, biased, noisy
    from scipy import ndimage

    y = ndimage.uniform_filter1d(x, 5, axis=0) * 0.8 + 0.1 + rng.normal(0, 0.2, x.shape).astype(np.float32)
    p = c.apply(y, s)
    assert p.shape == y.shape and p.dtype == np.float32
    assert c.disagreement(p, s) < 1e-4 < c.disagreement(y, s)
    assert np.linalg.norm(p - x) < np.linalg.norm(y - x)
    np.testing.assert_allclose(c.apply(p, s), p, atol=1e-4)
    # a restoration that already agrees is left as it is
    np.testing.assert_allclose(c.apply(x, s), x, atol=1e-4)


def test_a_fractional_factor_and_shape_errors():
    f, ns = 2.5, 7
    x = _truth(ns, f)
    c = Consistency(ns, f, profile_kernel("slab", f))
    assert c.n_out == len(x)
    s = _cut(x, profile_kernel("slab", f), f)
    y = x + 0.3
    assert c.disagreement(c.apply(y, s), s) < 1e-4
    with pytest.raises(ValueError, match="rows"):
        c.apply(y[:-1], s)


def test_which_profiles_it_applies_to():
    f = 4
    assert not applies(kernel_of({"profile": "point"}, f))
    assert applies(kernel_of({"profile": "slab"}, f))
    assert applies(kernel_of({"profile": "gaussian"}, f))
    assert applies(kernel_of({"profile": "fitted", "thickness": 1.0, "softness": 0.0}, f))
    # a thin fitted profile (what a point stack's fit may give) is treated as point sampling
    assert not applies(kernel_of({"profile": "fitted", "thickness": 0.15, "softness": 0.07}, f))
    assert kernel_of({"profile": "mixed"}, f) is None and kernel_of({"profile": "learned"}, f) is None
    assert kernel_of({"profile": "fitted"}, f) is None  # damaged options: nothing to project with


# ---------------------------------------------------------------------------------------------- in the engine
def _trained(profile: str, tmp_path):
    import torch

    from napari_emsr.io import as_volume
    from napari_emsr.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    gt = rng.normal(100.0, 20.0, (33, 40, 40)).astype(np.float32)
    stack = section_blur(gt, profile, 4)[::4].astype(np.float32)
    vol = as_volume(stack, spacing=(40.0, 10.0, 10.0))
    t = Trainer(vol, TrainConfig(net="rescnn-sections", size="tiny", steps=3, patch=24, batch=2, device="cpu",
                                 preview_every=0, val_every=10**6, options={"profile": profile}))
    for _ in t.run():
        pass
    return vol, stack, t.model


def test_the_engine_projects_each_chunk_as_the_whole_volume_would_be(tmp_path):
    from napari_emsr.reconstruct import reconstruct

    vol, stack, model = _trained("slab", tmp_path)
    plain = reconstruct(vol, model, planes="fuse", device="cpu", chunks=(16, 24)).compute()
    made = reconstruct(vol, model, planes="fuse", device="cpu", chunks=(16, 24), consistent=True).compute()
    c = Consistency(len(stack), 4, kernel_of(model.config["options"], 4))
    assert c.disagreement(plain, stack) > 0.01
    assert c.disagreement(made, stack) < 1e-3
    # chunks of whole z columns: the same as projecting the whole volume at once
    np.testing.assert_allclose(made, c.apply(plain, stack), atol=2e-3)


def test_a_point_model_is_left_as_it_is_and_the_export_names_it(tmp_path):
    from napari_emsr.outputs import export_fingerprint
    from napari_emsr.reconstruct import reconstruct

    vol, _, model = _trained("point", tmp_path)
    plain = reconstruct(vol, model, planes="xz", device="cpu").compute()
    made = reconstruct(vol, model, planes="xz", device="cpu", consistent=True).compute()
    np.testing.assert_array_equal(made, plain)
    on = export_fingerprint(vol, model, "fuse", consistent=True)
    off = export_fingerprint(vol, model, "fuse")
    assert on["consistency"] == "on" and "consistency" not in off  # a resume with the other setting is refused


def test_cli_apply_consistent(tmp_path):
    import tifffile

    from napari_emsr.cli import main

    vol, stack, model = _trained("slab", tmp_path)
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, stack, imagej=True, resolution=(0.1, 0.1), metadata={"spacing": 40.0, "unit": "nm"})
    m = model.save(tmp_path / "m.emsr.pt")
    outs = {}
    for flag in ([], ["--consistent"]):
        out = tmp_path / f"out{len(flag)}.tif"
        assert main(["apply", str(src), "--model", str(m), "-o", str(out), "-q", "--device", "cpu", *flag]) == 0
        outs[bool(flag)] = tifffile.imread(out)
    c = Consistency(len(stack), 4, kernel_of(model.config["options"], 4))
    assert c.disagreement(outs[True], stack) < 0.1 * c.disagreement(outs[False], stack)
