"""Writing safely: the output folder is checked before anything is computed, disk space is reserved where the
format allows it, and the operating system's errors of a failed write become messages meant for people.

- :func:`check_output_folder`: the folder exists, is a folder and can be written (a read-only disk or a
  folder without write permission is refused before anything is computed);
- :func:`reserve`: ``fallocate`` of a file's whole length, so that a memory-mapped TIFF cannot die of
  SIGBUS on a full disk halfway through (the error comes at the start, as an ``OSError``);
- :func:`write_error`: an ``OSError`` of a full disk, a file-size limit, a quota or a read-only / forbidden
  folder, as an :class:`OutputError` that says what happened, how much was needed and what to do;
- :func:`temporary_path`: a new file beside an output, created exclusively under a hidden name that no user
  file has (``.<name>.emsr-partial-<random>``), where a file is written before its atomic rename;
- :func:`output_lock`: an operating-system lock on an output for as long as it is written, so that a second
  writer is refused (naming the first) and a crash releases it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import EMSRError, InputError, OutputBusyError, OutputError

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


# ---- temporary names and locks ----------------------------------------------------------------------

#: What every temporary file of ours has in its name (never the name of a finished output).
PARTIAL_TAG = ".emsr-partial-"
#: The suffix of the lock file beside an output being written.
LOCK_SUFFIX = ".emsr-lock"
# Bytes of the output's name kept in the names of its temporary and lock files (a name may have 255 bytes).
_NAME_BYTES = 120


def _short(name: str) -> str:
    raw = name.encode("utf-8", "surrogateescape")[:_NAME_BYTES]
    return raw.decode("utf-8", "ignore")


def is_partial_name(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of our temporary files (an unfinished write, never a finished output)."""
    return PARTIAL_TAG in Path(path).name


def temporary_path(target: Path, *, folder: bool = False) -> Path:
    """A new, empty file (or folder) beside ``target``, created exclusively under a unique hidden name.

    The name is ``.<target name>.emsr-partial-<random>``: no other writer gets the same one, no file of the
    user's has it (so nothing of theirs is overwritten or removed), and readers recognise it as unfinished
    (:func:`is_partial_name`). Write into it, then ``os.replace`` it onto ``target``.
    """
    prefix = "." + _short(target.name) + PARTIAL_TAG
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    try:
        # mkstemp makes the file private to its owner: give it the permissions any new file gets
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError as exc:
        log.debug("%s: permissions unchanged (%s)", name, exc)
    finally:
        os.close(fd)
    return Path(name)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask would, for all threads)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def lock_path(target: Path) -> Path:
    """The lock file of ``target``: ``.<target name>.emsr-lock`` in the same folder."""
    return target.parent / ("." + _short(target.name) + LOCK_SUFFIX)


_held: dict[str, int] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def output_lock(target: str | os.PathLike, *, what: str = "output") -> Iterator[None]:
    """Hold an operating-system lock on ``target`` (a file or a zarr folder) while it is written.

    A second process asking for the same output is refused at once with an :class:`OutputBusyError` that
    names the process holding it; the lock dies with its process (a crash or a kill releases it), and the
    lock file is removed when the lock is released. Within one process the lock is re-entrant (the CLI takes
    it for the whole command, the writer inside again). Where the platform has no ``fcntl`` (Windows),
    nothing is locked.

    Raises
    ------
    OutputBusyError
        When another process holds the lock.
    OutputError
        When the lock file cannot be created because the folder cannot be written.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    target = Path(target).expanduser().absolute()
    key = os.path.normpath(str(target))
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    lock = lock_path(target)
    fd = _acquire(lock, target, what, fcntl)
    with _held_guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # still holding it: whoever opens the old file next sees it unlinked and retries
        os.close(fd)


def _acquire(lock: Path, target: Path, what: str, fcntl) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in _NOT_WRITABLE:
                raise OutputError(not_writable_message(lock.parent, os.strerror(exc.errno).lower())) from None
            if exc.errno == errno.ENOENT:
                raise InputError(f"the folder {lock.parent} does not exist: create it or choose another output "
                                 "path") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusyError(
                f"{target} is being written by another process ({holder}): wait until it has finished, or "
                f"choose another {what}"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the last holder removed the file between our open and our lock: take the new one
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(sys.argv)[:400]}\n".encode("utf-8", "replace"))
        return fd


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    if not text:
        return "process unknown"
    pid, _, cmd = text.partition(" ")
    return f"process {pid}: {cmd}" if cmd else f"process {pid}"


#: Bytes a file name may have on the common file systems (ext4, XFS, APFS, NTFS in UTF-16 units).
NAME_MAX = 255


def check_output_path(target: str | os.PathLike, *, folder: bool = False, needed: int | None = None,
                      what: str = "output") -> Path:
    """Refuse, before any work is done, an output path that cannot be written: a name too long for the file
    system, a missing or read-only folder, a special place (``/proc``, a FIFO), a file where a folder is
    expected or the other way round, or a disk with less free space than ``needed`` bytes.

    A temporary file is created beside ``target`` and removed again, so what the operating system would say
    at the end of a long run is said now. ``folder`` says whether the output is a folder (a zarr store).

    Returns
    -------
    Path
        ``target`` as a path (``~`` expanded).

    Raises
    ------
    InputError
        A bad name, a missing folder, a file or folder of the wrong kind in the way.
    OutputError
        The folder cannot be written, or the disk has too little free space.
    """
    p = Path(target).expanduser()
    nbytes = len(p.name.encode("utf-8", "surrogateescape"))
    if nbytes > NAME_MAX:
        raise InputError(f"the {what} name {p.name[:40]}... has {nbytes} bytes; file systems allow at most "
                         f"{NAME_MAX}: choose a shorter name")
    if not p.name or p.name in (".", ".."):
        raise InputError(f"{target} names no file: give the {what} a file name")
    if p.is_symlink():
        raise InputError(f"{p} is a symbolic link (to {os.readlink(p)}): give the real path as the {what}, or "
                         "another path (an output is never written through a link)")
    if p.exists():
        if folder and not p.is_dir():
            raise InputError(f"{p} exists and is not a folder; choose another path for the {what}")
        if not folder and p.is_dir():
            raise InputError(f"{p} exists and is a folder; choose another path for the {what} (a file)")
        if not folder and not p.is_file():
            raise InputError(f"{p} exists and is not a regular file (a pipe, a device or a socket?); choose another "
                             f"path for the {what}")
    check_output_folder(p.parent)
    try:
        probe = temporary_path(p)
    except OSError as exc:
        err = write_error(exc, p, p.parent, needed=None, what_next="then run it again")
        if err is not None:
            raise err from None
        raise OutputError(f"cannot create files in {p.parent} ({exc.strerror or exc}): choose another folder "
                          f"for the {what}") from None
    with contextlib.suppress(OSError):
        probe.unlink()
    if needed:
        free = free_space(p.parent)
        if free is not None and free < needed:
            raise OutputError(f"the disk holding {p.parent} has {human_size(free)} free, but the {what} {p.name} "
                              f"needs about {human_size(needed)}: free some space or choose another disk")
    return p
