"""The one exception type users see: a clear, one-line message, no traceback.

Command-line entry points catch :class:`CuvaeError`, print ``error: <message>``
and exit with status 2. Raise it wherever a user can fix the problem (bad flag,
missing data, corrupt file, mismatched checkpoint) and say how in the message.
"""


class CuvaeError(Exception):
    """A problem the user can fix; ``str(err)`` is a single line naming the fix."""


class DataError(CuvaeError):
    """A data file is missing, corrupt, truncated or of the wrong shape."""


class CheckpointError(CuvaeError):
    """A checkpoint is missing, damaged or belongs to a different model."""


class BackendError(CuvaeError):
    """The requested device is not available (no CuPy, no CUDA device)."""
