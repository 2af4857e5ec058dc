"""Candidate model versions: compared with the served version on the same validation cases, published without
going live, promoted only by an admin (with a confirmation when the candidate is worse on lesions).

* ``validation_cases``: the datastore's paired cases, split as training splits them (the last ``val_fraction``);
* ``compare_with_served``: lesion metrics first, then PSNR/SSIM, of the candidate and of the served version
  (the demo, version 0, included) on those cases through the ``jmmda infer`` pipeline (``report.score_model``);
* ``publish_external``: a checkpoint, TorchScript export or bundle zip trained elsewhere becomes a candidate
  with the same checks a finished training run gets.
"""
from __future__ import annotations

import time
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


def compare_with_served(versions, model_path: str | Path, cases: list, device: str = "auto") -> dict:
    """Both models on the same cases; ``worse_on_lesions`` lists where the candidate is worse (empty: not worse)."""
    record = {"cases": [c.id for c in cases], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not cases:
        return {**record, "note": "no paired cases (CT + dwi + brainmask) in the datastore: not compared",
                "worse_on_lesions": []}
    cand = score_model(model_path, cases, device=device)
    sid = versions.served_id()
    served = score_model(versions.path(sid), cases, device=device) if sid is not None else None
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
