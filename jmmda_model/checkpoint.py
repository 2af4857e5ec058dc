"""Checkpoints: atomic writes, format checks and clear errors for corrupt files."""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT = "jmmda-gan-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    pass


def atomic_write_bytes(data, path: str | Path, mode: int | None = None) -> Path:
    """Writes ``data`` to a temp file in the same folder, fsyncs it, then renames it over ``path`` (``mode``: its
    permissions; default the temp file's 0600). A crash at any point leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def write_json_atomic(obj, path: str | Path) -> None:
    """JSON written under a temporary name (``.<name>.<pid>.tmp``) and renamed over ``path``: readers of a status
    file never see half of it (numpy scalars are written as floats)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def zip_members(path: str | Path) -> list[str]:
    """Member names of a zip archive (torch checkpoints and TorchScript files are zips); [] for anything else."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (OSError, zipfile.BadZipFile):
        return []


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save, written atomically (see ``atomic_write_bytes``): never a torn checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(buf.getbuffer(), path)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if any("/code/" in n for n in zip_members(path)):  # torch.load would hand a TorchScript archive to torch.jit.load
        raise CheckpointError(f"{path.name} is a TorchScript file that is not a JMMDA-GAN export (jmmda export-torchscript)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated / corrupt / not a torch file
        raise CheckpointError(f"checkpoint {path.name} is corrupt or not a JMMDA-GAN checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a JMMDA-GAN checkpoint (format tag missing)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path.name} was written by a newer jmmda_model (version {ckpt['version']})")
    for key in ("generator", "generator_config", "preprocess"):
        if key not in ckpt:
            raise CheckpointError(f"{path.name} lacks '{key}'")
    return ckpt


def export_inference(ckpt: dict, path: str | Path, model_card: dict | None = None) -> Path:
    """Writes the generator-only checkpoint used for inference (no optimiser/discriminator state)."""
    slim = {k: ckpt[k] for k in ("format", "version", "generator", "generator_config", "preprocess")}
    for k in ("epoch", "global_step", "val_metrics", "train_cases", "created", "lesion_calibration"):
        if k in ckpt:
            slim[k] = ckpt[k]
    slim["model_card"] = model_card or ckpt.get("model_card", {})
    return atomic_save(slim, path)
