"""The lazy array-like every reader hands to dask: opened on first read, picklable, read errors made ours.

A file's data is read only when dask computes a chunk, deep inside the scheduler (and maybe on a cluster worker);
a damaged file fails there. :class:`LazyArray` opens its source once per process (the open handle is dropped when
it is pickled, so graphs built on it can be sent to ``dask.distributed`` workers) and turns any read error into
the reader's own :class:`~napari_emsr.errors.InputError`, which names the file and says what to do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EMSRError


class LazyArray:
    """Base of the readers' array-likes: subclasses give :meth:`_open` and :meth:`_damaged`, and set
    ``shape``, ``dtype`` and ``ndim``."""

    _arr: Any = None

    def _open(self) -> Any:
        """The opened array (zarr-like: indexing returns the data)."""
        raise NotImplementedError

    def _damaged(self, key: Any, exc: Exception) -> EMSRError:
        """The error to raise when reading ``key`` failed with ``exc``."""
        raise NotImplementedError

    def open(self) -> Any:
        """The opened array, opened on first use in this process."""
        if self._arr is None:
            self._arr = self._open()
        return self._arr

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.open()[key])
        except (MemoryError, EMSRError):
            raise
        except Exception as exc:  # the decoders raise many kinds (zlib.error, TiffFileError, RuntimeError ...)
            raise self._damaged(key, exc) from None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arr"] = None
        return state


def compute(a: Any, scheduler: str | None = None) -> np.ndarray:
    """``a`` in memory as a numpy array: a dask array computed (with ``scheduler``, default dask's), anything else
    through :func:`numpy.asarray`."""
    if hasattr(a, "compute"):
        return a.compute(scheduler=scheduler) if scheduler else a.compute()
    return np.asarray(a)
