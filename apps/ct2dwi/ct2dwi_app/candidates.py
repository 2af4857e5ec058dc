"""Candidate model versions: compared with the served version on the same validation cases, published without
going live, promoted only by an admin (with a confirmation when the candidate is worse on lesions).

* ``validation_cases``: the datastore's paired cases, split as training splits them (the last ``val_fraction``);
* ``compare_with_served``: lesion metrics first, then PSNR/SSIM, of the candidate and of the served version
  (the demo, version 0, included) on those cases through the ``jmmda infer`` pipeline (``report.score_model``).
  The served version's scores are kept while its file and every case file are byte for byte the same
  (``served_scores``): each further candidate compared with it costs one model's inference, not two;
* ``publish_external``: a checkpoint, TorchScript export or bundle zip trained elsewhere becomes a candidate
  with the same checks a finished training run gets.
"""
from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path

from jmmda_model.export import checkpoint_from_model_file, sha256
from jmmda_model.report import lesion_verdict, score_model

from .train import datastore_cases

#: suffixes a model upload may have
MODEL_SUFFIXES = (".pt", ".pth", ".ts", ".zip")


def validation_cases(datastore, val_fraction: float = 0.2) -> list:
    cases = datastore_cases(datastore)
    if not cases:
        return []
    n_val = max(1, int(round(len(cases) * float(val_fraction))))
    return cases[-n_val:]


#: served-version scores kept (least recently used dropped first)
SERVED_SCORES_SIZE = 4
_served_scores: OrderedDict[tuple, dict] = OrderedDict()
_served_lock = threading.Lock()


def content_digest(path: Path | None) -> str | None:
    """SHA-256 of a file, or of a folder's files (relative names and contents, in name order: a DICOM series)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256(f).encode())
    return h.hexdigest()


def served_scores(model_path: Path, cases: list, device: str) -> dict:
    """``score_model`` of the served version, kept for the next comparison while the model file and every case's
    files (CT, DWI, brain mask, lesion) hash the same; a copy is returned."""
    key = (content_digest(model_path), str(device),
           tuple((c.id, *(content_digest(p) for p in (c.ct, c.dwi, c.brainmask, c.lesion))) for c in cases))
    with _served_lock:
        hit = _served_scores.get(key)
        if hit is not None:
            _served_scores.move_to_end(key)
            return copy.deepcopy(hit)
    scores = score_model(model_path, cases, device=device)
    with _served_lock:
        _served_scores[key] = copy.deepcopy(scores)
        while len(_served_scores) > SERVED_SCORES_SIZE:
            _served_scores.popitem(last=False)
    return scores


def compare_with_served(versions, model_path: str | Path, cases: list, device: str = "auto") -> dict:
    """Both models on the same cases; ``worse_on_lesions`` lists where the candidate is worse (empty: not worse)."""
    record = {"cases": [c.id for c in cases], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not cases:
        return {**record, "note": "no paired cases (CT + dwi + brainmask) in the datastore: not compared",
                "worse_on_lesions": []}
    cand = score_model(model_path, cases, device=device)
    sid = versions.served_id()
    served = served_scores(versions.path(sid), cases, device) if sid is not None else None
    return {**record, "candidate": cand, "served": None if served is None else {"version": sid, **served},
            "worse_on_lesions": lesion_verdict(cand, served) if served else []}


def publish_external(versions, upload: Path, name: str, folder: Path, datastore, user: str,
                     device: str = "auto") -> dict:
    """Checks, converts, compares and publishes ``upload`` as a candidate; returns its id and the comparison.
    Raises CheckpointError (HTTP 422) for a file that is not a usable JMMDA-GAN model."""
    ckpt, kind = checkpoint_from_model_file(upload, folder / "converted.pt", name=name)
    comparison = compare_with_served(versions, ckpt, validation_cases(datastore), device=device)
    from jmmda_model.checkpoint import load

    card = load(ckpt).get("model_card", {})
    vid = versions.publish(ckpt, {
        "candidate": True,
        "source": f"uploaded by {user}",
        "uploaded_file": name,
        "uploaded_sha256": sha256(upload),
        "format": kind,
        "comparison": comparison,
        "model_card": card,
    }, promote=False)
    return {"version": vid, "candidate": True, "format": kind, "comparison": comparison}
