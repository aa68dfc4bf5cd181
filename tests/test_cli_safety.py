"""Nothing already made is lost, nothing silently wrong is written: the command line's data-safety promises.

Each case was found by trying the CLI as a new user would; each must end in our clear message and exit code 2,
with the input and any existing file untouched.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from emsr_helpers import tree_digest as _digest
from emsr_helpers import write_tif as _tif

from napari_emsr import cli
from napari_emsr.io import open_volume, write_volume


@pytest.fixture
def stack(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (9, 48, 48), dtype=np.uint8)
    return _tif(tmp_path / "x.tif", data), data


@pytest.fixture
def model(stack, tmp_path):
    path = tmp_path / "m.emsr.pt"
    assert cli.main(["train", str(stack[0]), "-o", str(path), "--steps", "2", "--size", "tiny", "--patch", "24",
                     "--device", "cpu", "-q"]) == 0
    return path


def _refused(argv, capsys, *words) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def test_the_input_is_never_the_output_whatever_the_flags(stack, tmp_path, capsys):
    src = tmp_path / "a.zarr"
    write_volume(src, stack[1], (40, 10, 10))
    before = _digest(src)
    _refused(["reconstruct", src, "--method", "cubic", "-o", src, "--overwrite", "-q"], capsys, "is the input")
    _refused(["reconstruct", src, "--method", "cubic", "-o", src / "inside.zarr", "--overwrite", "-q"], capsys,
             "is the input")
    assert _digest(src) == before
    np.testing.assert_array_equal(np.asarray(open_volume(src).data), stack[1])


def test_model_files_never_replace_the_input_or_an_existing_file(stack, model, tmp_path, capsys):
    tif, _ = stack
    before = _digest(tif)
    _refused(["train", tif, "-o", tmp_path / "n.pt", "--checkpoint", tif, "--steps", "1", "-q"], capsys, "is the input")
    _refused(["reconstruct", tif, "-o", tmp_path / "o.tif", "--save-model", tif, "--steps", "1", "-q"], capsys,
             "is the input")
    _refused(["apply", tif, "--model", model, "-o", model, "--overwrite", "-q"], capsys, "is the model")
    assert _digest(tif) == before
    # the default model file of `reconstruct` (<output>.emsr.pt) is not replaced silently
    existing = tmp_path / "o.emsr.pt"
    existing.write_bytes(b"somebody's model")
    _refused(["reconstruct", tif, "-o", tmp_path / "o.tif", "--steps", "1", "-q"], capsys, "exists", "emsr apply",
             "--overwrite")
    assert existing.read_bytes() == b"somebody's model" and not (tmp_path / "o.tif").exists()
    # an existing checkpoint: the refusal names the flags of the command given (train has no --save-model)
    err = _refused(["train", tif, "-o", tmp_path / "n.pt", "--checkpoint", existing, "--steps", "1", "-q"], capsys,
                   "the checkpoint", "exists", "(--checkpoint)")
    assert "--save-model" not in err
    err = _refused(["reconstruct", tif, "-o", tmp_path / "o.tif", "--steps", "1", "-q"], capsys, "(--save-model)")
    assert existing.read_bytes() == b"somebody's model"


def test_interpolation_refuses_the_training_flags_it_would_ignore(stack, tmp_path, capsys):
    tif, _ = stack
    out = tmp_path / "c.tif"
    _refused(["reconstruct", tif, "--method", "cubic", "-o", out, "--steps", "5", "--profile", "slab", "-q"], capsys,
             "--method cubic interpolates and trains nothing", "--steps, --profile")
    _refused(["reconstruct", tif, "--method", "cubic", "-o", out, "--save-model", tmp_path / "m.pt", "-q"], capsys,
             "--save-model would do nothing")  # it saved nothing, with exit code 0
    assert not out.exists() and not (tmp_path / "m.pt").exists()
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(out), "-q"]) == 0


def test_a_refusal_with_json_is_json_too_and_train_refuses_an_image_name(stack, tmp_path, capsys):
    tif, _ = stack
    assert cli.main(["apply", str(tif), "--model", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o.tif"),
                     "--json"]) == 2
    said = json.loads(capsys.readouterr().out)  # stdout was empty: a script's json.loads failed
    assert said["exit_code"] == 2 and said["command"] == "apply" and "missing.pt" in said["error"]
    for name in ("m.tif", "m.ome.zarr", "m.png"):
        err = _refused(["train", tif, "-o", tmp_path / name, "--steps", "1", "-q"], capsys, "names an image",
                       "emsr reconstruct")
        assert not (tmp_path / name).exists(), err


def test_nan_input_is_refused_not_written(tmp_path, model, capsys):
    data = np.random.default_rng(1).random((9, 48, 48), dtype=np.float32)
    data[3, 5, 5] = np.nan
    tif = _tif(tmp_path / "nan.tif", data)
    _refused(["reconstruct", tif, "--method", "cubic", "-o", tmp_path / "c.tif", "-q"], capsys, "NaN")
    _refused(["apply", tif, "--model", model, "-o", tmp_path / "m.tif", "-q"], capsys, "NaN")
    assert not (tmp_path / "c.tif").exists() and not (tmp_path / "m.tif").exists()


def test_a_model_that_cannot_give_a_sound_result_is_refused(stack, model, tmp_path, capsys):
    import torch

    from napari_emsr.model import EMSRModel

    m = EMSRModel.load(model)
    broken = m.copy()
    next(iter(broken.state_dict.values())).view(-1)[0] = float("nan")
    broken.save(tmp_path / "nan.pt")
    flat = m.copy()
    flat.config["norm"] = [7.0, 7.0]
    flat.save(tmp_path / "flat.pt")
    torch.save({"format": "napari-emsr-model", "config": "{}", "state_dict": {}}, tmp_path / "empty.pt")
    for bad, word in (("nan.pt", "NaN"), ("flat.pt", "normalisation"), ("empty.pt", "factor")):
        _refused(["apply", stack[0], "--model", tmp_path / bad, "-o", tmp_path / f"{bad}.tif", "-q"], capsys, word)
        assert not (tmp_path / f"{bad}.tif").exists()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["reconstruct", "--method", "cubic", "--axis", "3"], "axis must be 0, 1 or 2"),
        (["reconstruct", "--method", "cubic", "--axis", "-1"], "axis must be 0, 1 or 2"),
        (["train", "--steps", "-5"], "--steps -5"),
        (["train", "--minutes", "nan"], "--minutes nan"),
        (["train", "--size", "huge"], "unknown size 'huge'"),
        (["train", "--patch", "4"], "--patch 4"),
        (["train", "--batch", "0"], "--batch 0"),
        (["train", "--lr", "-1"], "--lr -1"),
        (["train", "--val-every", "0"], "--val-every 0"),
        (["reconstruct", "--fuse", "xy"], "--fuse takes"),
    ],
)
def test_options_that_cannot_work_are_refused_before_anything_runs(stack, tmp_path, capsys, extra, words):
    command, *rest = extra
    out = tmp_path / ("m.pt" if command == "train" else "o.tif")
    _refused([command, stack[0], "-o", out, *rest, "-q"], capsys, words)
    assert not out.exists() and not (tmp_path / "o.emsr.pt").exists()  # refused before training or writing


def test_an_output_that_cannot_be_written_is_refused_before_training(stack, tmp_path, capsys):
    _refused(["reconstruct", stack[0], "-o", tmp_path / "out.png", "--steps", "1", "-q"], capsys, "must end in .tif")
    assert not (tmp_path / "out.emsr.pt").exists()


def test_info_and_apply_refuse_impossible_numbers(stack, model, tmp_path, capsys):
    _refused(["info", stack[0], "--axis", "5", "--fast"], capsys, "axis must be 0, 1 or 2")
    _refused(["apply", stack[0], "--model", model, "-o", tmp_path / "o.tif", "--factor", "nan", "-q"], capsys,
             "not a finite number")


def test_a_resumed_export_refuses_another_method_or_input(stack, tmp_path, capsys):
    """Interrupt a cubic zarr export; re-running with --method linear, or on another stack of the same shape,
    must not finish it into a half-and-half volume. The same command resumes it."""
    from napari_emsr.reconstruct import export

    tif, data = stack
    out = tmp_path / "iso.ome.zarr"

    def interrupt(done, total):
        if done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(open_volume(tif), "cubic", out, planes="xz", chunks=(8, 48), progress=interrupt)
    _refused(["reconstruct", tif, "--method", "linear", "--fuse", "xz", "-o", out, "-q"], capsys,
             "method", "'cubic'", "'linear'", "--overwrite")
    other = _tif(tmp_path / "other.tif", data[::-1].copy())
    _refused(["reconstruct", other, "--method", "cubic", "--fuse", "xz", "-o", out, "-q"], capsys, "input")
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "--fuse", "xz", "-o", str(out), "-q"]) == 0
    whole = tmp_path / "whole.ome.zarr"
    export(open_volume(tif), "cubic", whole, planes="xz", chunks=(8, 48))
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), np.asarray(open_volume(whole).data))


def test_the_reported_spacing_is_the_one_written_when_the_anisotropic_axis_is_last(tmp_path, capsys):
    import json

    data = np.random.default_rng(2).integers(0, 255, (48, 48, 9), dtype=np.uint8)
    src = tmp_path / "ax2.ome.zarr"
    write_volume(src, data, (10.0, 10.0, 40.0))
    out = tmp_path / "iso.ome.zarr"
    assert cli.main(["reconstruct", str(src), "--method", "cubic", "--axis", "2", "--fuse", "xz", "-o", str(out),
                     "--json", "-q"]) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["spacing"]
    written = open_volume(out)
    assert tuple(reported) == tuple(written.spacing) == (10.0, 10.0, 10.0)
    assert written.shape == (48, 48, 33)


def test_ctrl_c_during_the_write_stops_at_once_and_the_same_command_resumes(tmp_path):
    """SIGINT while an export is being written: exit 130 within seconds (not after the running chunks), the
    store marked unfinished; the same command then completes it, equal to an uninterrupted export."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from napari_emsr.io import INCOMPLETE_MARKER
    from napari_emsr.reconstruct import export

    data = np.random.default_rng(4).integers(0, 255, (24, 768, 512), dtype=np.uint8)
    tif = _tif(tmp_path / "big.tif", data)
    out = tmp_path / "iso.ome.zarr"
    cmd = [sys.executable, "-m", "napari_emsr.cli", "reconstruct", str(tif), "--method", "cubic", "--fuse", "xz",
           "-o", str(out), "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # until the first block is on disk
        try:
            if json.loads((out / INCOMPLETE_MARKER).read_text()).get("done"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the export finished before it could be interrupted: make the volume larger"
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    rc = proc.wait(timeout=60)
    assert rc == 130 and time.monotonic() - t0 < 10
    assert "incomplete" in proc.stderr.read() and (out / INCOMPLETE_MARKER).exists()
    with pytest.raises(Exception, match="unfinished export"):
        open_volume(out)
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    whole = export(open_volume(tif), "cubic", tmp_path / "whole.ome.zarr", planes="xz")
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), np.asarray(open_volume(whole).data))


