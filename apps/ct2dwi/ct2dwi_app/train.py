"""MONAI Label train task: retrains JMMDA-GAN on the datastore's paired cases.

Datastore convention: image = CT; labels with tags ``dwi``, ``brainmask`` and (optional) ``lesion``.
MONAI Label runs this in a subprocess (POST /train/ct2dwi). The run follows the server's life
(``ServerLifeline``): SIGTERM from the server (Stop on the page, or the server shutting down) and the server's
disappearance (SIGKILL: this process is re-parented) both stop it at the next step, with status.json saying
why; a lock in the run folder (``run_lock``) keeps a second run out while one holds it. The run folder keeps
atomic checkpoints (an interrupted run resumes with ``{"resume": true}``); the new model is published only when
training finishes, as a *candidate* version (ct2dwi_app/versions.py) evaluated beside the served version on the
same validation cases; it goes live only when an admin promotes it, so a stopped or crashed training always
leaves the served model in place and valid. The run's status.json (progress, ETA, losses and validation metrics per epoch) and
samples/latest.png (CT | real DWI | SYNTHETIC DWI of a validation case) feed the training page.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from jmmda_model.checkpoint import load, write_json_atomic
from jmmda_model.data import Case
from jmmda_model.distributed import DistributedError, launch
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


class RunBusy(RuntimeError):
    """The run folder is held by a live training process (HTTP 409)."""


def _lock_path(run_dir: Path) -> Path:
    return Path(run_dir).parent / f".{Path(run_dir).name}.lock"


@contextmanager
def run_lock(run_dir: Path):
    """Exclusive lock of the run folder for this process's lifetime in the block (released by the kernel when the
    process dies, however it dies); the lock file names the holder's PID."""
    path = _lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"the training run folder is in use by process {lock_holder(run_dir)}; stop that run or "
                          "wait for it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()  # closing the descriptor releases the lock


