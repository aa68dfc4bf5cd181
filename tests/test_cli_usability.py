"""What a new user of ``emsr`` meets: an interrupted reconstruct that the same command finishes, write progress
with a total and the time left (bars on a terminal, lines in a log), a demo that says what it does after
training, ``info --factor`` used everywhere, and messages that name the option typed.

Real ``emsr`` processes (killed with real signals) or the real ``main()``; real files, tiny networks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from emsr_helpers import write_tif

from napari_emsr.cli import main
from napari_emsr.io import INCOMPLETE_MARKER, open_volume

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--net", "rescnn", "--size", "tiny", "--patch", "24", "--batch", "4", "--device", "cpu"]


def _env(**more) -> dict:
    import napari_emsr

    src = str(Path(napari_emsr.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", **more}


def _emsr(*argv) -> list[str]:
    return [sys.executable, "-m", "napari_emsr.cli", *map(str, argv)]


@pytest.fixture
def stack(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (9, 48, 48), dtype=np.uint8)
    return write_tif(tmp_path / "x.tif", data)


# ---- 1 and 2: Ctrl-C during the export, the same command again; progress lines in a log ---------------------
def test_ctrl_c_during_the_export_then_the_same_command_finishes_with_the_saved_model(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (16, 256, 768), dtype=np.uint8)
    tif = write_tif(tmp_path / "big.tif", data)
    out = tmp_path / "iso.ome.zarr"
    model = tmp_path / "iso.emsr.pt"
    argv = ["reconstruct", tif, "-o", out, "--steps", "2", *TINY]
    env = _env(EMSR_PROGRESS_EVERY="1")
    proc = subprocess.Popen(_emsr(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while proc.poll() is None and not (out / INCOMPLETE_MARKER).exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the model is saved, the export has begun
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(2.5)  # inside the first chunk: a progress line or two in the log
    assert proc.poll() is None, "the export finished before it could be interrupted: make the volume larger"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "run the same command again to resume it" in err
    assert (out / INCOMPLETE_MARKER).exists() and model.is_file()
    # not a terminal: plain lines with the total, while the first chunk is computed
    lines = [ln for ln in err.splitlines() if ln.startswith("write: ")]
    assert any(re.fullmatch(r"write: 0/\d+ chunks, computing, \d+ s so far, .*", ln) for ln in lines), lines
    assert "\r" not in "".join(lines)
    # the training too: a plain last line, not a bar that writes every redraw into the log
    last = r"^train: 2/2 steps, in \d+ s, loss=\d\.\d{4}(, vs cubic=[+-]\d+\.\d\d dB)?$"
    assert re.search(last, err, re.M), err[-3000:]
    assert "\r" not in err
    saved = model.read_bytes()

    again = subprocess.run(_emsr(*argv), capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"using {model}, the model this command trained in an earlier run" in again.stderr
    assert "no training" in again.stderr
    assert "training isotropic" not in again.stderr and "train:" not in again.stderr  # training did not run
    assert model.read_bytes() == saved
    done = [ln for ln in again.stderr.splitlines() if re.fullmatch(r"write: (\d+)/\1 chunks in \d+ s", ln)]
    assert done, again.stderr[-2000:]
    assert not (out / INCOMPLETE_MARKER).exists()
    assert open_volume(out).shape == (61, 256, 768)
    # complete and right: equal to the same model applied in one go
    whole = tmp_path / "whole.ome.zarr"
    assert main(["apply", str(tif), "--model", str(model), "-o", str(whole), "-q", "--device", "cpu"]) == 0
    np.testing.assert_array_equal(np.asarray(open_volume(out).data), np.asarray(open_volume(whole).data))


def test_a_write_bar_on_a_terminal_has_its_total_and_the_time_left(tmp_path, capsys):
    """The bar a terminal shows: ``n/total chunks`` from the first draw on, and the time left once a chunk is
    written (not ``0chunk [00:00, ?chunk/s]``)."""
    from napari_emsr.cli.progress import Progress
    from napari_emsr.outputs import export_progress
    from napari_emsr.reconstruct import export

    data = np.random.default_rng(2).integers(0, 255, (16, 256, 512), dtype=np.uint8)
    vol = open_volume(write_tif(tmp_path / "s.tif", data))
    out = tmp_path / "o.ome.zarr"
    seen = []

    class Watched(Progress):
        def __call__(self, done, total):
            super().__call__(done, total)
            seen.append((done, total, self.left()))

    with Watched("write", "chunk", tty=True, total=lambda: export_progress(out)) as bar:
        export(vol, "cubic", out, planes="xz", chunks=(40, 512), progress=bar)  # 7 blocks of 1.2 MB
    err = capsys.readouterr().err
    total = seen[-1][1]
    assert seen[0][:2] == (0, total)  # the total before the first block
    seen = seen[1:]
    assert total > 2 and [s[0] for s in seen] == list(range(1, total + 1))
    assert all(t == total for _, t, _ in seen) and all(left is not None for *_, left in seen)
    assert seen[0][2] > 0 and seen[-1][2] == 0  # reckoned from the start, on the full-resolution blocks
    assert f"{total}/{total} chunks" in err and "?chunk/s" not in err
    assert re.search(rf"1/{total} chunks \[.*(about \d+ s left|finishing)", err), err[-500:]


# ---- 3: the demo says what it does after training ---------------------------------------------------------
def test_training_progress_in_a_log_is_a_line_every_few_seconds(capsys):
    from napari_emsr.cli.progress import StepLog, training_bar

    assert isinstance(training_bar("train", 10, False, tty=False), StepLog)
    bar = training_bar("train", 10, False, tty=True)  # a terminal: tqdm's bar
    assert not isinstance(bar, StepLog)
    bar.close()
    capsys.readouterr()
    log = training_bar("train", 10, False, tty=False, every=0.0)
    log.update(4)
    log.set_postfix({"loss": "0.0383", "vs cubic": "+1.84 dB"})
    log.update(1)
    log.set_postfix({"loss": "0.0375", "vs cubic": "+1.84 dB"})  # as tqdm's: what is passed is what shows
    log.update(1)
    log.update(0)  # a second event at the same step: no second line
    log.set_description("train [restore 2/2]")
    log.reset(total=None)  # a new stage: its own count, no figure of the last one
    log.set_postfix({"loss": "0.0290"})
    log.update(3)
    log.close()
    log.close()
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"train: 4/10 steps, \d+ s in, about \d+ s left", lines[0]), lines
    assert re.fullmatch(r"train: 5/10 steps, \d+ s in, about \d+ s left, loss=0\.0383, vs cubic=\+1\.84 dB", lines[1])
    assert re.fullmatch(r"train: 6/10 steps, \d+ s in, about \d+ s left, loss=0\.0375, vs cubic=\+1\.84 dB", lines[2])
    assert re.fullmatch(r"train \[restore 2/2\]: 3 steps, \d+ s in, loss=0\.0290", lines[3])
    assert re.fullmatch(r"train \[restore 2/2\]: 3 steps, in \d+ s, loss=0\.0290", lines[4])
    assert len(lines) == 5  # closed once


def test_each_training_line_shows_the_loss_of_the_step_it_counts(tmp_path, stack):
    r = subprocess.run(_emsr("train", stack, "-o", tmp_path / "m.emsr.pt", "--steps", "3", *TINY),
                       capture_output=True, text=True, timeout=300, env=_env(EMSR_PROGRESS_EVERY="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("train: ")]
    # a line at every step (every 0 s): the first already has its loss (it showed the step before's, none)
    assert [ln.split(",")[0] for ln in lines] == ["train: 1/3 steps", "train: 2/3 steps", "train: 3/3 steps",
                                                 "train: 3/3 steps"], lines
    assert all(re.search(r", loss=\d\.\d{4}", ln) for ln in lines), lines


def test_a_resumed_training_counts_on_from_its_steps_and_refuses_what_it_would_drop(tmp_path, stack):
    first = tmp_path / "m.emsr.pt"
    r = subprocess.run(_emsr("train", stack, "-o", first, "--steps", "3", *TINY), capture_output=True, text=True,
                       timeout=300, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    # another network, size or profile than the model's: refused before any step (they were dropped silently)
    r = subprocess.run(_emsr("train", stack, "-o", tmp_path / "n.emsr.pt", "--resume", first, "--steps", "2",
                             *TINY, "--net", "uformer", "--profile", "slab"), capture_output=True, text=True,
                       timeout=300, env=_env())
    assert r.returncode == 2 and "--net uformer (the model's: rescnn)" in r.stderr, r.stderr[-2000:]
    assert "--profile slab (the model's: fitted)" in r.stderr and not (tmp_path / "n.emsr.pt").exists()
    # --steps more, counted from the model's (it read "train: 4/2 steps")
    r = subprocess.run(_emsr("train", stack, "-o", tmp_path / "n.emsr.pt", "--resume", first, "--steps", "2",
                             "--profile", "auto", "--noise", "auto", *TINY), capture_output=True, text=True,
                       timeout=300, env=_env(EMSR_PROGRESS_EVERY="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 steps more, from step 3" in r.stderr
    lines = [ln.split(",")[0] for ln in r.stderr.splitlines() if ln.startswith("train: ")]
    assert lines[:2] == ["train: 4/5 steps", "train: 5/5 steps"], lines


def test_in_a_log_every_line_after_a_validation_keeps_its_figure(tmp_path, stack):
    r = subprocess.run(_emsr("train", stack, "-o", tmp_path / "m.emsr.pt", "--steps", "6", "--val-every", "3",
                             *TINY), capture_output=True, text=True, timeout=300, env=_env(EMSR_PROGRESS_EVERY="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("train: ")]
    steps = [int(re.match(r"train: (\d+)/6", ln).group(1)) for ln in lines]
    assert steps[:6] == [1, 2, 3, 4, 5, 6], lines
    # the steps between validations (4, 5) show the figure of step 3's
    assert all(("vs cubic=" in ln) == (n >= 3) for n, ln in zip(steps, lines)), lines


def test_on_a_terminal_the_bar_keeps_the_last_validation_figure_between_validations(tmp_path, stack):
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))  # a terminal 150 columns wide
    proc = subprocess.Popen(_emsr("train", stack, "-o", tmp_path / "m.emsr.pt", "--steps", "100", "--val-every", "5",
                                  *TINY), stdout=subprocess.PIPE, stderr=slave, env=_env())
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=300) == 0, out.decode(errors="replace")[-3000:]
    frames = [f for f in out.decode(errors="replace").replace("\n", "\r").split("\r") if "/100 [" in f]
    assert frames and "vs cubic=" in frames[-1], frames  # tqdm's bar, with the figure at the end
    # every redraw after the first validation (step 5) shows the last figure, the redraws between validations too
    # (tqdm redraws about ten times a second, so some fall between)
    counts = [(int(m.group(1)), f) for f in frames if (m := re.search(r" (\d+)/100 \[", f))]
    after = [(n, f) for n, f in counts if n >= 5]
    assert any(n % 5 for n, _ in after), frames
    assert all("vs cubic=" in f for _, f in after), frames


def test_the_demo_says_what_it_does_after_training(tmp_path):
    r = subprocess.run(_emsr("demo", "--steps", "2", "--json", *TINY), capture_output=True, text=True,
                       timeout=300, env=_env(EMSR_PROGRESS_EVERY="1"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(json.loads(r.stdout)["scores"]) >= {"linear", "cubic"}  # stdout stays one JSON object
    after = r.stderr[r.stderr.index("scoring:"):]
    for k, what in enumerate(("linear interpolation", "cubic interpolation", "the trained network"), start=1):
        assert f"[{k}/3] reconstructing" in after and what in after
        assert f"[{k}/3] scoring" in after
    # each reconstruction's progress, with its total of tasks
    assert len(re.findall(r"reconstruct [^:]+: (\d+)/\1 tasks in \d+ s", after)) == 3, after


# ---- 4: info --factor is used everywhere ------------------------------------------------------------------
def test_info_uses_the_given_factor_for_the_anisotropy(tmp_path, tiny_stack, capsys):
    vol, _ = tiny_stack
    plain = write_tif(tmp_path / "plain.tif", np.asarray(vol.data), spacing=None)
    with_size = write_tif(tmp_path / "sized.tif", np.asarray(vol.data), spacing=40.0)
    assert main(["info", str(with_size), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["info", str(plain), "--json", "--factor", "4"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["factor"] == 4.0 and given["factor_from"] == "--factor"
    # the same figure as with the voxel size in the file, not the cubic-voxel one
    assert given["anisotropy"]["ratio"] == pytest.approx(from_file["anisotropy"]["ratio"])
    assert main(["info", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["anisotropy"]["ratio"] < given["anisotropy"]["ratio"]
    assert main(["info", str(plain), "--factor", "4"]) == 0
    human = capsys.readouterr().out
    assert "pass --factor" not in human and "(--factor)" in human and "with F = 4" in human
    # --factor overrides the file's voxel size too
    assert main(["info", str(with_size), "--json", "--factor", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["anisotropy"]["ratio"] > from_file["anisotropy"]["ratio"]


# ---- 5: dask and distributed are pinned together ----------------------------------------------------------
def test_dask_and_distributed_share_one_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    ranges = {}
    for req in reqs:
        m = re.fullmatch(r"(dask|distributed)(\[[^\]]*\])?\s*((?:[<>=!~].*)?)", req)
        if m:
            ranges.setdefault(m.group(1), set()).add(m.group(3).replace(" ", ""))
    assert set(ranges) == {"dask", "distributed"}, ranges
    assert len(ranges["dask"]) == 1 and ranges["dask"] == ranges["distributed"], ranges
    (spec,) = ranges["dask"]
    assert ">=" in spec and "<" in spec.replace("<=", "<"), spec  # a floor and a ceiling: nothing to backtrack


# ---- 6: messages name the option typed ----------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--learning-rate", "--lr"])
@pytest.mark.parametrize("value, words", [("1e308", "at most"), ("-1", "positive"), ("nan", "positive")])
def test_a_bad_learning_rate_is_refused_naming_the_option_typed(stack, tmp_path, capsys, flag, value, words):
    assert main(["train", str(stack), "-o", str(tmp_path / "m.pt"), flag, value, *TINY, "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} " in err and words in err and "Traceback" not in err, err
    other = "--lr " if flag == "--learning-rate" else "--learning-rate"
    assert other not in err, err
    assert not (tmp_path / "m.pt").exists()