def test_ctrl_c_while_a_tiff_is_written_again_keeps_the_old_file_and_says_so(tmp_path):
    """A TIFF is written under a temporary name: Ctrl-C while it replaces an existing one (--overwrite) leaves the
    old file as it was, and the message says so (it called the intact file incomplete); no lock is left behind."""
    import hashlib
    import signal
    import subprocess
    import sys
    import time

    data = np.random.default_rng(6).integers(0, 255, (48, 768, 512), dtype=np.uint8)
    tif = _tif(tmp_path / "big.tif", data)
    out = tmp_path / "iso.tif"
    cmd = [sys.executable, "-m", "napari_emsr.cli", "reconstruct", str(tif), "--method", "cubic", "--fuse", "xz",
           "-o", str(out), "-q"]
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    proc = subprocess.Popen([*cmd, "--overwrite"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not any(
            "emsr-partial" in p.name for p in tmp_path.iterdir()):  # the new file is being written
        time.sleep(0.02)
    assert proc.poll() is None, "the export finished before it could be interrupted: make the volume larger"
    proc.send_signal(signal.SIGINT)
    if proc.wait(timeout=60) == 0:
        pytest.skip("the write finished before it could be interrupted")
    assert proc.returncode == 130
    err = proc.stderr.read()
    assert "nothing was written to" in err and "the file already there is kept as it was" in err, err[-2000:]
    assert "incomplete" not in err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "iso.tif"]  # no partial file, no lock


def test_ctrl_c_does_not_wait_for_a_slow_network_chunk(tmp_path):
    """With a network, one fused chunk takes many seconds on a CPU; the exit must not wait for it."""
    import signal
    import subprocess
    import sys
    import time

    from napari_emsr.io import INCOMPLETE_MARKER

    data = np.random.default_rng(5).integers(0, 255, (12, 384, 384), dtype=np.uint8)
    tif = _tif(tmp_path / "s.tif", data)
    model = tmp_path / "m.emsr.pt"
    assert cli.main(["train", str(tif), "-o", str(model), "--steps", "1", "--device", "cpu", "-q"]) == 0
    out = tmp_path / "iso.ome.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "napari_emsr.cli", "apply", str(tif), "--model", str(model),
                             "-o", str(out), "--device", "cpu", "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / INCOMPLETE_MARKER).exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # the first chunk is being computed
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    assert proc.wait(timeout=120) == 130
    assert time.monotonic() - t0 < 5, f"exit took {time.monotonic() - t0:.1f} s after Ctrl-C"
    assert (out / INCOMPLETE_MARKER).exists()


def test_a_missing_output_folder_is_not_created_silently(stack, tmp_path, capsys):
    _refused(["train", stack[0], "-o", tmp_path / "typo" / "m.pt", "--steps", "1", "-q"], capsys, "does not exist")
    _refused(["reconstruct", stack[0], "--method", "cubic", "-o", tmp_path / "typo" / "o.tif", "-q"], capsys,
             "does not exist")
    assert not (tmp_path / "typo").exists()


def test_an_export_killed_at_random_moments_ends_equal_to_an_uninterrupted_one(tmp_path):
    """SIGKILL (no clean-up at all) at seeded random moments, then the same command again, until it completes:
    the result is equal, bit for bit, to an export that ran through, and no interrupted state opens as finished."""
    import signal
    import subprocess
    import sys

    from napari_emsr.io import INCOMPLETE_MARKER, never_started
    from napari_emsr.reconstruct import export

    data = np.random.default_rng(6).integers(0, 255, (32, 768, 768), dtype=np.uint8)
    tif = _tif(tmp_path / "k.tif", data)
    out = tmp_path / "k.ome.zarr"
    cmd = [sys.executable, "-m", "napari_emsr.cli", "reconstruct", str(tif), "--method", "cubic", "--fuse", "xz",
           "-o", str(out), "-q"]
    rng = np.random.default_rng(7)
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=float(rng.uniform(0.8, 2.2)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if out.exists() and (out / INCOMPLETE_MARKER).exists():
                with pytest.raises(Exception, match="unfinished"):
                    open_volume(out)
            elif out.exists() and not never_started(out):
                # killed after the last block and the marker's removal, before the process exited: the export is
                # finished (the same command now says there is nothing to do), so compare it
                assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
                break
            continue
        assert proc.returncode == 0
        break
    else:
        assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert kills >= 1, "no run was interrupted: make the volume larger"
    assert not (out / INCOMPLETE_MARKER).exists()
    whole = export(open_volume(tif), "cubic", tmp_path / "whole.ome.zarr", planes="xz")
    got, ref = open_volume(out), open_volume(whole)
    assert len(got.levels) == len(ref.levels)
    for a, b in zip(got.levels, ref.levels):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_export_killed_before_its_marker_was_in_place_runs_again(tmp_path):
    """A SIGKILL between creating the zarr folder and renaming its marker into place leaves an empty folder (or one
    with only the marker's temporary file): the same command then runs, it does not ask for --overwrite."""
    from napari_emsr.io import INCOMPLETE_MARKER

    data = np.random.default_rng(3).integers(0, 255, (5, 24, 24), dtype=np.uint8)
    tif = _tif(tmp_path / "s.tif", data)
    for leftover in (None, INCOMPLETE_MARKER + ".tmp"):
        out = tmp_path / f"s{leftover is None}.ome.zarr"
        out.mkdir()
        if leftover:
            (out / leftover).write_text("{")
        assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(out), "-q"]) == 0
        assert open_volume(out).shape[0] == 17 and not (out / leftover if leftover else out / "x").exists()
    # a folder with anything else in it is still someone's: refused without --overwrite
    other = tmp_path / "other.ome.zarr"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(other), "-q"]) == 2
    assert (other / "notes.txt").read_text() == "mine"


