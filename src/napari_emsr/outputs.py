"""What a job may write, and whether an existing output is resumed, left alone or refused.

One policy for every front end (the ``emsr`` command line today, the napari panel's export later): nothing here
knows about command-line flags, so a caller passes plain values (``overwrite``, the paths an output must not be).

The rules:

- An output is never one of the job's inputs (the input stack, the model being applied ...), whatever the flags.
- The folder an output goes into must exist (a typo must not create a tree of folders).
- An existing output is replaced only with ``overwrite``. Without it:

  * an unfinished zarr export (it carries the completion marker) resumes, and so does a folder an export was
    killed in before it wrote anything;
  * a finished zarr export that names what produced it (its fingerprint: input, model, planes, deband) is
    compared with the job's: the same job has nothing to do, another one is refused, saying what differs
    (:func:`finished_export`);
  * anything else is refused.

- A model file the job will save follows the same rule, except that a model this very job saved in an earlier,
  interrupted run (its config's ``made_by`` equals the job's, see :func:`made_by`) is written with instead of
  training again (:func:`own_model`).
- Every output is claimed before any work (:class:`OutputClaims`): checked for what the operating system would
  refuse at the end of a long run (a read-only or full disk, a name too long, a folder where a file goes) and
  locked until the job ends, so that a second writer is refused at once, naming the first.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .errors import InputError, ModelError, OutputExistsError

__all__ = [
    "ExportProgress",
    "OutputClaims",
    "check_folder",
    "check_model_path",
    "check_output",
    "export_progress",
    "finished_export",
    "is_zarr_path",
    "made_by",
    "own_model",
    "resumable",
]

PathLike = str | Path


def is_zarr_path(path: PathLike) -> bool:
    """Whether ``path`` names a zarr store (``.zarr``, ``.ome.zarr``), which is written resumably."""
    from .io import ZARR_SUFFIXES

    return str(path).lower().rstrip("/").endswith(ZARR_SUFFIXES)


#: Names of images rather than of model files (``emsr train -o`` refuses them: a mistyped ``reconstruct``).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".h5", ".hdf5", ".n5", ".mrc", ".npy")


def volume_suffix(path: PathLike) -> bool:
    """Whether ``path`` is named like a volume or an image (a TIFF, a zarr store, a PNG ...)."""
    from .io import TIFF_SUFFIXES

    name = str(path).lower().rstrip("/")
    return is_zarr_path(name) or name.endswith((*TIFF_SUFFIXES, *IMAGE_SUFFIXES))


def resumable(path: PathLike) -> bool:
    """Whether an interrupted export to ``path`` resumes when run again (a zarr store; a TIFF starts over)."""
    return is_zarr_path(path) and "://" not in str(path)


def check_folder(path: PathLike) -> None:
    """The folder ``path`` goes into must exist; refused with what to do otherwise."""
    parent = Path(path).expanduser().absolute().parent
    if not parent.is_dir():
        raise InputError(
            f"the folder {parent} does not exist: create it first (mkdir -p {parent}) or choose another output path"
        )


def _not_an_input(path: Path, not_: Mapping[str, PathLike | None] | None, role: str | None = None) -> None:
    from .io import same_place

    for what, other in (not_ or {}).items():
        if other is not None and same_place(path, other):
            subject = f"{path}" if role is None else f"the {role} {path}"
            raise InputError(f"{subject} is the {what} ({other}): choose another {'output ' if role is None else ''}"
                             "path (nothing was written)")


def check_output(path: PathLike, overwrite: bool, *, not_: Mapping[str, PathLike | None] | None = None,
                 finished: bool = False) -> Path:
    """The output path, checked before any work.

    Parameters
    ----------
    path : str or Path
        Where the job will write.
    overwrite : bool
        Whether an existing output may be replaced.
    not_ : mapping, optional
        What the output must never be (what -> path: ``{"input": ..., "model": ...}``), whatever ``overwrite``.
    finished : bool
        Leave a finished zarr export that names what produced it for :func:`finished_export` to compare
        (instead of refusing it here).

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        When ``path`` is one of ``not_`` or its folder does not exist.
    OutputExistsError
        When ``path`` exists, ``overwrite`` is off and it is neither an unfinished export (which resumes) nor, with
        ``finished``, a finished one to compare.
    """
    from .io import INCOMPLETE_MARKER, finished_fingerprint, never_started
    from .io.safety import NAME_MAX, check_output_path

    p = Path(path)
    if len(p.name.encode("utf-8", "surrogateescape")) > NAME_MAX:  # before any stat of it (ENAMETOOLONG)
        check_output_path(p)
    _not_an_input(p, not_)
    check_folder(p)
    if p.exists() and not overwrite:
        if finished and finished_fingerprint(p) is not None:
            return p
        if not (p / INCOMPLETE_MARKER).exists() and not never_started(p):
            raise OutputExistsError(f"{p} exists; pass --overwrite to replace it, or choose another output path")
    return p


def finished_export(path: PathLike, fingerprint: Callable[[], Mapping[str, str]], *, overwrite: bool) -> bool:
    """Whether ``path`` already is the finished export of this very job: then there is nothing to do.

    ``fingerprint()`` gives the job's export fingerprint (:func:`export_fingerprint`,
    :func:`napari_emsr.methods.paired.apply.lateral_fingerprint`); it is only computed when ``path`` is a finished
    export.
    With ``overwrite`` the answer is always no.

    Raises
    ------
    OutputExistsError
        When ``path`` is the finished export of something else (another input, model or setting), naming what
        differs.
    """
    from .io import fingerprint_differences, finished_fingerprint

    before = finished_fingerprint(Path(path)) if not overwrite else None
    if before is None:
        return False
    differs = fingerprint_differences(before, dict(fingerprint()))
    if differs is None:
        return True
    raise OutputExistsError(f"{path} exists: the finished export of something else ({differs}); pass --overwrite to "
                            "replace it, or choose another output path")


def check_model_path(path: PathLike, *, overwrite: bool, not_: Mapping[str, PathLike | None], role: str,
                     resumed: PathLike | None = None, reusable: bool = False,
                     exists: Callable[[Path], Exception] | None = None) -> bool:
    """A model file (or checkpoint) the job will save, checked before any training.

    Never one of ``not_``; an existing file only with ``overwrite`` or when it is the model being ``resumed``.
    ``reusable``: an existing file is left for :func:`own_model` to judge. ``exists(path)`` makes the refusal of
    an existing file (default: a plain :class:`~napari_emsr.errors.OutputExistsError`).

    Returns
    -------
    bool
        Whether ``path`` is an existing file left for :func:`own_model` (only with ``reusable``).
    """
    from .io import same_place

    p = Path(path)
    _not_an_input(p, not_, role)
    check_folder(p)
    if p.exists() and not overwrite and not (resumed and same_place(p, resumed)):
        if reusable and p.is_file():
            return True
        raise (exists or _model_exists)(p)
    return False


def _model_exists(path: Path) -> OutputExistsError:
    return OutputExistsError(f"the model file {path} exists; pass --overwrite to replace it, or give another path")


def made_by(command: str, input_fingerprint: Any, output: PathLike, train: Mapping[str, Any]) -> dict:
    """What a model trained by a train-then-write job is the result of, to keep in its config (``made_by``).

    ``input_fingerprint``: the input's part of the export fingerprint (source, shape, voxel size, sampled data);
    ``train``: every training option. The same job run again (after an interrupted write) finds its own model by
    this record (:func:`own_model`) and writes with it instead of training again.
    """
    made = {"command": command, "input": input_fingerprint, "output": str(Path(output).expanduser().absolute()),
            "train": dict(train)}
    return json.loads(json.dumps(made, default=str))  # as it reads back from the file


def own_model(path: PathLike, made: Mapping[str, Any]):
    """The model saved at ``path`` if this very job saved it (its ``made_by`` equals ``made``), else None.

    A file that is not a readable model is not the job's either (None).
    """
    from .model import EMSRModel

    try:
        model = EMSRModel.load(path)
    except ModelError:
        return None
    return model if model.config.get("made_by") == made else None


class OutputClaims(contextlib.AbstractContextManager):
    """The outputs a job will write, checked and locked from its start to its end.

    :func:`~napari_emsr.io.safety.check_output_path` refuses now what the operating system would refuse at the end
    of a long run (a folder where a file goes, a read-only or full disk, a name too long, ``/proc``); the output
    lock is held until the claims are closed, so that a second writer of the same path is refused at once, naming
    this one (the writers' own locks inside are the same lock, re-entrant).
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def claim(self, path: PathLike | None, what: str, *, folder: bool | None = None,
              needed: int | None = None) -> Path | None:
        """Check and lock ``path`` (None: nothing); ``folder``: a zarr store (default: from the name);
        ``needed``: bytes that must fit on its disk."""
        if path is None:
            return None
        from .io.safety import check_output_path, output_lock

        if "://" in str(path):  # a remote store: the writer says what is wrong with it
            return Path(str(path))
        if folder is None:
            folder = is_zarr_path(path)
        p = check_output_path(path, folder=folder, needed=needed, what=what)
        self._stack.enter_context(output_lock(p, what=what))
        return p

    def close(self) -> None:
        """Release every lock."""
        self._stack.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ExportProgress(NamedTuple):
    """How far an unfinished zarr export is, in the writer's own progress units."""

    #: Units written: full-resolution blocks, then pyramid chunks (what the writer's ``progress(done, total)`` counts).
    done: int
    #: All units: the full-resolution blocks and the pyramid's chunks.
    total: int
    #: Full-resolution blocks written; they come first and carry nearly all the work.
    blocks_done: int
    #: Full-resolution blocks in all.
    blocks: int


def export_progress(path: PathLike) -> ExportProgress | None:
    """How far an unfinished zarr export at ``path`` is, read from its completion marker; None when ``path`` is no
    unfinished export (or the marker cannot be read yet).

    The writer puts the marker in place before its first block, so a progress display learns the total from it
    while that block is still being computed, and a resumed export's count starts at what was already written.
    """
    from .io import INCOMPLETE_MARKER
    from .io.blocks import step_blocks

    try:
        state = json.loads((Path(path) / INCOMPLETE_MARKER).read_text())
        blocks = int(state["total"])
        blocks_done = len(state.get("done", []))
        chunk0 = int(state["chunks"][0])
        per_level = [len(step_blocks(int(shape[0]), min(chunk0, int(shape[0])))) for shape in state.get("levels", [])]
        levels_done = {int(k) for k in state.get("levels_done", [])}
        done = blocks_done + sum(n for k, n in enumerate(per_level, start=1) if k in levels_done)
        return ExportProgress(done, blocks + sum(per_level), blocks_done, blocks)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------- fingerprint
def export_fingerprint(volume, model, planes: str, factor: float | None = None,
                       deband: bool | None = None, consistent: bool = False) -> dict[str, str]:
    """What produces an export's data, as strings stored with an unfinished zarr export: a resume with another
    input, method, model or planes is refused instead of mixing two results in one volume.

    The input is named by its source, shape, dtype, voxel size and a digest of three sampled planes (a central
    crop of at most 256 x 256 each), so another file of the same shape is told apart without reading it whole;
    and, for a local file or folder, by what :func:`input_stamp` says of it (size and modification time; a zarr
    store's listing), so that an input edited in place anywhere is not taken for the one the export was made from.
    """
    import hashlib

    import numpy as np

    from .io.lazy import compute

    data = volume.data
    n = int(data.shape[0])
    cy, cx = (min(256, int(s)) for s in data.shape[1:3])
    y0, x0 = (int(data.shape[1]) - cy) // 2, (int(data.shape[2]) - cx) // 2
    h = hashlib.sha256()
    for z in sorted({0, n // 2, n - 1}):
        h.update(np.ascontiguousarray(compute(data[z, y0 : y0 + cy, x0 : x0 + cx], scheduler="synchronous")).tobytes())
    spacing = getattr(volume, "spacing", None)
    source = getattr(volume, "source", None)
    if source and Path(str(source)).exists():  # the same file however it is named (relative, absolute, a link)
        source = str(Path(str(source)).resolve())
    fp = {
        "input": f"{source} {tuple(int(s) for s in data.shape)} {data.dtype} "
        f"{spacing} sample:{h.hexdigest()[:16]}",
        "planes": planes,
        "factor": "" if factor is None else f"{float(factor):g}",
    }
    stamp = input_stamp(source)
    if stamp:
        fp["input file"] = stamp
    if isinstance(model, str):
        fp["method"] = model
    else:
        fp["method"] = str(model.config.get("method"))
        fp["model"] = model.fingerprint()
        if deband is not None:
            fp["deband"] = "on" if deband else "off"
        if consistent:  # only when on: the fingerprints of exports made before it existed stay the same
            fp["consistency"] = "on"
    return fp


def input_stamp(source) -> str:
    """Size and modification time of an input file, or of a folder's files (a zarr store: how many, their bytes,
    the latest modification and a digest of the listing of names, sizes and modification times, which holds the
    arrays' metadata files too); "" for no source or a URL (only the sampled planes of
    :func:`export_fingerprint` tell a remote store apart).

    Nothing is read but the listing (one ``stat`` per file): an edit anywhere in the input changes it.
    """
    import hashlib

    if not source or "://" in str(source):
        return ""
    p = Path(str(source))
    try:
        st = p.stat()
    except OSError:
        return ""
    if not p.is_dir():
        return f"{st.st_size} bytes, modified {_when(st.st_mtime_ns)}"
    h, files, size, latest = hashlib.sha256(), 0, 0, 0
    for name, fsize, mtime in sorted(_listing(p)):
        h.update(f"{name}\0{fsize}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        files, size, latest = files + 1, size + fsize, max(latest, mtime)
    return (f"{files} files, {size} bytes, last modified {_when(latest) if files else '-'}, "
            f"listing {h.hexdigest()[:16]}")


def _when(ns: int) -> str:
    """A modification time (ns since the epoch) as local date and time with its nanoseconds."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}"


def _listing(folder: Path):
    """(relative name, size, mtime ns) of every file under ``folder`` (links to folders are not followed)."""
    stack = [(folder, "")]
    while stack:
        d, prefix = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), prefix + e.name + "/"))
                else:
                    st = e.stat()  # a link to a chunk: the chunk's size and time
                    yield prefix + e.name, int(st.st_size), int(st.st_mtime_ns)
            except OSError:  # a broken link, a file removed meanwhile
                yield prefix + e.name, -1, 0
