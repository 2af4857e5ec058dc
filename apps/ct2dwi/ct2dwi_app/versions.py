"""Model versions: every published model is kept; one of them is served; promote/roll back atomically.

Layout under the app's ``model/`` folder::

    versions/v1/model.pt, versions/v1/meta.json     one folder per published model (never modified)
    served.json                                     {"version": N, "time": ..., "previous": M}
    jmmda_demo.pt                                   version 0: the shipped phantom-trained demo model

A version folder is written under a temporary name and renamed into place only when complete (model loaded
back and checked); the served pointer is replaced by an atomic rename of a fully written, fsynced file. A
crash at any point therefore leaves exactly one valid served model: the old pointer or the new one. Readers
that find no pointer (or an unusable one) serve the newest valid version, else the demo model. A file lock
serialises writers across processes (the training subprocess publishes while the server may promote).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from jmmda_model.checkpoint import CheckpointError, load

log = logging.getLogger(__name__)
_VDIR = re.compile(r"v(\d{1,6})")


class VersionError(LookupError):
    """A version that cannot be served (HTTP 409)."""


class UnknownVersion(VersionError):
    """No such version (HTTP 404)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class ModelVersions:
    def __init__(self, model_dir: str | Path, demo: str | Path | None = None):
        self.model_dir = Path(model_dir)
        self.dir = self.model_dir / "versions"
        self.pointer = self.model_dir / "served.json"
        self.demo = Path(demo) if demo is not None and Path(demo).is_file() else None
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ reading
    def ids(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _VDIR.fullmatch(p.name)) and p.is_dir())

    def path(self, vid: int) -> Path | None:
        if vid == 0:
            return self.demo
        p = self.dir / f"v{vid}" / "model.pt"
        return p if p.is_file() else None

    def meta(self, vid: int) -> dict:
        if vid == 0:
            return {"id": 0, "name": "demo", "source": "shipped phantom-trained demo model (jmmda_demo.pt)"}
        try:
            return json.loads((self.dir / f"v{vid}" / "meta.json").read_text())
        except (OSError, ValueError):
            return {"id": vid, "note": "meta.json unreadable"}

    def served_id(self) -> int | None:
        try:
            vid = int(json.loads(self.pointer.read_text())["version"])
            if self.path(vid) is not None:
                return vid
            log.error("served.json names version %s, which is missing; serving the newest valid version", vid)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("served.json unreadable (%s); serving the newest valid version", exc)
        ids = [v for v in self.ids() if not self._unpromoted_candidate(v)]  # candidates never go live by default
        if ids:
            return ids[-1]
        return 0 if self.demo is not None else None

    def _unpromoted_candidate(self, vid: int) -> bool:
        m = self.meta(vid)
        return bool(m.get("candidate")) and not m.get("ever_served")

    def served_path(self) -> Path | None:
        vid = self.served_id()
        return None if vid is None else self.path(vid)

    def list(self) -> list[dict]:
        served = self.served_id()
        out = [{**self.meta(0), "id": 0}] if self.demo is not None else []
        out += [{**self.meta(v), "id": v} for v in self.ids()]
        for v in out:
            v["served"] = v["id"] == served
            # a candidate: published by training and never served yet (it goes live only when an admin promotes it)
            v["candidate"] = bool(v.get("candidate")) and not v.get("ever_served") and not v["served"]
        return out

    # ------------------------------------------------------------------ writing
    @contextmanager
    def _locked(self):
        with open(self.model_dir / ".versions.lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def sweep(self) -> None:
        """Removes half-written version folders and pointer files left by a process that died."""
        import psutil

        for p in [*self.dir.glob(".tmp-v*-*"), *self.model_dir.glob(".served.json.*.tmp")]:
            m = re.search(r"[.-](\d+)(\.tmp)?$", p.name)
            if m and psutil.pid_exists(int(m.group(1))) and int(m.group(1)) != os.getpid():
                continue  # still being written by a live process
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def publish(self, model_file: str | Path, meta: dict, promote: bool = True) -> int:
        """Copies a trained checkpoint in as a new version (and serves it with ``promote``; otherwise the served
        version is pinned first, so the new one cannot become served by being the newest); returns its id."""
        load(model_file)  # refuse an unreadable checkpoint before anything is written
        with self._locked():
            if not promote and not self.pointer.exists() and self.served_id() is not None:
                _atomic_write_json({"version": self.served_id(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "previous": None}, self.pointer)
            vid = (self.ids() or [0])[-1] + 1
            tmp = self.dir / f".tmp-v{vid}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                shutil.copyfile(model_file, tmp / "model.pt")
                with open(tmp / "model.pt", "rb") as f:
                    os.fsync(f.fileno())
                load(tmp / "model.pt")
                full = {**meta, "id": vid, "published": time.strftime("%Y-%m-%dT%H:%M:%S")}
                _atomic_write_json(full, tmp / "meta.json")
                os.rename(tmp, self.dir / f"v{vid}")
                _fsync_dir(self.dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if promote:
                self._promote_locked(vid)
        log.info("published model version %d", vid)
        return vid

    def promote(self, vid: int) -> dict:
        with self._locked():
            return self._promote_locked(vid)

    def _promote_locked(self, vid: int) -> dict:
        path = self.path(vid)
        if path is None:
            raise UnknownVersion(f"model version {vid} does not exist")
        try:
            load(path)
        except CheckpointError as exc:
            raise VersionError(f"model version {vid} is unusable: {exc}") from exc
        record = {"version": vid, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "previous": self.served_id()}
        if vid != 0:  # remembered in the version: it is no longer a candidate
            meta_path = self.dir / f"v{vid}" / "meta.json"
            try:
                m = json.loads(meta_path.read_text())
                if not m.get("ever_served"):
                    _atomic_write_json({**m, "ever_served": record["time"]}, meta_path)
            except (OSError, ValueError):
                pass
        _atomic_write_json(record, self.pointer)
        return record

    def update_meta(self, vid: int, patch: dict) -> None:
        """Merges ``patch`` into a version's meta.json (e.g. a new comparison); the model file is never touched.
        The demo (version 0) keeps no metadata: nothing is written for it."""
        if vid == 0:
            return
        with self._locked():
            meta_path = self.dir / f"v{vid}" / "meta.json"
            if not meta_path.parent.is_dir():
                raise UnknownVersion(f"model version {vid} does not exist")
            _atomic_write_json({**self.meta(vid), **patch}, meta_path)

    def import_legacy(self, legacy: str | Path) -> int | None:
        """A model published before versions existed (``model/jmmda.pt``) becomes version 1."""
        legacy = Path(legacy)
        if self.ids() or not legacy.is_file():
            return None
        try:
            return self.publish(legacy, {"source": f"{legacy.name} (published before model versions)"})
        except CheckpointError as exc:
            log.error("ignoring unusable %s: %s", legacy.name, exc)
            return None
