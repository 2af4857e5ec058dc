"""Pure-python parts of the CT2DWI Slicer module (no Qt, no slicer app): HTTP client, numpy
logic and MRML-level helpers (these run with the Qt-free ``slicer-core`` MRML build too)."""
from .client import CT2DWIClient, ServerError  # noqa: F401
from .logic import BANNER, BackgroundCall, reading_cautions, synthetic_name, window_level_from_brain  # noqa: F401
