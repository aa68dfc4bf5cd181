"""The ``emsr`` executable's exit status when Ctrl-C comes after its command has finished.

The interpreter's shutdown joins worker threads (dask's, torch's); a Ctrl-C there used to end a finished export
with a traceback and a killed-by-signal status (-2), which a batch script reads as a failure. A real process, a
real SIGINT after the command returned.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from emsr_helpers import write_tif

SCRIPT = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a job started with & ignores it)
from napari_emsr.cli import {fn}
code = {fn}(["info", sys.argv[1]])
os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, after the command finished
time.sleep(0.5)
raise SystemExit(code)
"""


def _run(fn: str, path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(fn=fn), str(path)], capture_output=True, text=True,
                          timeout=120)


def test_ctrl_c_after_the_command_finished_keeps_its_exit_code(tmp_path):
    stack = write_tif(tmp_path / "x.tif", np.random.default_rng(0).integers(0, 255, (9, 32, 32), dtype=np.uint8))
    done = _run("entry", stack)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "x.tif" in done.stdout  # the command's own summary was printed
    # the same Ctrl-C without the executable's guard is what users got: killed by the signal
    bare = _run("main", stack)
    assert bare.returncode != 0


def test_the_console_script_is_the_guarded_entry():
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["emsr"] == "napari_emsr.cli:entry"
