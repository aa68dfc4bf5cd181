"""Helpers shared by the io tests (no tests here): every OME-Zarr a test writes is checked with the NGFF model."""

from __future__ import annotations

import warnings
from pathlib import Path


def assert_valid_ngff(path: str | Path) -> None:
    """Validate an OME-Zarr store's metadata and structure with yaozarrs (NGFF 0.4 or 0.5).

    The model's warnings (e.g. a unit name outside the spec) count as failures too.
    """
    import yaozarrs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yaozarrs.validate_zarr_store(str(path))
    complaints = [str(w.message) for w in caught if type(w.message).__name__ == "ValidationWarning"]
    assert not complaints, complaints
