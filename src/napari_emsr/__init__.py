"""napari-emsr: isotropic reconstruction and super-resolution of anisotropic 3D EM.

Importing this package is cheap: it never imports torch, napari or Qt. The heavy parts live in
sub-modules that are imported when they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
