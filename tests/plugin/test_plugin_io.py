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
    assert {s.key for s in mf.contributions.sample_data} == {"medulla_anisotropic", "medulla_ground_truth",
                                                             "medulla_pair"}
    assert mf.contributions.readers[0].accepts_directories


def test_plugin_imports_do_not_import_torch():
    code = (
        "import sys\n"
        "import napari_emsr, napari_emsr.plugin, napari_emsr.plugin._reader, napari_emsr.plugin._writer\n"
        "import napari_emsr.plugin._sample_data, napari_emsr.plugin.layers, napari_emsr.plugin.state\n"
        "napari_emsr.plugin._sample_data.make_sample_anisotropic()\n"
        "napari_emsr.plugin._sample_data.make_sample_pair()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "gui = sorted(m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'pyqtgraph', 'magicgui')\n"
        "             if m in sys.modules)\n"
        "assert not gui, f'{gui} imported'\n"
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


def test_sample_pair_is_a_registered_pair():
    """The paired method's sample: the HR crop lies where the sample says in the LR stack, factor 2 from the scales."""
    from napari_emsr.methods.paired import as_stack, check_pair, pair_factor
    from napari_emsr.methods.paired.registration import register
    from napari_emsr.plugin._sample_data import PAIR_CROP, make_sample_pair

    (lr, lkw, _), (hr, hkw, _) = make_sample_pair()
    assert lr.dtype == hr.dtype == np.uint8 and lr.shape[0] == hr.shape[0]
    lv, hv = as_stack(lr), as_stack(hr)
    lv.spacing, hv.spacing = lkw["scale"], hkw["scale"]
    check_pair(lv, hv)
    assert pair_factor(lv, hv) == pytest.approx(2.0)
    reg = register(lr[:4], hr[:4], 2.0)
    assert reg.offset == pytest.approx((PAIR_CROP[0].start / 2, PAIR_CROP[1].start / 2), abs=0.15)


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


@pytest.mark.gui
def test_exported_reconstruction_is_a_valid_pyramid_that_reopens_multiscale_with_its_translation(
    make_napari_viewer, tmp_path
):
    """emsr's export of a stack with a translation: a valid NGFF pyramid, opened by napari as a multiscale layer
    placed where the input was."""
    import warnings

    import yaozarrs

    from napari_emsr.io import as_volume
    from napari_emsr.reconstruct import export

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (9, 300, 40), dtype=np.uint8)
    vol = as_volume(stack, spacing=(40.0, 10.0, 10.0))
    vol.translation = (400.0, 50.0, 60.0)
    out = export(vol, "cubic", tmp_path / "iso.ome.zarr", planes="xz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yaozarrs.validate_zarr_store(str(out))
    assert not [w for w in caught if type(w.message).__name__ == "ValidationWarning"]
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(out), plugin="napari-emsr")
    assert layer.multiscale and len(layer.data) >= 2
    assert layer.data[0].shape == (33, 300, 40) and layer.data[1].shape[1] == 150
    np.testing.assert_allclose(layer.scale, (10, 10, 10))
    np.testing.assert_allclose(layer.translate, (400, 50, 60))  # output slice 0 is input slice 0


# ------------------------------------------------------------------------------ layers <-> volumes (plugin.layers)
def _volume(levels=1, translation=None, unit="nm"):
    import dask.array as da

    from napari_emsr.io import Volume

    data = da.from_array(np.arange(8 * 16 * 16, dtype=np.uint16).reshape(8, 16, 16), chunks=(8, 16, 16))
    pyramid = (data, data[:, ::2, ::2])[:levels]
    return Volume(data, (40.0, 10.0, 10.0), unit=unit, translation=translation, levels=pyramid)


def test_volume_to_layer_data_single_scale():
    from napari_emsr.plugin.layers import volume_to_layer_data

    volume = _volume()
    data, kwargs, kind = volume_to_layer_data(volume, name="v", opacity=0.5)
    assert kind == "image" and data is volume.data
    assert kwargs["multiscale"] is False and kwargs["rgb"] is False
    assert kwargs["scale"] == (40.0, 10.0, 10.0) and "translate" not in kwargs
    assert kwargs["axis_labels"] == ("z", "y", "x") and kwargs["units"] == ("nm",) * 3
    assert kwargs["opacity"] == 0.5 and kwargs["metadata"]["spacing"] == (40.0, 10.0, 10.0)


def test_volume_to_layer_data_multiscale_with_translation():
    from napari_emsr.plugin.layers import volume_to_layer_data

    volume = _volume(levels=2, translation=(80.0, 20.0, 30.0))
    data, kwargs, _ = volume_to_layer_data(volume, name="v")
    assert isinstance(data, list) and [d.shape for d in data] == [(8, 16, 16), (8, 8, 8)]
    assert kwargs["multiscale"] is True
    assert kwargs["scale"] == (40.0, 10.0, 10.0) and kwargs["translate"] == (80.0, 20.0, 30.0)


