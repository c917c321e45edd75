"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class ICHAnalyzerError(Exception):
    """Base class: its message is shown to the user as is."""


class InputError(ICHAnalyzerError):
    """The input image or label map cannot be used (missing, corrupt, not CT, bad geometry...)."""


class ModelError(ICHAnalyzerError):
    """A model is missing, corrupt or does not fit the request."""


class OutputError(ICHAnalyzerError):
    """The output folder cannot be written (exists without --force, not writable...)."""
