"""Tests of NGFF metadata: stores written by others (NGFF 0.5 on zarr v3), repaired and invalid metadata."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import zarr
from test_io_helpers import assert_valid_ngff

from napari_emsr.errors import InputError
from napari_emsr.io import open_volume, write_volume
from napari_emsr.io.ngff import find_multiscales, image_attrs, parse_image


@pytest.fixture
def vol() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(6, 10, 12), dtype=np.uint8)


def _v2_image(path, data, multiscale: dict):
    """A zarr v2 group with level arrays "0", "1", ... and the given NGFF 0.4-style multiscale."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    for i, level in enumerate(data):
        g.create_array(str(i), shape=level.shape, dtype=level.dtype, chunks=level.shape)[:] = level
    g.attrs["multiscales"] = [multiscale]
    return path


def test_image_attrs_parse_back():
    attrs = image_attrs("x", [("0", [40, 4, 4], [1, 2, 3]), ("1", [40, 8, 8], None)], "nanometer")
    doc, version = find_multiscales(attrs)
    assert version == "0.4"
    image = parse_image(doc, version, ndim_of=lambda path: 3)
    assert [ax.name for ax in image.axes] == ["z", "y", "x"] and image.axes[0].unit == "nanometer"
    assert [lvl.path for lvl in image.levels] == ["0", "1"]
    assert image.levels[0].scale == (40, 4, 4) and image.levels[0].translation == (1, 2, 3)
    assert image.levels[1].translation is None and image.repairs == ()


def test_strangers_ngff_05_store_with_translation_and_two_levels(tmp_path, vol):
    p = tmp_path / "stranger.ome.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    g.create_array("full", shape=vol.shape, chunks=(3, 5, 6), dtype=vol.dtype)[:] = vol
    half = vol[:, ::2, ::2]
    g.create_array("half", shape=half.shape, chunks=half.shape, dtype=vol.dtype)[:] = half
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "name": "stranger",
            "axes": [
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {"path": "full", "coordinateTransformations": [
                    {"type": "scale", "scale": [0.02, 0.004, 0.004]},
                    {"type": "translation", "translation": [0.1, 0.2, 0.3]}]},
                {"path": "half", "coordinateTransformations": [
                    {"type": "scale", "scale": [0.02, 0.008, 0.008]},
                    {"type": "translation", "translation": [0.1, 0.202, 0.302]}]},
            ],
            # A multiscale-wide transformation applies to every level, after the dataset's own.
            "coordinateTransformations": [{"type": "scale", "scale": [2, 1, 1]},
                                          {"type": "translation", "translation": [1, 0, 0]}],
        }],
    }
    assert_valid_ngff(p)
    v = open_volume(p)
    assert v.unit == "nm"
    assert v.spacing == pytest.approx((40, 4, 4))
    assert v.translation == pytest.approx((1200, 200, 300))
    assert [lvl.shape for lvl in v.levels] == [vol.shape, half.shape]
    np.testing.assert_array_equal(v.levels[1].compute(), half)
    v1 = open_volume(p / "zarr.json", level=1)
    assert v1.spacing == pytest.approx((40, 8, 8))
    assert v1.translation == pytest.approx((1200, 202, 302))
    np.testing.assert_array_equal(v1.data.compute(), half)


def test_legacy_metadata_is_repaired_with_a_warning(tmp_path, vol, caplog):
    # NGFF 0.3: axes as names, no coordinateTransformations.
    p = _v2_image(tmp_path / "old.zarr", [vol, vol[:, ::2, ::2]], {
        "version": "0.3", "axes": ["z", "y", "x"], "datasets": [{"path": "0"}, {"path": "1"}]})
    with caplog.at_level(logging.WARNING, logger="napari_emsr.io"):
        v = open_volume(p)
    assert "repairing" in caplog.text and "axes given as names" in caplog.text
    assert v.spacing is None and v.translation is None
    assert [lvl.shape for lvl in v.levels] == [vol.shape, (6, 5, 6)]
    # Axes without a type but with units, and the translation listed first.
    p = _v2_image(tmp_path / "untyped.zarr", [vol], {
        "version": "0.4",
        "axes": [{"name": "z", "unit": "nanometer"}, {"name": "y", "unit": "nanometer"},
                 {"name": "x", "unit": "nanometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "translation", "translation": [5, 6, 7]}, {"type": "scale", "scale": [30, 6, 6]}]}]})
    v = open_volume(p)
    assert v.spacing == pytest.approx((30, 6, 6)) and v.translation == pytest.approx((5, 6, 7))
    # Files we write need no repair.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="napari_emsr.io"):
        out = write_volume(tmp_path / "ours.ome.zarr", vol, spacing=(30, 6, 6), pyramid=2)
        open_volume(out)
    assert_valid_ngff(out)
    assert "repairing" not in caplog.text


def test_invalid_metadata_gives_a_clear_input_error(tmp_path, vol):
    p = _v2_image(tmp_path / "bad.zarr", [vol], {
        "version": "0.4",
        "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": "4, 4, 4"}]}]})
    with pytest.raises(InputError, match=r"does not follow NGFF 0\.4") as info:
        open_volume(p)
    assert "pydantic" not in str(info.value) and "open the array" in str(info.value)
    # Not a single dataset.
    zarr.open_group(str(p), mode="r+").attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}], "datasets": []}]
    with pytest.raises(InputError, match="datasets"):
        open_volume(p)
    # Metadata that fits the model but not the array.
    zarr.open_group(str(p), mode="r+").attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [4, 4]}]}]}]
    with pytest.raises(InputError, match="lists 2 axes but the data"):
        open_volume(p)


def test_unreadable_coarse_level_falls_back_to_the_finer_ones(tmp_path, vol, caplog):
    out = write_volume(tmp_path / "p.ome.zarr", vol, spacing=(8, 8, 8), pyramid=3)
    assert_valid_ngff(out)
    shutil.rmtree(out / "2")
    with caplog.at_level(logging.WARNING, logger="napari_emsr.io"):
        v = open_volume(out)
    assert len(v.levels) == 2 and "level 2" in caplog.text
    with pytest.raises(InputError, match="cannot be read"):
        open_volume(out, level=2)
    attrs = json.loads((out / ".zattrs").read_text())
    assert len(attrs["multiscales"][0]["datasets"]) == 3


def test_an_identity_at_the_multiscale_level_and_a_scale_of_the_wrong_length_are_repaired(tmp_path, vol, caplog):
    """Files the reader of the previous version opened keep opening: a multiscale-level identity is dropped, and
    a scale whose length does not match the axes is ignored (the level is then unscaled), each with a warning."""
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    ident = _v2_image(tmp_path / "ident.zarr", [vol], {
        "version": "0.4", "axes": axes, "coordinateTransformations": [{"type": "identity"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [40, 10, 10]}]}]})
    short = _v2_image(tmp_path / "short.zarr", [vol], {
        "version": "0.4", "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [10, 10]}]}]})
    with caplog.at_level(logging.WARNING):
        assert open_volume(ident).spacing == (40.0, 10.0, 10.0)
        short_vol = open_volume(short)
    assert short_vol.shape == vol.shape and short_vol.spacing is None
    assert "identity transformation dropped" in caplog.text and "2 values for 3 axes ignored" in caplog.text
