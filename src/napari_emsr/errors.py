"""Errors that carry a message meant for people."""


class EMSRError(Exception):
    """Base class of every error napari-emsr raises on purpose.

    The message says what is wrong and what to do about it; the CLI prints it without a traceback
    and exits with code 2, and the napari widgets show it as a notification.
    """


class InputError(EMSRError, ValueError):
    """The input (a file, an array, an option) cannot be used as given."""


class ModelError(EMSRError, ValueError):
    """A model file is unreadable, or does not fit the data it is applied to."""


class OutputExistsError(EMSRError, FileExistsError):
    """The output path exists and overwriting was not asked for."""


class OutputError(EMSRError, OSError):
    """The output cannot be written: the disk is full, a file-size limit is reached, or the folder is read-only.

    An ``OSError`` too, so code that catches those still catches it.
    """


class OutputBusyError(EMSRError, OSError):
    """Another process is writing the same output (a TIFF, a zarr store or a model file) right now."""
