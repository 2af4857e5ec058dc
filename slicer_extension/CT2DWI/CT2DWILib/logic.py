"""Numpy and threading logic of the CT2DWI module (no Qt, no slicer)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

BANNER = "SYNTHETIC DWI \u2013 not for diagnosis"
SYNTHETIC_ATTRIBUTE = "CT2DWI.Synthetic"


def synthetic_name(ct_name: str) -> str:
    base = (ct_name or "CT").strip()
    return f"SYNTHETIC DWI ({base})"


def window_level_from_brain(image: np.ndarray, brain: np.ndarray | None = None, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    """Window/level spanning the [lo, hi] percentiles of the image inside the brain (or of its
    non-zero voxels when no mask is given). Returns (window, level)."""
    image = np.asarray(image, dtype=np.float64)
    sel = np.asarray(brain) > 0 if brain is not None else image != 0
    if brain is not None and sel.shape != image.shape:
        raise ValueError(f"brain mask shape {sel.shape} does not match image shape {image.shape}")
    vals = image[sel & np.isfinite(image)]
    if vals.size == 0:
        vals = image[np.isfinite(image)]
    if vals.size == 0:
        return 1.0, 0.5
    a, b = np.percentile(vals, [lo, hi])
    if b <= a:
        b = a + 1e-3
    return float(b - a), float((a + b) / 2.0)


def reading_cautions(info: dict | None) -> list[str]:
    """What a reader must know about this particular synthetic DWI, from the server's answer: always that a normal
    look never rules out an infarct; then, when they apply, that the hemispheric comparison (the model's main cue
    for an infarct) was switched off and why, that the slices were tilted or straightened, that thin slices were
    averaged into the model's slab thickness, what the series reader did, that the brain mask was made
    automatically, and the served model's own pose limit. One sentence each."""
    info = info or {}

    def sentence(text: str) -> str:
        text = text.strip()
        return text if text.endswith(".") else text + "."

    out = ["A normal-looking synthetic DWI never rules out an infarct; a bright area is not proof of one."]
    hemi = str(info.get("hemispheric_comparison", ""))
    if hemi.startswith("NOT used"):
        out.append("Hemispheric comparison OFF - " + hemi[len("NOT used"):].strip(" ()") +
                   ": infarcts are less likely to show.")
    elif isinstance(info.get("midplane"), dict) and info["midplane"].get("trusted") is False and not hemi:
        out.append(sentence("The mid-sagittal plane was not trusted: " + str(info["midplane"].get("reason", ""))))
    if info.get("slice_tilt"):
        pose = str((info.get("model_card") or {}).get("pose", ""))
        out.append(sentence("Tilted slices: " + str(info["slice_tilt"])) + (f" {sentence('Model card: ' + pose)}" if pose else ""))
    if info.get("straightened"):
        out.append(sentence(str(info["straightened"])))
    if info.get("slabs"):
        out.append(sentence("Thin slices: " + str(info["slabs"])))
    for note in info.get("series_notes") or []:
        out.append(sentence("Series reader: " + str(note)))
    if str(info.get("mask_source", "")).startswith("automatic"):
        out.append("The brain mask was made automatically from the CT: check that it covers the whole brain.")
    return out


def operating_threshold(info: dict | None) -> float | None:
    """The served model's operating point for the infarct-probability map (``info["probability"]
    ["operating_threshold"]``: the lowest threshold that kept to 2 false-positive clusters per case on its
    validation phantoms), where the threshold slider starts for each new result; None when the model has none (a
    model calibrated before it was kept: the slider stays where it is) or the value is not a number in [0, 1]."""
    prob = (info or {}).get("probability")
    value = prob.get("operating_threshold") if isinstance(prob, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if 0.0 <= value <= 1.0 else None


def suspected_infarct_text(threshold: float, ml: float, operating: float | None = None) -> str:
    """The label under the slider: what is outlined, at which threshold, and whether that is the model's own
    operating point."""
    where = (" - the model's operating point (at most 2 false clusters per case on its validation phantoms)"
             if operating is not None and abs(threshold - operating) < 1e-6 else "")
    return (f"Suspected infarct (AI, p >= {threshold:.2f}{where}): {ml:.1f} mL. SYNTHETIC; calibrated on phantoms "
            "only; a low probability never rules out an infarct.")


def training_summary(status: dict) -> str:
    """One line for the UI from GET /train/ output."""
    if not status or status.get("status") in (None, "NONE"):
        return "no training has run on this server"
    state = status.get("status")
    details = status.get("details") or []
    last_epoch = next((d for d in reversed(details) if "epoch " in d), "")
    text = f"training {state.lower()}"
    if last_epoch:
        ep = last_epoch[last_epoch.index("epoch ") :].split(" {")[0]
        text += f" - {ep}"
    if status.get("end_ts"):
        text += f" (ended {status['end_ts']})"
    return text


def version_label(v: dict) -> str:
    """One combo-box entry for a model version from GET /train/ct2dwi/versions."""
    name = "v0 (demo)" if v.get("id") == 0 else f"v{v.get('id')}"
    val = v.get("validation") or {}
    parts = [name]
    if v.get("published"):
        parts.append(v["published"].replace("T", " "))
    if val.get("psnr_brain") is not None:
        parts.append(f"PSNR {val['psnr_brain']:.1f} dB")
    if val.get("lesion_sensitivity") is not None:
        parts.append(f"lesions {val['lesion_sensitivity']:.0%}")
    if v.get("served"):
        parts.append("[serving]")
    elif v.get("candidate"):
        parts.append("[candidate" + (": WORSE on lesions]" if promotion_warning(v) else "]"))
    return " – ".join(parts)


def promotion_warning(v: dict) -> str:
    """Why serving this candidate needs a confirmation ("" when it does not): the server's comparison with the
    served version on the same validation cases found it worse on lesions."""
    worse = ((v.get("comparison") or {}).get("worse_on_lesions")) or []
    if not v.get("candidate") or not worse:
        return ""
    return "Worse on lesions than the served version: " + "; ".join(worse)


class BackgroundCall:
    """Runs ``fn(*args)`` in a worker thread; the GUI polls ``done``/``result()`` from a timer so the
    UI never freezes. Exceptions are kept and re-raised by ``result()``."""

    def __init__(self, fn: Callable[..., Any], *args, **kwargs):
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._result = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, name="CT2DWI-worker", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self._result = self._fn(*self._args, **self._kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread
            self._error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        return time.time() - self.started

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self):
        if not self.done:
            raise RuntimeError("background call still running")
        if self._error is not None:
            raise self._error
        return self._result
