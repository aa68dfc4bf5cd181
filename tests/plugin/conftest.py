"""Viewer tests: a checked OpenGL display (a private Xvfb when the given one does not work)."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# napari saves its preferences whenever they change, and napari's make_napari_viewer resets them before each
# viewer test: the viewer tests get a settings file of their own, so that a test run never rewrites the
# user's napari preferences (napari reads NAPARI_CONFIG when napari.settings is first imported).
if "NAPARI_CONFIG" not in os.environ and "napari.settings" not in sys.modules:
    _SETTINGS_DIR = tempfile.mkdtemp(prefix="napari-emsr-tests-")
    atexit.register(shutil.rmtree, _SETTINGS_DIR, True)
    os.environ["NAPARI_CONFIG"] = str(Path(_SETTINGS_DIR) / "settings.yaml")

# napari draws every layer with OpenGL as soon as it is added, so viewer tests need a display whose
# OpenGL works (Xvfb + Mesa here). When it does not, every viewer test fails with the same obscure
# "'NoneType' object has no attribute 'decode'" and leaks its viewer into the next ones. So before
# the first viewer test we check OpenGL in a child process, start a private Xvfb when the display we
# were given is missing or broken, and otherwise fail the viewer tests with one message that says why.
_GL_PROBE = r"""
import sys
from qtpy import API_NAME
from qtpy.QtWidgets import QApplication
app = QApplication.instance() or QApplication(sys.argv[:1])
from vispy import app as vapp
from vispy.gloo import gl
vapp.use_app(API_NAME.lower())
gl.use_gl("gl+")  # the OpenGL binding napari uses
canvas = vapp.Canvas(show=False)
try:
    version = gl.glGetParameter(gl.GL_VERSION)
    renderer = gl.glGetParameter(gl.GL_RENDERER)
finally:
    canvas.close()
print(f"{version} | {renderer}")
"""
_GL_PROBLEM: str | None = None


def _probe_gl(env: dict[str, str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _GL_PROBE],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return False, "the OpenGL check did not finish in 120 s"
    if done.returncode == 0 and done.stdout.strip():
        return True, done.stdout.strip().splitlines()[-1]
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return False, " / ".join(tail) or f"exit code {done.returncode}"


def _start_private_xvfb(exe: str, number: int | None) -> tuple[subprocess.Popen | None, str]:
    """Start Xvfb on display `number` (None: the first free one, picked by Xvfb itself); return it and ':N'."""
    read, write = os.pipe()
    args = [exe] + ([f":{number}"] if number is not None else [])
    args += [
        "-displayfd",
        str(write),
        "-screen",
        "0",
        "1600x1200x24",
        "-nolisten",
        "tcp",
        "+extension",
        "GLX",
    ]
    proc = subprocess.Popen(args, pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write)
    ready = b""
    deadline = time.monotonic() + 30
    with os.fdopen(read, "rb") as pipe:  # Xvfb writes its display number here once it accepts clients
        while time.monotonic() < deadline and not ready.endswith(b"\n"):
            chunk = pipe.read(1)
            if not chunk:
                break
            ready += chunk
    if not ready.strip():
        proc.kill()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()[-2:] if proc.stderr else []
        return None, "a private Xvfb did not start: " + " / ".join(err)
    return proc, f":{ready.decode().strip()}"


def _ensure_gl_display(config) -> None:
    global _GL_PROBLEM
    env = dict(os.environ)
    ok, info = _probe_gl(env)
    if not ok and env.get("DISPLAY"):
        time.sleep(1.0)  # a server that has only just started: one more try before replacing it
        ok, info = _probe_gl(env)
    if ok:
        return
    first = f"DISPLAY={env.get('DISPLAY', '(unset)')}: {info}"
    exe = shutil.which("Xvfb")
    why = "Xvfb is not installed (apt-get install xvfb)"
    # The first free display, then two random ones (a server elsewhere may hold a number's socket).
    for number in (None, 200 + os.getpid() % 500, 700 + int(time.time()) % 290) if exe else ():
        proc, display = _start_private_xvfb(exe, number)
        if proc is None:
            why = display
            continue
        env.update(DISPLAY=display)
        env.pop("XAUTHORITY", None)
        env.pop("WAYLAND_DISPLAY", None)
        ok, info = _probe_gl(env)
        if ok:
            atexit.register(proc.terminate)
            os.environ.update(DISPLAY=display)
            os.environ.pop("XAUTHORITY", None)
            os.environ.pop("WAYLAND_DISPLAY", None)
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"OpenGL failed on the given display ({first}); using a private Xvfb {display}"
                )
            return
        proc.terminate()
        why = f"a private Xvfb {display} has no working OpenGL either: {info}"
    _GL_PROBLEM = (
        f"no working OpenGL for the napari viewer tests ({first}; {why}). Run the tests under an X server "
        "with Mesa: apt-get install xvfb libgl1 libglx-mesa0 libegl1, then xvfb-run -a python -m pytest"
    )


def _x_server_alive(display: str) -> bool:
    """Whether the local X server of DISPLAY=':N' still accepts connections (a few ms)."""
    number = display.rpartition(":")[2].split(".")[0]
    if not display.startswith(":") or not number.isdigit():
        return True  # a remote or unusual display: nothing cheap to check
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2.0)
        try:
            s.connect(f"/tmp/.X11-unix/X{number}")
        except OSError:
            return False
    return True


@pytest.fixture(autouse=True)
def _viewer_tests_need_opengl(request):
    """Fail a viewer test with the reason when OpenGL is missing or the X server died during the run."""
    if request.node.get_closest_marker("gui") is None:
        return
    if _GL_PROBLEM is not None:
        pytest.fail(_GL_PROBLEM, pytrace=False)
    display = os.environ.get("DISPLAY", "")
    if display and not _x_server_alive(display):
        pytest.fail(
            f"the X server {display} the viewer tests draw on went away during the run", pytrace=False
        )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if any("gui" in item.keywords for item in items):
        _ensure_gl_display(config)  # before any test creates the QApplication that opens the display


@pytest.fixture
def panel(make_napari_viewer, qtbot, request):
    """A viewer with the anisotropic sample and the panel docked, set up for tiny CPU training.

    A test module may set ``PREVIEW_EVERY`` (default 2) and ``TIMEOUT`` (ms to wait for the panel's tasks to end
    at teardown, default 120 s).
    """
    from napari_emsr.plugin._widget import EMSRWidget

    timeout = getattr(request.module, "TIMEOUT", 120_000)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-emsr", "medulla_anisotropic")
    widget = EMSRWidget(viewer)
    viewer.window.add_dock_widget(widget, name="napari-emsr")
    # NOTE: work estimated above half an hour is asked about in a modal box; the tests answer yes (a test that
    # checks the question sets its own answer)
    widget.ask = lambda question: True
    params = widget.params
    params.device = "cpu"
    params.method = "isotropic"
    params.steps, params.patch, params.size = 6, 32, "tiny"
    params.preview_every, params.val_every = getattr(request.module, "PREVIEW_EVERY", 2), 3
    yield widget
    widget.cleanup()
    qtbot.waitUntil(lambda: not widget.status.busy and not widget.export_status.busy, timeout=timeout)
    qtbot.waitUntil(lambda: not widget.workers, timeout=timeout)
    # NOTE: a worker's thread outlives the slot that forgets it by a few instructions (it still emits
    # ``finished``); closing the viewer before the thread pool is idle deletes the signals it emits from, and
    # aborts the interpreter
    from qtpy.QtCore import QThreadPool

    assert QThreadPool.globalInstance().waitForDone(timeout)
