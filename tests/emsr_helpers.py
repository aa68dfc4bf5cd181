"""Small helpers the test files share: tiny TIFF stacks, digests of outputs, real `emsr` processes, a private tmpfs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile


def write_tif(path: Path, data: np.ndarray, spacing: float | None = 40.0) -> Path:
    """An ImageJ stack with a voxel size of ``spacing`` x 10 x 10 nm (None: a plain TIFF without one)."""
    if spacing is None:
        tifffile.imwrite(path, data)
    else:
        tifffile.imwrite(path, data, imagej=True, resolution=(0.1, 0.1),
                         metadata={"spacing": spacing, "unit": "nm", "axes": "ZYX"})
    return path


def tree_digest(path: Path) -> str:
    """A hash of a file, or of every file of a folder (a zarr store): names and bytes."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def run_emsr(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """A real ``emsr`` process (the package on this interpreter's path, PYTHONPATH inherited)."""
    return subprocess.run([sys.executable, "-m", "napari_emsr.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def private_tmpfs_works(folder: Path) -> bool:
    """Whether this process may mount a private tmpfs (root, with ``unshare``): how full disks are made here."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{folder}'"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0
