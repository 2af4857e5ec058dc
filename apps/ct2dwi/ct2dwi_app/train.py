"""MONAI Label train task: retrains JMMDA-GAN on the datastore's paired cases.

Datastore convention: image = CT; labels with tags ``dwi``, ``brainmask`` and (optional) ``lesion``.
MONAI Label runs this in a subprocess (POST /train/ct2dwi) and kills it on DELETE /train. The run
folder keeps atomic checkpoints (an interrupted run resumes with ``{"resume": true}``); the new model is
published only when training finishes, as a new model version (ct2dwi_app/versions.py) that is served at
once, the previous versions kept for roll-back, so a stopped or crashed training always leaves the served
model in place and valid. The run's status.json (progress, ETA, losses and validation metrics per epoch) and
samples/latest.png (CT | real DWI | SYNTHETIC DWI of a validation case) feed the training page.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from jmmda_model.checkpoint import load
from jmmda_model.data import Case
from jmmda_model.distributed import launch
from jmmda_model.errors import InputError
from jmmda_model.inference import DeviceError, pick_device
from jmmda_model.networks import GeneratorConfig
from jmmda_model.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)

DEFAULTS = {
    "epochs": 10,
    "batch_size": 8,
    "lr": 1e-4,
    "val_fraction": 0.2,
    "max_steps_per_epoch": 0,
    "fine_tune": True,
    "resume": False,
    "device": "auto",
    # DistributedDataParallel under torchrun, as MONAI Label's own apps name it: multi_gpu + gpus ("all" or "0,1");
    # nproc_per_node > 0 sets the process count instead (gloo on CPU); batch_size is the global batch
    "multi_gpu": False,
    "gpus": "all",
    "nproc_per_node": 0,
}
#: keys MONAI Label itself adds to a training request; ignored by validation
_RUNNER_KEYS = {"model", "local_rank", "bundle_path", "client_id"}
_INT_RANGES = {"epochs": (1, 10000), "batch_size": (1, 256), "max_steps_per_epoch": (0, 10**7), "nproc_per_node": (0, 64)}
_FLOAT_RANGES = {"lr": (0.0, 1.0), "val_fraction": (0.0, 0.9)}


def validate_options(request: dict) -> dict:
    """Training options merged over DEFAULTS; InputError (HTTP 422) names every bad or unknown option."""
    if not isinstance(request, dict):
        raise InputError("training options must be a JSON object")
    errors = []
    unknown = sorted(k for k in request if k not in DEFAULTS and k not in _RUNNER_KEYS)
    if unknown:
        errors.append(f"unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(DEFAULTS)}")
    opts = dict(DEFAULTS)
    for key, value in request.items():
        if key not in DEFAULTS:
            continue
        if key in _INT_RANGES:
            lo, hi = _INT_RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                errors.append(f"{key} must be an integer from {lo} to {hi}, got {value!r}")
                continue
        elif key in _FLOAT_RANGES:
            lo, hi = _FLOAT_RANGES[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
                errors.append(f"{key} must be a number above {lo} and at most {hi}, got {value!r}")
                continue
            value = float(value)
        elif key == "gpus":
            if not isinstance(value, str) or not re.fullmatch(r"all|\d{1,3}(,\d{1,3}){0,63}", value) or (
                    value != "all" and len(set(value.split(","))) != len(value.split(","))):
                errors.append(f"gpus must be \"all\" or distinct GPU indices like \"0,1\", got {value!r}")
                continue
        elif key in ("fine_tune", "resume", "multi_gpu"):
            if not isinstance(value, bool):
                errors.append(f"{key} must be true or false, got {value!r}")
                continue
        elif key == "device":
            try:
                pick_device(value if isinstance(value, str) else repr(value))
            except DeviceError as exc:
                errors.append(str(exc))
                continue
        opts[key] = value
    if not errors and opts["multi_gpu"]:
        n = opts["nproc_per_node"] or (len(opts["gpus"].split(",")) if opts["gpus"] != "all" else 0)
        if n and opts["batch_size"] % n:
            errors.append(f"batch_size {opts['batch_size']} (the global batch) must be a multiple of the {n} processes")
    if errors:
        raise InputError("invalid training options: " + "; ".join(errors))
    return opts


def process_count(opts: dict) -> tuple[int, list[int] | None]:
    """(processes, GPU indices or None) of a validated request; 1 process unless multi_gpu finds 2 or more."""
    if not opts["multi_gpu"]:
        return 1, None
    gpus = None if opts["gpus"] == "all" else [int(g) for g in opts["gpus"].split(",")]
    if opts["nproc_per_node"]:
        return int(opts["nproc_per_node"]), gpus
    import torch

    n = (torch.cuda.device_count() if gpus is None else len(gpus)) if opts["device"] != "cpu" and torch.cuda.is_available() else 0
    if n < 2:
        log.info("multi_gpu requested but %d GPU(s) usable: training in one process", n)
        return 1, None
    return n, gpus


def datastore_cases(datastore: Datastore) -> list[Case]:
    cases = []
    for image_id in sorted(datastore.list_images()):
        uris = {tag: datastore.get_label_uri(image_id, tag) for tag in ("dwi", "brainmask", "lesion")}
        if uris["dwi"] and uris["brainmask"]:
            cases.append(
                Case(image_id, Path(datastore.get_image_uri(image_id)), Path(uris["dwi"]), Path(uris["brainmask"]),
                     Path(uris["lesion"]) if uris["lesion"] else None)
            )
    return cases


class CT2DWITrain(TrainTask):
    def __init__(self, model_dir: Path, versions):
        super().__init__("Retrain JMMDA-GAN on datastore pairs (image=CT; labels dwi, brainmask[, lesion])")
        self.model_dir = Path(model_dir)
        self.versions = versions
        self.run_dir = self.model_dir / "train_run"

    def config(self):
        return dict(DEFAULTS)

    def current_model(self) -> Path | None:
        return self.versions.served_path()

    def run_status(self) -> dict:
        """The run's status.json (progress, ETA, per-epoch losses and validation metrics), or {}."""
        f = self.run_dir / "status.json"
        if not f.exists():
            return {}
        try:
            return json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            return {"state": "unknown"}

    def stats(self):
        status = {k: v for k, v in self.run_status().items() if k != "history"}
        return {"run": status, "served_version": self.versions.served_id()}

    def __call__(self, request, datastore: Datastore):
        opts = validate_options(request)
        cases = datastore_cases(datastore)
        if len(cases) < 2:
            raise InputError(f"training needs at least 2 cases with 'dwi' and 'brainmask' labels; the datastore has {len(cases)}")
        n_val = max(1, int(round(len(cases) * float(opts["val_fraction"]))))
        train, val = cases[:-n_val], cases[-n_val:]

        base = self.current_model()
        gcfg, pre = GeneratorConfig(base_channels=16).to_dict(), None  # architecture of a model trained from scratch
        if base is not None and opts["fine_tune"]:
            ck = load(base)
            gcfg, pre = ck["generator_config"], ck["preprocess"]
        cfg = TrainConfig(
            generator=gcfg,
            epochs=int(opts["epochs"]),
            batch_size=int(opts["batch_size"]),
            lr_g=float(opts["lr"]),
            lr_d=float(opts["lr"]),
            device=str(opts["device"]),
            max_steps_per_epoch=int(opts["max_steps_per_epoch"]) or None,
            progress=False,
        )
        if pre is not None:
            cfg.preprocess = pre
        resume = bool(opts["resume"]) and (self.run_dir / "checkpoints" / "last.pt").exists()
        if not resume and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        init_from = base if (opts["fine_tune"] and not resume) else None
        nproc, gpus = process_count(opts)
        if nproc > 1:  # the same torchrun path as `jmmda train --nproc-per-node N` (it checks the batch divides)
            log.info("training in %d DDP processes (torchrun)", nproc)
            summary = launch(asdict(cfg), train, val, self.run_dir, nproc, resume=resume, init_from=init_from, gpus=gpus)
        else:
            trainer = Trainer(cfg, self.run_dir, on_epoch=lambda r: print(f"epoch {r['epoch']}/{cfg.epochs} {json.dumps(r, default=float)}", flush=True))
            summary = trainer.fit(train, val, resume=resume, init_from=init_from)
        published = None
        if summary["state"] == "finished" and summary["model"]:
            best = next((r for r in reversed(summary["history"]) if r.get("best")), summary["history"][-1] if summary["history"] else {})
            ck = load(summary["model"])
            # a finished run becomes a CANDIDATE: it goes live only when an admin promotes it (the page compares it
            # with the served version first)
            published = self.versions.publish(Path(summary["model"]), {
                "candidate": True,
                "trained": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "base_version": self.versions.served_id() if opts["fine_tune"] else None,
                "train_cases": [c.id for c in train],
                "val_cases": [c.id for c in val],
                "options": opts,
                "epochs": summary["epoch"],
                "steps": summary["global_step"],
                "best_epoch": best.get("epoch"),
                "validation": best.get("val", {}),
                "model_card": ck.get("model_card", {}),
            }, promote=False)
        return {
            "state": summary["state"],
            "epochs": summary["epoch"],
            "best_psnr_brain": summary["best_psnr_brain"],
            "train_cases": [c.id for c in train],
            "val_cases": [c.id for c in val],
            "published_version": published,
            "processes": nproc,
        }
