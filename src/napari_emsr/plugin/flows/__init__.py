"""The panel's flows: what the isotropic and the paired method each do with the panel's buttons
(:class:`napari_emsr.plugin.host.Flow`)."""
