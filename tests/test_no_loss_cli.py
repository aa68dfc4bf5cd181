"""Issue 20, the command line's part: nothing lost, whatever runs beside it.

Every output of a command (the volume, the model file, a checkpoint, the uncertainty map) is checked and locked at
the command's start, so a second ``emsr`` writing it is refused (exit 2, naming the first) and a folder that cannot
take it is refused before any training; a model file is written through a unique temporary name; a save that fails
after training keeps the model and says where; a model whose normalisation is nonsense, or whose config is nested
to crash a parser, is refused; and the options listed in the issue end in a message, not a traceback.

Real processes, real kills, real read-only and full file systems (a private tmpfs, as root).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from emsr_helpers import private_tmpfs_works as _private_tmpfs_works
from emsr_helpers import write_tif as _tif

from napari_emsr import cli

TINY = ["--size", "tiny", "--patch", "24", "--device", "cpu", "-q"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stack(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (9, 48, 48), dtype=np.uint8)
    return _tif(tmp_path / "x.tif", data)


@pytest.fixture
def model(stack, tmp_path):
    path = tmp_path / "m.emsr.pt"
    assert cli.main(["train", str(stack), "-o", str(path), "--steps", "2", *TINY]) == 0
    return path


def _env() -> dict:
    """This interpreter's environment, with the package under test first on the path (as the test process has it)."""
    import napari_emsr

    src = str(Path(napari_emsr.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _emsr(*argv, prefix: list[str] | None = None, **kw) -> list[str]:
    return [*(prefix or []), sys.executable, "-c", "from napari_emsr.cli import main; raise SystemExit(main())",
            *map(str, argv)]


def _run(*argv, prefix=None, timeout=180, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(_emsr(*argv, prefix=prefix), capture_output=True, text=True, timeout=timeout,
                          env=env or _env())


def _refused(argv, capsys, *words) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


# ---- 2. two writers of one model file ------------------------------------------------------------------------


def test_two_trainings_into_one_model_file_one_is_refused_naming_the_other(stack, tmp_path):
    out = tmp_path / "m.pt"
    argv = ["train", stack, "-o", out, "--steps", "60", "--val-every", "1000", *TINY]
    procs = [subprocess.Popen(_emsr(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    winner = next(r for r in results if r[0] == 0)
    assert "being written by another process" in loser[2] and "Traceback" not in loser[2], loser
    assert "saved" in winner[1] and "saved" not in loser[1]
    from napari_emsr.model import EMSRModel

    assert EMSRModel.load(out).step == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "x.tif"]  # no lock or temporary file is left


def test_a_model_file_being_written_is_refused_before_training(stack, tmp_path):
    from napari_emsr.io.safety import output_lock

    out = tmp_path / "m.pt"
    with output_lock(out, what="model file"):  # this process writes it
        t0 = time.perf_counter()
        proc = _run("reconstruct", stack, "-o", tmp_path / "o.tif", "--save-model", out, "--steps", "3000", *TINY)
        took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    assert f"process {os.getpid()}" in proc.stderr and "Traceback" not in proc.stderr
    assert took < 60  # refused at the start, not after 3000 steps
    assert not out.exists() and not (tmp_path / "o.tif").exists()


def test_a_users_file_with_the_old_temporary_name_is_never_touched(stack, tmp_path):
    out = tmp_path / "m.pt"
    mine = tmp_path / "m.pt.partial"
    mine.write_bytes(b"a file of mine")
    assert cli.main(["train", str(stack), "-o", str(out), "--steps", "2", *TINY]) == 0
    assert mine.read_bytes() == b"a file of mine"
    from napari_emsr.model import EMSRModel

    assert EMSRModel.load(out).step == 2
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not private to its writer


# ---- 6. where the model goes, checked before training ---------------------------------------------------------


@pytest.mark.parametrize("flag", ["train -o", "--save-model", "--checkpoint"])
def test_a_folder_given_as_model_path_is_refused_before_training(stack, tmp_path, capsys, flag):
    folder = tmp_path / "d.pt"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    if flag == "train -o":
        argv = ["train", stack, "-o", folder]
    elif flag == "--save-model":
        argv = ["reconstruct", stack, "-o", tmp_path / "o.tif", "--save-model", folder]
    else:
        argv = ["train", stack, "-o", tmp_path / "m.pt", "--checkpoint", folder]
    t0 = time.perf_counter()
    _refused([*argv, "--overwrite", "--steps", "2000", *TINY], capsys, str(folder), "is a folder")
    assert time.perf_counter() - t0 < 30  # refused before 2000 steps of training
    assert (folder / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "m.pt").exists()


_READ_ONLY = "mount -t tmpfs -o ro,size=4m tmpfs '{disk}' && exec \"$@\""


def test_a_read_only_model_folder_is_refused_before_training(stack, tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    if not _private_tmpfs_works(disk):
        pytest.skip("needs root and `unshare -m` to mount a read-only tmpfs privately (as root, permission bits "
                    "do not stop writes)")
    prefix = ["unshare", "-m", "sh", "-c", _READ_ONLY.format(disk=disk), "-"]
    t0 = time.perf_counter()
    proc = _run("train", stack, "-o", disk / "m.pt", "--steps", "3000", *TINY, prefix=prefix)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"cannot write into the folder {disk}" in proc.stderr and "Traceback" not in proc.stderr
    assert time.perf_counter() - t0 < 60  # not after 3000 steps
    # reconstruct's model file (and a checkpoint) too, before anything is trained or written
    proc = _run("reconstruct", stack, "-o", tmp_path / "o.tif", "--save-model", disk / "m.pt", "--steps", "3000",
                *TINY, prefix=prefix)
    assert proc.returncode == 2 and f"cannot write into the folder {disk}" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "o.tif").exists()


def test_uncertainty_into_a_read_only_folder_is_refused_before_the_output_is_written(stack, model, tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    if not _private_tmpfs_works(disk):
        pytest.skip("needs root and `unshare -m` to mount a read-only tmpfs privately")
    prefix = ["unshare", "-m", "sh", "-c", _READ_ONLY.format(disk=disk), "-"]
    out = tmp_path / "o.tif"
    proc = _run("apply", stack, "--model", model, "-o", out, "--uncertainty", disk / "u.tif", "-q", prefix=prefix)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"cannot write into the folder {disk}" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()  # nothing was written: the uncertainty map's folder was checked first


_FILL_DURING_TRAINING = """
    import os, subprocess, sys, threading, time, json
    from pathlib import Path

    disk, stack, rescue = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    cmd = [sys.executable, "-c", "from napari_emsr.cli import main; raise SystemExit(main())", "train", stack,
           "-o", str(disk / "m.pt"), "--steps", "400", "--val-every", "1000", *sys.argv[4:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": rescue})
    lines, started = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("training"):  # checked, locked, and training: now the disk fills up
                started.set()
        started.set()

    reader = threading.Thread(target=read)
    reader.start()
    started.wait(240)
    filled = False
    if proc.poll() is None:
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            filled = True
        os.close(fd)
    out = proc.stdout.read()
    proc.wait(300)
    reader.join()
    err = "".join(lines)
    print(json.dumps({"rc": proc.returncode, "err": err[-3000:], "out": out, "filled": filled,
                      "files": sorted(p.name for p in disk.iterdir())}))
"""


def test_a_model_that_cannot_be_saved_after_training_is_kept_and_its_place_said(stack, tmp_path):
    import json

    disk = tmp_path / "disk"
    disk.mkdir()
    rescue = tmp_path / "rescue"
    rescue.mkdir()
    if not _private_tmpfs_works(disk):
        pytest.skip("needs root and `unshare -m` to mount a small tmpfs privately")
    mount = f"mount -t tmpfs -o size=4m tmpfs '{disk}' && exec \"$@\""
    proc = subprocess.run(["unshare", "-m", "sh", "-c", mount, "-", sys.executable, "-c",
                           textwrap.dedent(_FILL_DURING_TRAINING), str(disk), str(stack), str(rescue), *TINY[:-1]],
                          capture_output=True, text=True, timeout=400, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["filled"], got
    assert got["rc"] == 2, got
    assert "Traceback" not in got["err"] and "disk is full" in got["err"], got
    kept = list(rescue.glob("*.emsr.pt"))
    assert len(kept) == 1 and str(kept[0]) in got["err"], (got, kept)
    from napari_emsr.model import EMSRModel

    assert EMSRModel.load(kept[0]).step == 400  # the whole training, not lost
    assert [f for f in got["files"] if "partial" in f] == []  # no temporary file left on the full disk


# ---- 9. a model's normalisation, and a config nested to crash the parser ------------------------------------


@pytest.mark.parametrize("norm", [[0.0, 1e308], [-1e300, 255.0], [0.0, float("inf")], [5.0, 5.0]])
def test_a_nonsense_normalisation_is_refused_naming_the_file(stack, model, tmp_path, capsys, norm):
    from napari_emsr.model import EMSRModel

    m = EMSRModel.load(model)
    m.config["norm"] = norm
    bad = m.save(tmp_path / "bad.pt")
    out = tmp_path / "o.tif"
    _refused(["apply", stack, "--model", bad, "-o", out, "-q"], capsys, str(bad), "normalisation")
    assert not out.exists()


def test_a_float_model_with_a_huge_normalisation_is_refused(tmp_path):
    from napari_emsr.errors import ModelError
    from napari_emsr.model import EMSRModel, norm_problem

    assert norm_problem(0.0, 1.0, "float32") is None and norm_problem(-5e3, 7e4, "uint16") is None
    assert norm_problem(0, 1e31, "float32") is not None and norm_problem(0.0, 1e7, "uint8") is not None
    m = EMSRModel({"norm": [0.0, 1e35], "dtype": "float32", "factor": 4.0, "order": 3, "net": "rescnn"}, {})
    m.save(tmp_path / "f.pt")
    with pytest.raises(ModelError, match="f.pt"):
        EMSRModel.load(tmp_path / "f.pt")


def test_a_config_nested_200000_levels_is_a_damaged_model_not_a_traceback(stack, tmp_path, capsys):
    import torch

    deep = tmp_path / "deep.pt"
    torch.save({"format": "napari-emsr-model", "config": "[" * 200_000 + "]" * 200_000, "state_dict": {}}, deep)
    _refused(["apply", stack, "--model", deep, "-o", tmp_path / "o.tif", "-q"], capsys, str(deep), "damaged")
    assert not (tmp_path / "o.tif").exists()


# ---- tracebacks where a message was promised -------------------------------------------------------------------


@pytest.mark.parametrize("extra, words", [
    (["--seed", "-1"], "--seed -1"),
    (["--seed", "99999999999999999999999"], "--seed 99999999999999999999999"),
    (["--lr", "1e308"], "--lr 1e+308"),
    (["--learning-rate", "1e308"], "1e+308"),
])
def test_numbers_that_cannot_work_are_refused(stack, tmp_path, capsys, extra, words):
    out = tmp_path / "m.pt"
    _refused(["train", stack, "-o", out, "--steps", "2", *TINY, *extra], capsys, words)
    assert not out.exists()


def test_a_batch_that_cannot_fit_in_memory_is_refused_with_one_that_fits(stack, tmp_path):
    import resource

    def limit():  # an 8 GB address space: the old code's allocation fails at once instead of swapping for minutes
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    out = tmp_path / "m.pt"
    proc = subprocess.run(_emsr("train", stack, "-o", out, "--steps", "2", "--batch", "100000", *TINY),
                          capture_output=True, text=True, timeout=300, env=_env(), preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "--batch 100000" in proc.stderr and "memory" in proc.stderr
    suggested = int(proc.stderr.split("e.g. --batch ")[1].split()[0])
    assert 1 <= suggested < 100000
    assert not out.exists()


@pytest.fixture
def paired_model(tmp_path):
    hr = _tif(tmp_path / "hr.tif", np.random.default_rng(3).integers(0, 255, (4, 64, 64), dtype=np.uint8))
    path = tmp_path / "pair.emsr.pt"
    assert cli.main(["train", str(hr), "--method", "paired", "--factor", "2", "-o", str(path), "--steps", "2",
                     "--net", "rescnn", "--size", "tiny", "--patch", "32", "--batch", "2", "-q"]) == 0
    return hr, path


@pytest.mark.parametrize("flag", [["--factor", "3"], ["--fuse", "xz"], ["--fuse", "xz,yz"]])
def test_a_paired_model_refuses_factor_and_fuse(paired_model, tmp_path, capsys, flag):
    hr, path = paired_model
    out = tmp_path / "o.tif"
    _refused(["apply", hr, "--model", path, "-o", out, *flag, "-q"], capsys, flag[0], "paired")
    assert not out.exists()


# ---- issue 22: the same command again after an interrupted export ----------------------------------------


def test_the_same_reconstruct_again_writes_with_the_model_it_saved(stack, tmp_path):
    out = tmp_path / "o.ome.zarr"
    argv = ["reconstruct", stack, "-o", out, "--steps", "300", "--val-every", "1000", *TINY[:-1]]
    proc = subprocess.Popen(_emsr(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    model = tmp_path / "o.emsr.pt"
    t0 = time.time()
    while proc.poll() is None and not out.exists() and time.time() - t0 < 240:  # the model is saved, the export began
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the export finished before it could be interrupted")
    assert proc.returncode == 130, err[-3000:]
    assert model.exists()
    from napari_emsr.model import EMSRModel

    saved = EMSRModel.load(model)
    again = _run(*argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "no training" in again.stderr, again.stderr[-2000:]
    assert EMSRModel.load(model).fingerprint() == saved.fingerprint()  # used, not trained again
    from napari_emsr.io import open_volume

    assert open_volume(out).shape == (33, 48, 48)
    # another setting is still refused: the model is not this command's
    other = _run(*argv, "--seed", "1", "-q")
    assert other.returncode == 2 and "exists" in other.stderr, other.stderr[-2000:]


def test_series_picks_the_image_of_a_multi_series_tiff_and_a_long_output_name_is_refused(tmp_path, capsys):
    """--series N reads that series (the default is the largest 3D one); a missing one is refused listing the series;
    an output name longer than file systems allow is refused before anything is read or computed."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (8, 24, 24), dtype=np.uint8)
    src = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(src, ome=True) as w:
        w.write(np.full((6, 16, 16), 7, np.uint8))
        w.write(big)
    outs = {}
    for name, extra in (("default", []), ("one", ["--series", "1"]), ("zero", ["--series", "0"])):
        outs[name] = tmp_path / f"{name}.tif"
        assert cli.main(["reconstruct", str(src), "--method", "linear", "--factor", "2", "-o", str(outs[name]), "-q",
                         *extra]) == 0
    default, one, zero = (tifffile.imread(outs[k]) for k in ("default", "one", "zero"))
    np.testing.assert_array_equal(default, one)
    assert default.shape[1:] == (24, 24) and zero.shape[1:] == (16, 16) and (zero == 7).all()
    capsys.readouterr()
    assert cli.main(["info", str(src), "--series", "5"]) == 2
    err = capsys.readouterr().err
    assert "series 5 does not exist" in err and "8 x 24 x 24" in err and "Traceback" not in err
    long = tmp_path / ("a" * 300 + ".tif")
    assert cli.main(["reconstruct", str(src), "--method", "linear", "--factor", "2", "-o", str(long), "-q"]) == 2
    err = capsys.readouterr().err
    assert "at most 255" in err and "Traceback" not in err


def test_a_model_whose_dtype_is_any_text_is_judged_without_crashing():
    """Found by benchmarks/bench_fuzz.py --seed 4: a model config's dtype is parsed by numpy, which raises ValueError
    (not TypeError) for a text that is not a dtype; the normalisation is still judged."""
    from napari_emsr.model import norm_problem

    assert "beyond" in norm_problem(0, 1e308, "{'': [], 'x': {}}")
    assert norm_problem(0, 255, "not a dtype (") is None
    assert norm_problem(0, 255, "uint8") is None
