"""Exceptions shared by every part of the package (no imports: any module may use them)."""


class InputError(ValueError):
    """Input data cannot be used (the message says why and what to do). Maps to HTTP 4xx / CLI exit code 2."""


class PacsError(RuntimeError):
    """A DICOMweb server refused, failed or could not be reached (one-line message; CLI exit code 3)."""
