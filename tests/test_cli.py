import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_emsr.cli import main
from napari_emsr.io import open_volume

TINY = ["--net", "rescnn", "--size", "tiny", "--patch", "24", "--batch", "4", "--device", "cpu", "-q"]


@pytest.fixture
def stack_tif(tmp_path, tiny_stack):
    vol, _ = tiny_stack
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.asarray(vol.data), imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 40.0, "unit": "nm"})
    return p


def test_info_json(stack_tif, capsys):
    assert main(["info", str(stack_tif), "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=_not_json)
    assert out["shape"] == [9, 48, 48] and out["factor"] == 4.0 and out["anisotropy"]["ratio"] > 1
    # 9 sections are too few to fit the section profile: point sampling, said to be a fallback
    assert out["profile"]["thickness"] == out["profile"]["softness"] == 0.0 and not out["profile"]["reliable"]
    # what was not measured is null (strict JSON), not NaN
    assert out["profile"]["distance"] is None and out["profile"]["noise_correlation"] is None


def _not_json(word):
    raise ValueError(f"{word} is not JSON (strict readers such as jq refuse it)")


def test_train_apply_reconstruct(stack_tif, tmp_path, capsys):
    model = tmp_path / "m.emsr.pt"
    assert main(["train", str(stack_tif), "-o", str(model), "--steps", "4", "--json", *TINY]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["steps"] == 4 and res["factor"] == 4.0
    assert res["profile"] == "fitted" and res["profile_fit"]["thickness"] >= 0
    out = tmp_path / "iso.ome.zarr"
    assert main(["apply", str(stack_tif), "--model", str(model), "-o", str(out), "-q", "--device", "cpu"]) == 0
    v = open_volume(out)
    assert v.shape == (33, 48, 48) and v.dtype == np.uint8 and v.spacing == (10.0, 10.0, 10.0)
    capsys.readouterr()
    # the same command again: nothing to do; another result into the existing output -> exit 2, nothing touched
    assert main(["apply", str(stack_tif), "--model", str(model), "-o", str(out), "-q"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["apply", str(stack_tif), "--model", str(model), "-o", str(out), "-q", "--no-deband"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    out2 = tmp_path / "iso.tif"
    assert main(["reconstruct", str(stack_tif), "-o", str(out2), "--steps", "3", *TINY]) == 0
    assert open_volume(out2).shape == (33, 48, 48)
    assert (tmp_path / "iso.emsr.pt").exists()
    out3 = tmp_path / "cubic.tif"
    assert main(["reconstruct", str(stack_tif), "-o", str(out3), "--method", "cubic", "-q"]) == 0
    # a model trained for F = 4 on an F = 8 stack is refused
    f8 = tmp_path / "f8.tif"
    tifffile.imwrite(f8, tifffile.imread(stack_tif), imagej=True, resolution=(0.1, 0.1), metadata={"spacing": 80.0})
    capsys.readouterr()
    assert main(["apply", str(f8), "--model", str(model), "-o", str(tmp_path / "x.tif"), "-q"]) == 2
    assert "factor" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda p: p.write_text("hello"), "not a volume"),
        (lambda p: tifffile.imwrite(p, np.zeros((32, 32), np.uint8)), "2D"),
        (lambda p: tifffile.imwrite(p, np.zeros((4, 32, 32, 3), np.uint8), photometric="rgb"), "RGB"),
    ],
)
def test_bad_input_exit_2(tmp_path, capsys, make, expect):
    p = tmp_path / "bad.tif"
    make(p)
    assert main(["train", str(p), "-o", str(tmp_path / "m.pt"), "--factor", "4", "-q"]) == 2
    err = capsys.readouterr().err
    assert expect.lower() in err.lower() and "Traceback" not in err


def test_missing_factor_and_small_stack(tmp_path, capsys):
    p = tmp_path / "nospacing.tif"
    tifffile.imwrite(p, np.zeros((5, 40, 40), np.uint8))
    assert main(["train", str(p), "-o", str(tmp_path / "m.pt"), "-q"]) == 2
    assert "--factor" in capsys.readouterr().err
    assert main(["train", str(p), "-o", str(tmp_path / "m.pt"), "--factor", "0.5", "-q"]) == 2
    assert "below 1" in capsys.readouterr().err
    tiny = tmp_path / "tiny.tif"
    tifffile.imwrite(tiny, np.zeros((5, 8, 8), np.uint8))
    assert main(["train", str(tiny), "-o", str(tmp_path / "m.pt"), "--factor", "4", "-q"]) == 2
    assert "smaller than one training patch" in capsys.readouterr().err


def test_demo_tiny_and_console_script(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "napari_emsr.cli", "demo", "--steps", "3", "--json", *TINY],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert set(res["scores"]) >= {"linear", "cubic"} and np.isfinite(res["gain_db"])
    h = subprocess.run([sys.executable, "-m", "napari_emsr.cli", "--help"], capture_output=True, text=True)
    assert "emsr demo" in h.stdout and "reconstruct" in h.stdout


def test_a_model_of_another_bit_depth_is_applied_in_the_stacks_own_range(stack_tif, tmp_path, capsys, caplog):
    wide = tmp_path / "wide.tif"
    tifffile.imwrite(wide, tifffile.imread(stack_tif).astype(np.uint16) * 100, imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 40.0, "unit": "nm"})
    model = tmp_path / "m16.emsr.pt"
    assert main(["train", str(wide), "-o", str(model), "--steps", "3", *TINY]) == 0
    capsys.readouterr()
    out = tmp_path / "iso.tif"
    assert main(["apply", str(stack_tif), "--model", str(model), "-o", str(out), "-q", "--device", "cpu"]) == 0
    said = caplog.text  # a warning, printed even with -q (a real process prints it on stderr)
    assert "lie far from the ones the model was trained on (" in said and "scaled by its own range" in said
    result, stack = tifffile.imread(out).astype(np.float32), tifffile.imread(stack_tif).astype(np.float32)
    # in the stack's intensities (was 255 everywhere)
    assert (result == 255).mean() < 0.05 and abs(result.mean() - stack.mean()) < 10
    # training on from it on the 8-bit stack goes on in the stack's own range, and says so
    again = tmp_path / "m8.emsr.pt"
    assert main(["train", str(stack_tif), "-o", str(again), "--resume", str(model), "--steps", "2",
                 *TINY[:-1]]) == 0
    assert "training goes on with the stack scaled by its own range" in capsys.readouterr().err
    from napari_emsr.model import load_model, robust_range

    assert load_model(again).norm == robust_range(open_volume(stack_tif).data, seed=0)
