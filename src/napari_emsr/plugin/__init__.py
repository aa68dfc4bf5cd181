"""The napari side of napari-emsr: reader, writer, sample data, the dock panel, its state, widgets and workers.

Everything that imports napari, Qt, pyqtgraph or magicgui lives in this sub-package; the core (``io``,
``methods``, ``train``, ``model``, ``reconstruct``) never does.

- ``_reader``, ``_writer``, ``_sample_data``, ``_widget``: the npe2 contributions named in ``napari.yaml``;
- ``layers``: napari layers <-> :class:`napari_emsr.io.Volume` (scale, translate, units, axis labels, pyramids,
  where a reconstruction or a preview plane is placed);
- ``state``: the panel's parameters and status as evented dataclasses a script can set and watch;
- ``lazy_layer``: the layer data of a lazy reconstruction: napari never computes a block on the GUI thread
  (blocks are restored in a worker, interpolation stands in elsewhere);
- ``widgets``: one sub-widget of the panel per file, each bound to the state;
- ``workers``: the tasks the panel runs in thread workers (none touches the viewer).

Importing this package, its reader, writer, sample data, ``layers`` or ``state`` imports neither torch nor
Qt: the panel's modules import Qt when napari opens the panel.
"""