def test_reader_gives_a_multiscale_layer_with_translate(tmp_path):
    from napari_emsr.io import write_volume
    from napari_emsr.plugin._reader import napari_get_reader

    path = tmp_path / "pyr.ome.zarr"
    data = (np.random.default_rng(2).random((6, 64, 64)) * 255).astype(np.uint8)
    write_volume(path, data, (40.0, 10.0, 10.0), translation=(40.0, 100.0, 200.0), pyramid=2)
    ((arr, kwargs, _),) = napari_get_reader(str(path))(str(path))
    assert kwargs["multiscale"] and len(arr) == 2 and arr[0].shape == data.shape
    np.testing.assert_allclose(kwargs["scale"], (40, 10, 10))
    np.testing.assert_allclose(kwargs["translate"], (40, 100, 200))
    np.testing.assert_array_equal(np.asarray(arr[0]), data)


def test_layer_to_volume_keeps_spacing_unit_translate_and_takes_level_0():
    from napari.layers import Image

    from napari_emsr.errors import InputError
    from napari_emsr.plugin.layers import layer_to_volume

    data = np.zeros((6, 32, 32), np.uint8)
    layer = Image(data, scale=(0.04, 0.01, 0.01), translate=(0.08, 0.02, 0.0), units="micrometer")
    volume = layer_to_volume(layer)
    np.testing.assert_allclose(volume.spacing, (40, 10, 10))  # the core works in nm
    assert volume.unit == "nm"
    np.testing.assert_allclose(volume.translation, (80, 20, 0))
    # the panel's voxel size wins over the layer's
    np.testing.assert_allclose(layer_to_volume(layer, spacing=(50.0, 10.0, 10.0), unit="nm").spacing, (50, 10, 10))
    pyramid = Image([data, data[:, ::2, ::2]], multiscale=True, scale=(40, 10, 10))
    assert layer_to_volume(pyramid).shape == data.shape
    rgb = Image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="photo")
    with pytest.raises(InputError, match="RGB"):
        layer_to_volume(rgb)
    with pytest.raises(InputError, match="2D"):
        layer_to_volume(Image(np.zeros((32, 32), np.uint8)))


def test_reconstruction_layer_overlays_its_input():
    from napari.layers import Image

    from napari_emsr.geometry import output_length, output_spacing
    from napari_emsr.plugin.layers import layer_to_volume, reconstruction_layer_kwargs

    source = Image(np.zeros((9, 32, 32), np.uint8), scale=(40, 10, 10), translate=(400, 50, 60), units="nm")
    volume = layer_to_volume(source)
    kwargs = reconstruction_layer_kwargs(
        source, volume, output_spacing(volume.spacing), name="iso", spacing=(40, 10, 10), unit="nm"
    )
    assert kwargs["scale"] == (10.0, 10.0, 10.0) and kwargs["translate"] == (400.0, 50.0, 60.0)
    assert kwargs["visible"] is False and kwargs["axis_labels"] == ("z", "y", "x")
    output = Image(np.zeros((output_length(9, 4.0), 32, 32), np.uint8), **kwargs)
    # input slice i lies at output slice i * F: the same world position
    for i in (0, 3, 8):
        np.testing.assert_allclose(source.data_to_world((i, 0, 0)), output.data_to_world((i * 4, 0, 0)))


def test_paging_order_puts_the_chunked_axis_on_the_slider():
    from napari_emsr.plugin.layers import paging_order

    assert paging_order(3, "xz") == paging_order(3, "fuse") == (1, 0, 2)
    assert paging_order(3, "yz") == (2, 0, 1)
    assert paging_order(4, "xz") == (0, 2, 1, 3)


def test_writer_keeps_translation_and_takes_level_0(tmp_path):
    from napari_emsr.io import open_volume
    from napari_emsr.plugin._writer import write_image

    data = (np.random.default_rng(3).random((6, 20, 24)) * 255).astype(np.uint8)
    path = tmp_path / "moved.ome.zarr"
    meta = {"scale": (40.0, 10.0, 10.0), "translate": (80.0, 0.0, 30.0), "metadata": {"unit": "nm"}}
    write_image(str(path), data, meta)
    vol = open_volume(path)
    np.testing.assert_allclose(vol.translation, (80, 0, 30))
    pyramid_meta = {"scale": (40.0, 10.0, 10.0), "multiscale": True}
    write_image(str(tmp_path / "level0.tif"), [data, data[:, ::2, ::2]], pyramid_meta)
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "level0.tif").data), data)
