"""Sub-widgets of the napari-emsr dock panel, one per file; the panel (``napari_emsr.plugin.panel``) wires them."""
