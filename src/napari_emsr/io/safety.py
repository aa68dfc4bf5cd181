"""Writing safely: the output folder is checked before anything is computed, disk space is reserved where the
format allows it, and the operating system's errors of a failed write become messages meant for people.

- :func:`check_output_folder`: the folder exists, is a folder and can be written (a read-only disk or a
  folder without write permission is refused before anything is computed);
- :func:`reserve`: ``fallocate`` of a file's whole length, so that a memory-mapped TIFF cannot die of
  SIGBUS on a full disk halfway through (the error comes at the start, as an ``OSError``);
- :func:`write_error`: an ``OSError`` of a full disk, a file-size limit, a quota or a read-only / forbidden
  folder, as an :class:`OutputError` that says what happened, how much was needed and what to do.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import sys
from pathlib import Path

from ..errors import EMSRError, InputError, OutputError

log = logging.getLogger(__name__)

# errno values of "no room": a full disk, a file-size limit (ulimit -f, or the file system's largest file)
# and a disk quota.
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
# errno values of "not allowed to write here".
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def human_size(nbytes: float) -> str:
    """``nbytes`` in B, KB, MB, GB or TB (powers of 1000, one decimal)."""
    n = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_space(folder: Path) -> int | None:
    """Free bytes on the disk holding ``folder`` (None when it cannot be asked)."""
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def check_output_folder(folder: Path, *, writable: bool = True) -> None:
    """Refuse an output folder that is missing, not a folder, or cannot be written, before any work is done.

    With ``writable`` False only that it exists and is a folder is checked.

    Raises
    ------
    InputError
        When ``folder`` does not exist or is a file.
    OutputError
        When it cannot be written (read-only disk, no write permission).
    """
    if not folder.exists():
        raise InputError(f"the folder {folder} does not exist: create it or choose another output path")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder: choose another output path")
    # NOTE: access() also says no for root on a read-only file system; for root on a folder without write
    # permission bits it says yes, rightly (root may write there).
    if writable and not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(not_writable_message(folder))


def not_writable_message(folder: Path, detail: str = "") -> str:
    reason = "it is on a read-only disk or you have no permission to write there"
    if detail:
        reason = detail
    return f"cannot write into the folder {folder}: {reason}; choose another output folder (or make it writable)"


def reserve(path: Path, size: int) -> None:
    """Allocate the first ``size`` bytes of the file ``path`` on disk, where the file system can.

    A memory-mapped file that is only sparse on disk fails with SIGBUS (the process dies without a message)
    when the disk fills up while its pages are written; reserving its space first makes a full disk or a
    file-size limit an ``OSError`` here, before any data is computed. Where the platform or the file system
    cannot reserve space, nothing is done.

    Raises
    ------
    OSError
        ENOSPC, EFBIG, EDQUOT (and other errors of the disk itself) from the allocation.
    """
    if size <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        _allocate(fd, int(size))
    except OSError as exc:
        if exc.errno in _CANNOT_ALLOCATE:
            log.debug("%s: space cannot be reserved on this file system (%s); writing without", path, exc)
            return
        raise
    finally:
        os.close(fd)


_CANNOT_ALLOCATE = {errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.ENODEV,
                    errno.ENOSYS}


def _allocate(fd: int, size: int) -> None:
    """``fallocate(fd, 0, 0, size)`` on Linux, else ``posix_fallocate``; OSError on failure.

    NOTE: glibc's posix_fallocate, on a file system without fallocate (NFS v3, some FUSE mounts), writes a
    byte into every 4 KB block instead: hours for a large TIFF on a network disk. Linux's own call fails
    at once there (EOPNOTSUPP), and the file is written without reservation, as before.
    """
    linux = _linux_fallocate()
    if linux is not None:
        if linux(fd, 0, 0, size) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return
    posix = getattr(os, "posix_fallocate", None)
    if posix is None:
        raise OSError(errno.EOPNOTSUPP, "no way to reserve space on this platform")
    posix(fd, 0, size)


def _linux_fallocate():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


def write_error(
    exc: OSError, target: Path, folder: Path, *, needed: int | None, what_next: str, compressed: bool = False
) -> OutputError | None:
    """An :class:`OutputError` for an ``OSError`` of a full disk, a size limit or an unwritable folder, else None.

    Parameters
    ----------
    exc : OSError
        The error of the failed write.
    target : Path
        The output being written.
    folder : Path
        The folder that holds what is written (its disk is the one that is full).
    needed : int, optional
        Bytes the write needs (an estimate is fine; None when unknown).
    what_next : str
        What happens when the user runs it again (e.g. a zarr export resumes, a TIFF is written anew).
    compressed : bool
        Whether the output is compressed (``needed`` is then the uncompressed size, an upper bound).
    """
    if isinstance(exc, EMSRError):
        return None
    code = exc.errno
    if code in _NOT_WRITABLE:
        detail = os.strerror(code).lower() if code is not None else str(exc)
        return OutputError(not_writable_message(folder, detail))
    if code not in _NO_SPACE:
        return None
    if not needed:
        need = ""
    elif compressed:
        need = f"; what is left to write takes up to {human_size(needed)} (uncompressed; usually less compressed)"
    else:
        need = f"; it needs about {human_size(needed)}"
    if code == errno.EFBIG:
        where = "in one file" if not compressed else "(a chunk file is larger than the limit)"
        return OutputError(
            f"cannot write {target}: the file-size limit is reached ({exc.strerror or exc}){need} {where}. "
            f"Raise the limit (ulimit -f) or use a file system that holds larger files; {what_next}"
        )
    free = free_space(folder if folder.exists() else folder.parent)
    have = f", {human_size(free)} is free" if free is not None else ""
    cause = "the disk quota is exceeded" if code == getattr(errno, "EDQUOT", None) else "the disk is full"
    return OutputError(
        f"cannot write {target}: {cause} ({exc.strerror or exc}){need}{have}. "
        f"Free some space on the disk holding {folder} (or choose an output on another disk); {what_next}"
    )