def lock_holder(run_dir: Path) -> int | None:
    """PID of the live process holding the run folder's lock, or None."""
    path = _lock_path(run_dir)
    if not path.exists():
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def mark_stopped(run_dir: Path, status: dict, reason: str) -> dict:
    """Writes ``status`` (the run's status.json, or {} when it wrote none) as stopped, with why and when."""
    st = {**status, "state": "stopped", "stop_reason": reason, "stopped": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(st, Path(run_dir) / "status.json")
    return st


def settle_status(run_dir: Path, reason: str, stopped_run: bool = False) -> dict | None:
    """A status.json that still says "running" (or "starting") while no process holds the run folder is not
    true: it becomes "stopped" with ``reason`` (the server calls this at start-up and after a stop).
    ``stopped_run``: a run was just stopped, so a run stopped before it wrote any status gets one too. Returns
    the new status, or None when nothing was untrue."""
    try:
        st = json.loads((Path(run_dir) / "status.json").read_text())
    except FileNotFoundError:
        if not stopped_run:
            return None
        st = {"state": "running", "epoch": 0}
    except (OSError, json.JSONDecodeError):
        return None
    if st.get("state") not in ("running", "starting") or lock_holder(run_dir) is not None:
        return None
    return mark_stopped(run_dir, st, reason)


class ServerLifeline:
    """The training child's tie to the server that started it. SIGTERM (the server's Stop, or the server shutting
    down) and the server's disappearance (killed: this process is re-parented, polled every ``poll`` s) set
    ``stop``: the trainer stops at its next step, keeps the last completed epoch and writes status.json; child
    processes (torchrun workers) are terminated. ``reason`` says which."""

    def __init__(self, stop: threading.Event, poll: float = 0.5):
        self.stop, self.poll = stop, poll
        self.parent = os.getppid()
        self.reason: str | None = None
        self.stop_children = False  # torchrun and its workers (not DataLoader workers: the trainer stops those)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, lambda *a: self._trip("stopped by the server (Stop, or the server shutting down)"))
        threading.Thread(target=self._watch, name="server-lifeline", daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()  # ends the watcher
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old)

    def _watch(self):
        while not self.stop.wait(self.poll):
            if os.getppid() != self.parent:
                self._trip("the server process ended during training (killed)")
                return

    def _trip(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.warning("training stops: %s", reason)
        self.stop.set()
        if not self.stop_children:
            return
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass


def _say(text: str) -> None:
    """A line for the server's task log; the server may be gone (broken pipe): then nobody listens."""
    try:
        print(text, flush=True)
    except (BrokenPipeError, OSError):
        pass


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

    RUNS_KEPT = 20

    @property
    def history_dir(self) -> Path:
        return self.model_dir / "run_history"

    def archive_run(self) -> Path | None:
        """Keeps the finished/stopped run's curves (its status.json) before a new run replaces the run folder, so
        the page can overlay earlier runs; the newest RUNS_KEPT are kept."""
        st = self.run_status()
        if not st.get("history") and not st.get("steps"):
            return None
        self.history_dir.mkdir(parents=True, exist_ok=True)
        ended = time.strftime("%Y%m%dT%H%M%S", time.localtime((self.run_dir / "status.json").stat().st_mtime))
        dest = self.history_dir / f"run-{ended}.json"
        write_json_atomic({**st, "ended": ended}, dest)
        for old in sorted(self.history_dir.glob("run-*.json"))[:-self.RUNS_KEPT]:
            old.unlink(missing_ok=True)
        return dest

    def resumes(self, opts: dict) -> bool:
        """Whether a run with these options goes on from the run folder's checkpoint (else it starts afresh)."""
        return bool(opts.get("resume")) and (self.run_dir / "checkpoints" / "last.pt").exists()

    def mark_starting(self, opts: dict) -> None:
        """Called by the server as it starts a run: the previous run's curves are archived and status.json says
        "starting" at once, so the page never shows the previous run's state for the new one."""
        if self.resumes(opts):
            return
        self.archive_run()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"state": "starting", "epochs": opts.get("epochs")}, self.run_dir / "status.json")

    def runs(self) -> list[dict]:
        """Earlier runs (oldest first) and the current one: id, state, per-epoch history and per-step losses."""
        out = []
        for f in sorted(self.history_dir.glob("run-*.json")) if self.history_dir.is_dir() else []:
            try:
                st = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            out.append({"id": f.stem, "state": st.get("state"), "history": st.get("history", []),
                        "steps": st.get("steps", [])})
        cur = self.run_status()
        if cur.get("history") or cur.get("steps"):
            out.append({"id": "current", "state": cur.get("state"), "history": cur.get("history", []),
                        "steps": cur.get("steps", [])})
        return out

    def stats(self):
        status = {k: v for k, v in self.run_status().items() if k != "history"}
        return {"run": status, "served_version": self.versions.served_id()}

    def __call__(self, request, datastore: Datastore):
        opts = validate_options(request)
        stop = threading.Event()
        with run_lock(self.run_dir), ServerLifeline(stop) as lifeline:
            try:
                result = self._train(opts, datastore, lifeline)
            except DistributedError:
                if lifeline.reason is None:
                    raise
                result = {"state": "stopped"}
            if lifeline.reason is not None:
                mark_stopped(self.run_dir, self.run_status(), lifeline.reason)
                result["stop_reason"] = lifeline.reason
            return result

    def _train(self, opts: dict, datastore: Datastore, lifeline: ServerLifeline) -> dict:
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
        resume = self.resumes(opts)
        if not resume and self.run_dir.exists():
            self.archive_run()  # a no-op after the server's mark_starting; kept for a run started another way
            shutil.rmtree(self.run_dir)
        init_from = base if (opts["fine_tune"] and not resume) else None
        nproc, gpus = process_count(opts)
        if nproc > 1:  # the same torchrun path as `jmmda train --nproc-per-node N` (it checks the batch divides)
            log.info("training in %d DDP processes (torchrun)", nproc)
            lifeline.stop_children = True
            summary = launch(asdict(cfg), train, val, self.run_dir, nproc, resume=resume, init_from=init_from, gpus=gpus)
        else:
            trainer = Trainer(cfg, self.run_dir, stop_event=lifeline.stop,
                              on_epoch=lambda r: _say(f"epoch {r['epoch']}/{cfg.epochs} {json.dumps(r, default=float)}"))
            summary = trainer.fit(train, val, resume=resume, init_from=init_from)
        published = None
        if summary["state"] == "finished" and summary["model"]:
            from .candidates import compare_with_served

            best = next((r for r in reversed(summary["history"]) if r.get("best")), summary["history"][-1] if summary["history"] else {})
            ck = load(summary["model"])
            # the served version (the demo included) and the candidate on the same validation cases, same pipeline
            _say("comparing the candidate with the served version on the validation cases")
            comparison = compare_with_served(self.versions, summary["model"], val, device=str(opts["device"]))
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
                "comparison": comparison,
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
