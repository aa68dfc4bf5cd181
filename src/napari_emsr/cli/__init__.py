"""The ``emsr`` command line: the same core as the napari plugin, for batch work.

Every command prints a clear message and exits with code 2 on bad input (no traceback); ``--json`` prints one
machine-readable JSON object on stdout instead of the human summary.

Layout: :mod:`.parser` (the options), :mod:`.main` (the entry point), :mod:`.commands` (one module per command),
:mod:`.training`, :mod:`.writing` and :mod:`.progress` (what the commands share); what may be written, resumed or
refused is :mod:`napari_emsr.outputs`'s policy.
"""

from .main import entry, main
from .parser import build_parser

__all__ = ["build_parser", "entry", "main"]
