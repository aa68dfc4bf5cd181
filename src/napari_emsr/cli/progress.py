"""Progress on stderr: bars on a terminal, a plain line every few seconds in a log.

A write's bar has its total and the time left from the start (the rate over everything this run has written so
far, not a guess from the last chunk), and it keeps ticking while the first chunk is computed. Where stderr is
not a terminal (a batch job's log), a line such as ``write: 12/64 chunks, about 3 min left`` is printed every
:data:`LOG_EVERY` seconds (the environment variable ``EMSR_PROGRESS_EVERY`` sets it) instead of a bar that
redraws itself.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

#: Seconds between two progress lines when stderr is not a terminal.
LOG_EVERY = float(os.environ.get("EMSR_PROGRESS_EVERY", "5"))


def duration(seconds: float) -> str:
    """A rough duration for people: ``40 s``, ``3 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def stderr_is_terminal() -> bool:
    """Whether progress can be drawn as a bar (else it is logged a line at a time)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def training_bar(desc: str, total: int | None, quiet: bool, *, tty: bool | None = None,
                 every: float = LOG_EVERY, initial: int = 0):
    """The training steps' progress on stderr: a bar (tqdm) on a terminal, else a :class:`StepLog` line every
    ``every`` seconds (a bar that redraws itself would write every redraw into a batch job's log). ``initial``:
    the steps already done (a resumed model's), counted in ``total`` but not in the speed."""
    if quiet or (stderr_is_terminal() if tty is None else tty):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="step", disable=quiet, file=sys.stderr, dynamic_ncols=True,
                    initial=initial)
    return StepLog(desc, total, every=every, initial=initial)


class StepLog:
    """The part of tqdm's interface training uses, printed as a plain line every ``every`` seconds:
    ``train: 1200/5000 steps, 2 min in, about 6 min left, loss=0.0383, vs cubic=+1.84 dB``."""

    def __init__(self, desc: str, total: int | None, *, every: float = LOG_EVERY, initial: int = 0) -> None:
        self.desc, self.total, self.every = desc, total, every
        self.n = self.initial = int(initial)
        self.postfix: dict = {}
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def _line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self._t0
        steps = f"{self.n}/{self.total} steps" if self.total else f"{self.n} steps"
        parts = [f"{self.desc}: {steps}", f"{duration(elapsed)} in" if not final else f"in {duration(elapsed)}"]
        if not final and self.total and self.n > self.initial:
            parts.append(f"about {duration(elapsed / (self.n - self.initial) * max(self.total - self.n, 0))} left")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def _print(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def update(self, k: int = 1) -> None:
        self.n += int(k)
        now = time.monotonic()
        if k > 0 and now - self._last >= self.every:  # a second event at the same step prints no second line
            self._last = now
            self._print(self._line())

    def set_postfix(self, post: dict, refresh: bool = False) -> None:
        self.postfix = dict(post)  # as tqdm's: the caller keeps the last validation's figure in what it passes

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def reset(self, total: int | None = None) -> None:
        self.n, self.initial, self.total, self.postfix = 0, 0, total, {}
        self._t0 = self._last = time.monotonic()

    def write(self, text: str, file=None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print(self._line(final=True))


class Progress:
    """``progress(done, total)`` for a long job that reports now and then, shown with its total and the time left.

    Parameters
    ----------
    desc : str
        What is being done (``write``, ``uncertainty``, ``score cubic``).
    unit : str
        What ``done`` counts (``chunk``, ``plane``, ``task``).
    quiet : bool
        Show nothing.
    total : callable, optional
        Asked once a second until it gives an :class:`~napari_emsr.outputs.ExportProgress` (or ``(done, total)``):
        how far the job already is before its first report (:func:`napari_emsr.outputs.export_progress` for a zarr
        export), so the total shows at once. Its ``blocks`` are the first units, which carry the work (the
        pyramid's chunks after them cost next to nothing): the time left is reckoned on them.
    tty : bool, optional
        Draw a bar (default: whether stderr is a terminal); else print a line every ``every`` seconds.
    every : float
        Seconds between two lines when not drawing a bar.
    """

    def __init__(self, desc: str, unit: str = "chunk", *, quiet: bool = False,
                 total: Callable[[], tuple[int, int] | None] | None = None, tty: bool | None = None,
                 every: float = LOG_EVERY) -> None:
        self.desc, self.unit, self.quiet, self.every = desc, unit, quiet, every
        self.tty = stderr_is_terminal() if tty is None else tty
        self._peek = total
        self.done = 0
        self.total: int | None = None
        self._base: int | None = None  # what was done before this run started (a resumed export)
        self._heavy: int | None = None  # the first units, which carry the work (None: all of them)
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        self._thread: threading.Thread | None = None

    # ---- the job's side
    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self._base is None:  # the first report: nothing known of what came before, this run did 1 unit
                self._base = max(0, int(done) - 1)
            self.done, self.total = int(done), int(total)
        self._draw()

    def __enter__(self) -> Progress:
        self._t0 = time.monotonic()
        if self.quiet:
            return self
        if self.tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=None, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}s "
                             "[{elapsed}{postfix}]")
        else:
            print(f"{self.desc}: started", file=sys.stderr, flush=True)
        self._thread = threading.Thread(target=self._tick, name=f"emsr-progress-{self.desc}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(finished=exc_type is None)

    def close(self, finished: bool = True) -> None:
        """Stop the ticking; a finished job prints its last line."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        if self._bar is not None:
            self._draw()
            self._bar.close()
            self._bar = None
        elif finished and not self.quiet and not self.tty:
            print(f"{self.desc}: {self.line(finished=True)}", file=sys.stderr, flush=True)

    # ---- what is shown
    def left(self) -> float | None:
        """Seconds left: the time this run took per unit so far, times the units still to do."""
        with self._lock:
            done, total, base, heavy = self.done, self.total, self._base, self._heavy
        if total is None or base is None:
            return None
        heavy = total if heavy is None else heavy
        if done >= heavy:
            return 0.0
        if done - base <= 0:
            return None
        return (time.monotonic() - self._t0) / (done - base) * (heavy - done)

    def line(self, finished: bool = False) -> str:
        """``12/64 chunks, about 3 min left`` (or how long the first unit has been computing)."""
        elapsed = time.monotonic() - self._t0
        if finished:
            return f"{self.done}/{self.total or self.done} {self.unit}s in {duration(elapsed)}"
        if self.total is None:
            return f"computing the first {self.unit}, {duration(elapsed)} so far"
        left = self.left()
        if left is None:
            when = f"computing, {duration(elapsed)} so far, time left known after the first {self.unit}"
        else:
            when = f"about {duration(left)} left" if left >= 1 else "finishing"
        return f"{self.done}/{self.total} {self.unit}s, {when}"

    def _draw(self) -> None:
        bar = self._bar
        if bar is None:
            return
        with self._lock:
            done, total = self.done, self.total
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        left = self.left()
        if total is not None and done >= total:
            post = ""
        elif left is not None:
            post = f"about {duration(left)} left" if left >= 1 else "finishing"
        else:
            post = f"computing the first {self.unit}"
        bar.set_postfix_str(post, refresh=False)
        bar.refresh()

    def _tick(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0):
            if self._peek is not None:
                known = self._peek()
                if known is not None:
                    self._peek = None  # once is enough
                    with self._lock:
                        heavy = len(known) > 3
                        if self.total is None:
                            self.done, self.total = known[0], known[1]
                            self._base = known[2] if heavy else known[0]
                        if heavy:
                            self._heavy = known[3]
            if self._bar is not None:
                self._draw()
            elif time.monotonic() - last >= self.every:
                last = time.monotonic()
                print(f"{self.desc}: {self.line()}", file=sys.stderr, flush=True)


class TaskProgress(Progress):
    """The tasks of a dask computation on this machine's scheduler as a :class:`Progress` (``with`` around a
    ``compute()``): the total is the number of tasks of the graph."""

    def __init__(self, desc: str, *, quiet: bool = False, **kwargs) -> None:
        super().__init__(desc, "task", quiet=quiet, **kwargs)
        from dask.callbacks import Callback

        owner = self

        class _Count(Callback):
            def _start_state(self, dsk, state):
                owner.add_total(len(state["ready"]) + len(state["waiting"]) + len(state["finished"])
                                + len(state["running"]))

            def _posttask(self, key, result, dsk, state, worker_id):
                owner.step()

        self._callback = _Count()
        self._count = 0
        self._tasks = 0

    def add_total(self, n: int) -> None:
        """A graph of ``n`` more tasks starts (a computation may run several)."""
        with self._lock:
            self._tasks += n
            self.total, self._base = self._tasks, 0

    def step(self) -> None:
        """One task finished."""
        with self._lock:
            self._count += 1
            self.done = self._count

    def __enter__(self) -> TaskProgress:
        super().__enter__()
        self._callback.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._callback.__exit__(*exc)
        super().__exit__(*exc)
