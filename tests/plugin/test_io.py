"""The npe2 contributions without the dock widget: manifest, reader, writer, sample data, cheap imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MANIFEST = Path(__file__).resolve().parents[2] / "src" / "napari_emsr" / "napari.yaml"


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_manifest_validates():
    mf = _manifest()
    assert mf.name == "napari-emsr"
    for cmd in mf.contributions.commands:
        assert cmd.id.startswith("napari-emsr.")
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", str(MANIFEST)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_name_imports():
    for cmd in _manifest().contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), cmd.python_name


def test_manifest_menus_and_samples():
    mf = _manifest()
    widget_cmds = {w.command for w in mf.contributions.widgets}
    assert {item.command for item in mf.contributions.menus["napari/layers/filter"]} <= widget_cmds
    assert {s.key for s in mf.contributions.sample_data} == {"medulla_anisotropic", "medulla_ground_truth"}
    assert mf.contributions.readers[0].accepts_directories


def test_plugin_imports_do_not_import_torch():
    code = (
        "import sys\n"
        "import napari_emsr, napari_emsr.plugin._reader, napari_emsr.plugin._writer, napari_emsr.plugin._sample_data\n"
        "napari_emsr.plugin._sample_data.make_sample_anisotropic()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'napari' not in sys.modules and 'qtpy' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _write_stack(path: Path, shape=(12, 40, 48), spacing=(40.0, 10.0, 10.0)) -> np.ndarray:
    from napari_emsr.io import write_volume

    data = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)
    write_volume(path, data, spacing, unit="nm")
    return data


def test_reader_tiff_lazy_with_scale(tmp_path):
    from napari_emsr.plugin._reader import napari_get_reader

    path = tmp_path / "stack.tif"
    data = _write_stack(path)
    reader = napari_get_reader(str(path))
    assert reader is not None
    ((arr, kwargs, kind),) = reader(str(path))
    assert kind == "image"
    assert hasattr(arr, "dask"), "the reader must hand napari a lazy array"
    np.testing.assert_allclose(kwargs["scale"], (40, 10, 10))
    assert kwargs["metadata"]["unit"] == "nm"
    assert kwargs["metadata"]["source"]
    np.testing.assert_array_equal(np.asarray(arr), data)


def test_reader_zarr_folder(tmp_path):
    from napari_emsr.plugin._reader import napari_get_reader

    path = tmp_path / "stack.ome.zarr"
    _write_stack(path, spacing=(50.0, 15.0, 15.0))
    reader = napari_get_reader(str(path))
    assert reader is not None
    ((_, kwargs, _),) = reader(str(path))
    np.testing.assert_allclose(kwargs["scale"], (50, 15, 15))
    assert kwargs["name"] == "stack"


def test_reader_declines_what_it_cannot_read(tmp_path):
    import tifffile

    from napari_emsr.plugin._reader import napari_get_reader

    (tmp_path / "notes.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path / "missing.tif")) is None
    plain = tmp_path / "plain_folder"
    plain.mkdir()
    assert napari_get_reader(str(plain)) is None
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((32, 32), np.uint8))
    assert napari_get_reader(str(flat)) is None
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    assert napari_get_reader(str(rgb)) is None


@pytest.mark.parametrize("suffix", [".tif", ".ome.zarr"])
def test_writer_keeps_voxel_size(tmp_path, suffix):
    from napari_emsr.io import open_volume
    from napari_emsr.plugin._writer import write_image

    data = (np.random.default_rng(1).random((6, 20, 24)) * 1000).astype(np.uint16)
    path = tmp_path / f"out{suffix}"
    written = write_image(str(path), data, {"scale": (30.0, 6.0, 6.0), "metadata": {"unit": "nm"}})
    assert written == [str(path)]
    vol = open_volume(path)
    np.testing.assert_allclose(vol.spacing, (30, 6, 6))
    np.testing.assert_array_equal(np.asarray(vol.data), data)


def test_writer_refuses_2d(tmp_path):
    from napari_emsr.errors import InputError
    from napari_emsr.plugin._writer import write_image

    with pytest.raises(InputError, match="3D"):
        write_image(str(tmp_path / "flat.tif"), np.zeros((8, 8)), {"scale": (1.0, 1.0)})


def test_sample_data_scales():
    from napari_emsr.plugin._sample_data import make_sample_anisotropic, make_sample_ground_truth

    ((aniso, akw, _),) = make_sample_anisotropic()
    ((truth, tkw, _),) = make_sample_ground_truth()
    np.testing.assert_allclose(akw["scale"], (40, 10, 10))
    np.testing.assert_allclose(tkw["scale"], (10, 10, 10))
    assert aniso.ndim == truth.ndim == 3
    # the two overlay: same physical extent up to the last input slice
    assert (aniso.shape[0] - 1) * 40 <= (truth.shape[0] - 1) * 10


@pytest.mark.gui
def test_viewer_open_tiff_with_plugin(make_napari_viewer, tmp_path):
    path = tmp_path / "stack.tif"
    _write_stack(path)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-emsr")
    assert len(layers) == 1
    np.testing.assert_allclose(layers[0].scale, (40, 10, 10))
    assert layers[0].metadata["spacing"] == (40.0, 10.0, 10.0)


@pytest.mark.gui
def test_viewer_sample_and_save(make_napari_viewer, tmp_path):
    from napari_emsr.io import open_volume

    viewer = make_napari_viewer()
    viewer.open_sample("napari-emsr", "medulla_anisotropic")
    layer = viewer.layers[-1]
    np.testing.assert_allclose(layer.scale, (40, 10, 10))
    out = tmp_path / "saved.ome.zarr"
    viewer.layers.save(str(out), selected=False, plugin="napari-emsr")
    np.testing.assert_allclose(open_volume(out).spacing, (40, 10, 10))
