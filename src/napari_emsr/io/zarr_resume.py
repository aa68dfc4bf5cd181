"""Resuming a zarr export: the :data:`INCOMPLETE_MARKER` file (the finished blocks and levels, and the fingerprint
of what produces the data), the checks before a store is resumed, overwritten or removed (one writer at a time, no
symbolic link followed, only a zarr store through and through is removed: :func:`store_stranger`), and what a
finished export says it was made from. Writing is :mod:`napari_emsr.io.omezarr`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputExistsError
from .formats import looks_like_zarr
from .safety import OutputError, check_output_folder, not_writable_message

log = logging.getLogger(__name__)

#: Name of the file that marks a zarr export as unfinished (JSON: shape, dtype, chunks, finished blocks,
#: and the fingerprint of what produces the data).
INCOMPLETE_MARKER = ".emsr_incomplete"
#: Key of napari-emsr's own group attributes in an exported OME-Zarr (``{"fingerprint": {...}}``).
PROVENANCE_KEY = "napari_emsr"


def check_fingerprint(fingerprint: Any) -> dict[str, str] | None:
    """``fingerprint`` as a plain dict of strings (None stays None); InputError for anything else."""
    if fingerprint is None:
        return None
    if not isinstance(fingerprint, Mapping):
        raise InputError(f"fingerprint {fingerprint!r} must be a mapping of strings to strings, or None")
    out = {}
    for key, value in fingerprint.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(
                f"fingerprint entry {key!r}: {value!r} is not a string to a string: give e.g. "
                "{'input': '/data/stack.tif', 'method': 'cubic'}"
            )
        out[key] = value
    return dict(sorted(out.items()))


def fingerprint_differences(before: Any, now: dict[str, str] | None) -> str | None:
    """What differs between the fingerprint an export was written with and the one given now (None: nothing)."""
    before = before if isinstance(before, dict) or before is None else {"?": str(before)}
    if before == now:
        return None
    if before is None:
        return (f"the unfinished export was written without a fingerprint, this call gives {now} "
                "(it may come from an older version or another program)")
    if now is None:
        return f"the unfinished export was written from {before}, this call gives no fingerprint"
    keys = sorted(set(before) | set(now))
    parts = [f"{k}: {before.get(k, '(none)')!r} before, {now.get(k, '(none)')!r} now"
             for k in keys if before.get(k) != now.get(k)]
    return "; ".join(parts)


def _resume_or_prepare(p: Path, state: dict, *, overwrite: bool) -> list[Any] | None:
    """The arrays of an unfinished export of the same volume to resume, or None once ``p`` is free to create.

    Raises OutputExistsError for an existing output that may not be replaced, InputError for a folder that is
    not a zarr store (never deleted).
    """
    check_output_folder(p.parent, writable=not p.exists())
    if not p.exists():
        return None
    if p.is_file():
        if not overwrite:
            raise OutputExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path")
        p.unlink()
        return None
    if not p.is_dir():
        raise OutputExistsError(f"{p} exists and is neither a file nor a folder; choose another output path")
    if never_started(p):
        # An empty folder (made by hand, or an export killed right after creating it, before its marker was in
        # place: at most the marker's temporary file): nothing to lose.
        (p / (INCOMPLETE_MARKER + ".tmp")).unlink(missing_ok=True)
        check_output_folder(p)
        return None
    unfinished = (p / INCOMPLETE_MARKER).exists()
    marker = _read_marker(p) if unfinished else None
    keys = ("shape", "dtype", "chunks")
    if (
        marker is not None
        and not overwrite
        and "levels" in marker
        and not marker.get("removing")
        and _marker_ngff(marker) != state.get("ngff", "0.4")
    ):
        # NOTE: a marker without "ngff" was written before 0.5 could be chosen: it is NGFF 0.4.
        before, now = _marker_ngff(marker), state.get("ngff", "0.4")
        raise OutputExistsError(
            f"{p} holds an unfinished NGFF {before} export; this call writes NGFF {now}, and one store cannot "
            f"hold both: finish it as it was begun (CLI: --ngff {before}; Python: ngff='{before}'), or pass "
            "overwrite=True (CLI: --overwrite) to start again as " + now
        )
    if (
        marker is not None
        and not overwrite
        and all(marker.get(k) == state[k] for k in keys)
        and marker.get("axis", 0) == state["axis"]
        and marker.get("levels", []) == state["levels"]
        and marker.get("shards") == state.get("shards")
    ):
        differs = fingerprint_differences(marker.get("fingerprint"), state["fingerprint"])
        if differs is not None:
            raise OutputExistsError(
                f"{p} holds an unfinished export of the same shape made from other data or settings ({differs}); "
                "finishing it with this call would mix two results in one volume. Pass overwrite=True "
                "(CLI: --overwrite) to start again, or re-run exactly the earlier command to complete it"
            )
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(not_writable_message(p))
        arrays = _open_levels(p, state)
        if arrays is not None:
            return arrays
        # Our own unfinished export of this very volume whose arrays cannot all be opened (e.g. it stopped
        # before they were created): nothing worth keeping, start it afresh.
        log.info("restarting the unfinished export %s: its arrays cannot be opened", p)
        _check_removable(p)
        _remove_store(p)
        return None
    if marker is not None and marker.get("removing") and not overwrite:
        raise OutputExistsError(
            f"{p} was being removed to be overwritten when that was interrupted; pass overwrite=True "
            "(CLI: --overwrite) to write it again, or delete the folder"
        )
    if marker is not None and "levels" not in marker and not overwrite:
        raise OutputExistsError(
            f"{p} holds an unfinished export written by an older version of napari-emsr (its marker lists no "
            "pyramid levels), which this version cannot finish: pass overwrite=True (CLI: --overwrite) to write it "
            "again, or finish it with the version that started it"
        )
    if unfinished and not overwrite:
        raise OutputExistsError(
            f"{p} holds an unfinished export of a different volume (shape, dtype, chunks, shards or pyramid differ); "
            "pass overwrite=True (CLI: --overwrite) to start again, or choose another path"
        )
    if not overwrite:
        raise OutputExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path")
    if not unfinished and not looks_like_zarr(p):
        raise InputError(f"{p} is a folder that is not a zarr store; refusing to delete it: choose another output path")
    _check_removable(p)
    _remove_store(p)
    return None


def _refuse_link(p: Path) -> None:
    """Refuse an output path that is a symbolic link (to a store, a file, or nothing).

    Overwriting through it would delete what it points to, and writing through it would put the store
    somewhere the path does not say; replacing the link instead would surprise whoever made it. The user gives
    the real path.
    """
    if not p.is_symlink():
        return
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    real = p.resolve()
    raise InputError(
        f"{p} is a symbolic link (to {target}); napari-emsr does not write through a link or replace it, so that "
        f"what it points to is never deleted or mixed with another result: give the real path ({real}) as the "
        "output, or another path"
    )


#: Names of zarr metadata files (v3 node, v2 array, group, attributes, consolidated metadata).
_METADATA = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
# Our own files in a store: the marker and its temporary file.
_OURS = frozenset({INCOMPLETE_MARKER, INCOMPLETE_MARKER + ".tmp"})
# One part of a chunk key between separators ("/" or "."): an index, or v3's "c" prefix.
_CHUNK_KEY = re.compile(r"(?:c|\d+)(?:\.(?:c|\d+))*")
# What zarr's local store writes a file to before renaming it into place: "<name>.<32 hex>.partial".
_ZARR_PARTIAL = re.compile(r".*\.[0-9a-f]{32}\.partial")


def _is_array_folder(names: set[str], folder: str) -> bool:
    if ".zarray" in names:
        return True
    if "zarr.json" not in names:
        return False
    try:
        with open(os.path.join(folder, "zarr.json"), "rb") as fh:
            meta = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "array"


def _chunk_like(parts: list[str]) -> bool:
    return all(_CHUNK_KEY.fullmatch(part) for part in parts)


def store_stranger(p: Path) -> tuple[Path | None, bool]:
    """The first entry of folder ``p`` that is not part of a zarr store, and whether ``p`` holds an array.

    Part of a store are: zarr metadata files anywhere; files under an array's folder whose path from it is a
    chunk key (``0.1.2``, ``0/1/2``, ``c/0/1/2``, shards included); the temporary files zarr writes before
    renaming; and, in an unfinished export of ours (with :data:`INCOMPLETE_MARKER`), our marker and the
    chunks of levels whose metadata an interrupted removal already deleted. Anything else (a user's file, a
    symbolic link, a pipe) is a stranger. Nothing is followed through links; empty folders are no strangers.
    """
    ours = (p / INCOMPLETE_MARKER).is_file()
    has_array = False
    array_root: dict[str, str] = {}
    for folder, dirs, files in os.walk(p, topdown=True, followlinks=False, onerror=_raise):
        dirs.sort()
        files.sort()
        names = set(files)
        parent = array_root.get(os.path.dirname(folder))
        if _is_array_folder(names, folder):
            has_array = True
            root = folder
        else:
            root = parent
        array_root[folder] = root  # type: ignore[assignment]
        for name in files + dirs:
            entry = os.path.join(folder, name)
            if os.path.islink(entry):
                return Path(entry), has_array
            if name in dirs:
                continue
            if not os.path.isfile(entry):  # a pipe, a socket, a device
                return Path(entry), has_array
            if name in _METADATA or _ZARR_PARTIAL.fullmatch(name):
                continue
            if folder == str(p) and name in _OURS:
                continue
            if root is not None and _chunk_like(os.path.relpath(entry, root).split(os.sep)):
                continue
            if ours and _chunk_like(os.path.relpath(entry, p).split(os.sep)):
                continue  # our levels are named 0, 1, ...: chunks left by an interrupted removal or creation
            return Path(entry), has_array
    return None, has_array


def _raise(exc: OSError) -> None:
    raise exc


def _check_removable(p: Path) -> None:
    """Refuse to delete a folder that is not a zarr store through and through (see :func:`store_stranger`).

    A folder whose only zarr-looking file is a stray ``.zattrs`` is no store: it must hold an array (or be an
    unfinished export of ours), and nothing else than zarr metadata and chunks.

    Raises
    ------
    InputError
        Naming the first file that is not part of a zarr store, or saying that no array is in it.
    """
    try:
        stranger, has_array = store_stranger(p)
    except OSError as exc:
        raise OutputError(f"cannot look through {p} before overwriting it ({exc.strerror or exc}): check its "
                          "permissions, or choose another output path") from None
    if stranger is not None:
        what = "a symbolic link" if stranger.is_symlink() else ("not a regular file" if not stranger.is_file()
                                                               else "not part of a zarr store")
        raise InputError(
            f"{p} holds {stranger.relative_to(p)} ({what}); refusing to overwrite the folder, which would delete "
            "it: move it out of the folder (or delete it yourself), or choose another output path"
        )
    if not has_array and not (p / INCOMPLETE_MARKER).is_file():
        raise InputError(
            f"{p} holds no zarr array (only zarr metadata), so it is not a store napari-emsr would replace; "
            "refusing to delete it: delete it yourself, or choose another output path"
        )


def _remove_store(p: Path) -> None:
    """Delete a zarr store (one of ours, or one to overwrite) so that no moment of it looks like a finished volume.

    The caller holds the store's lock and has checked it with :func:`_check_removable` (``p`` is no link, and
    holds nothing but zarr files). A plain ``rmtree`` killed halfway could leave the metadata with part of the
    chunks (zarr reads the missing ones as zeros): the marker goes in first, then the metadata (the store's
    own first, then every array's and group's, so that no part of it opens on its own), then the chunks, and
    the marker last.
    """
    try:
        _write_marker(p, {"removing": True})
    except OSError:
        pass  # e.g. a full disk: removing the metadata first is enough to keep it from opening
    for name in sorted(_METADATA):
        meta = p / name
        if meta.is_file() and not meta.is_symlink():
            meta.unlink()
    for folder, _, files in os.walk(p, followlinks=False):
        for name in files:
            if name in _METADATA:
                os.unlink(os.path.join(folder, name))
    for child in p.iterdir():
        if child.name == INCOMPLETE_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (p / INCOMPLETE_MARKER).unlink(missing_ok=True)
    p.rmdir()


def never_started(p: Path) -> bool:
    """Whether ``p`` is a folder an export may take as new: empty, or holding only the marker's temporary file
    (an export SIGKILLed between creating the folder and renaming its marker into place)."""
    return p.is_dir() and all(c.name == INCOMPLETE_MARKER + ".tmp" for c in p.iterdir())


def finished_fingerprint(p: Path) -> dict[str, str] | None:
    """The fingerprint of a *finished* export in folder ``p`` (no marker), None when ``p`` is anything else: no
    folder, an unfinished export, a zarr written without one or not by napari-emsr."""
    p = Path(p)
    if not p.is_dir() or (p / INCOMPLETE_MARKER).exists():
        return None
    attrs = _group_attrs(p)
    fp = attrs.get(PROVENANCE_KEY, {}).get("fingerprint") if isinstance(attrs, dict) else None
    return dict(fp) if isinstance(fp, dict) else None


def store_ngff(p: Path) -> str | None:
    """The NGFF version of the OME-Zarr image in folder ``p`` (``"0.4"``: ``multiscales`` in a zarr v2 group,
    ``"0.5"``: under ``"ome"`` in a zarr v3 group), None for anything else. Only the group metadata is read."""
    attrs = _group_attrs(Path(p))
    if not isinstance(attrs, dict):
        return None
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return str(ome.get("version", "0.5"))
    return "0.4" if "multiscales" in attrs else None


def _group_attrs(p: Path) -> dict | None:
    """The attributes of the zarr group in folder ``p`` (v3 ``zarr.json``, else v2 ``.zattrs``); None when they
    cannot be read."""
    try:
        meta = json.loads((p / "zarr.json").read_text())
        return meta.get("attributes", {}) if isinstance(meta, dict) else None
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    try:
        attrs = json.loads((p / ".zattrs").read_text())
    except (OSError, ValueError):
        return None
    return attrs if isinstance(attrs, dict) else None


def _marker_ngff(marker: dict) -> str:
    return str(marker.get("ngff", "0.4"))


def _write_marker(folder: Path, state: dict) -> None:
    # NOTE: a fixed temporary name, inside the store: safe because every write of the marker happens with the
    # store's output_lock held (write_zarr), so no second writer can share it; never_started() knows the name.
    tmp = folder / (INCOMPLETE_MARKER + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / INCOMPLETE_MARKER)


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / INCOMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def _open_levels(p: Path, state: dict) -> list[Any] | None:
    """The level arrays of an unfinished export, when they all exist with the shapes and dtype expected."""
    import zarr

    shapes = [tuple(state["shape"])] + [tuple(s) for s in state["levels"]]
    arrays = []
    for k, shape in enumerate(shapes):
        try:
            a = zarr.open_array(str(p / str(k)), mode="r+")
        except Exception:
            return None
        if tuple(a.shape) != shape or np.dtype(a.dtype) != np.dtype(state["dtype"]):
            return None
        arrays.append(a)
    return arrays
