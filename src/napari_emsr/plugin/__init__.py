"""The napari side of napari-emsr: reader, writer, sample data, the dock panel, its widgets and workers.

Everything that imports napari, Qt, pyqtgraph or magicgui lives in this sub-package; the core (``io``,
``methods``, ``train``, ``model``, ``reconstruct``) never does. Importing this package, its reader, writer
or sample data imports neither torch nor Qt: the panel's modules import Qt when napari opens the panel.
"""