def test_the_same_export_again_has_nothing_to_do_and_another_is_refused(tmp_path, capsys):
    """Re-running a finished zarr export's command writes nothing and exits 0; another command with the same
    output (other planes, another input) is refused, saying what differs; a finished TIFF still asks for
    --overwrite (it names nothing that produced it)."""
    data = np.random.default_rng(5).integers(0, 255, (5, 24, 24), dtype=np.uint8)
    tif = _tif(tmp_path / "s.tif", data)
    out = tmp_path / "s.ome.zarr"
    cmd = ["reconstruct", str(tif), "--method", "cubic", "--fuse", "xz", "-o", str(out), "-q"]
    assert cli.main(cmd) == 0
    stamps = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
    capsys.readouterr()
    assert cli.main(cmd) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli.main(["apply", str(tif), "--model", "cubic", "--fuse", "xz", "-o", str(out), "-q"]) == 0
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == stamps
    _refused(["reconstruct", str(tif), "--method", "cubic", "--fuse", "yz", "-o", str(out), "-q"], capsys,
             "something else", "planes")
    other = _tif(tmp_path / "t.tif", data[::-1].copy())
    _refused(["apply", str(other), "--model", "cubic", "--fuse", "xz", "-o", str(out), "-q"], capsys, "input")
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == stamps
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "--fuse", "yz", "-o", str(out), "--overwrite",
                     "-q"]) == 0
    tout = tmp_path / "s_out.tif"
    assert cli.main(["reconstruct", str(tif), "--method", "cubic", "-o", str(tout), "-q"]) == 0
    _refused(["reconstruct", str(tif), "--method", "cubic", "-o", str(tout), "-q"], capsys, "--overwrite")


def test_applying_the_same_model_again_has_nothing_to_do(stack, model, tmp_path, capsys):
    """The same model on the same input into the same finished export: nothing to do; the same model with
    debanding off, or another model, is another result and is refused."""
    out = tmp_path / "m.ome.zarr"
    cmd = ["apply", str(stack[0]), "--model", str(model), "-o", str(out), "--device", "cpu", "-q"]
    assert cli.main([str(a) for a in cmd]) == 0
    capsys.readouterr()
    assert cli.main([str(a) for a in cmd]) == 0
    assert "nothing to do" in capsys.readouterr().out
    _refused([*cmd, "--no-deband"], capsys, "something else", "deband")
    other = tmp_path / "n.emsr.pt"
    assert cli.main(["train", str(stack[0]), "-o", str(other), "--steps", "3", "--size", "tiny", "--patch", "24",
                     "--device", "cpu", "-q", "--seed", "1"]) == 0
    _refused(["apply", stack[0], "--model", other, "-o", out, "--device", "cpu", "-q"], capsys, "model")
