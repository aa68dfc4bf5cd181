"""``python -m napari_emsr.cli``: the ``emsr`` command."""

import sys

from .main import entry

sys.exit(entry())
