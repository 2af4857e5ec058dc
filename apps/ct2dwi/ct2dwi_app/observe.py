"""Observability of the CT-to-DWI server: JSON access and audit lines, Prometheus metrics, software facts.

* ``Observe`` (pure ASGI middleware): one JSON line per request on the ``ct2dwi.access`` logger (method, path
  without its query - ids and tokens stay out of the log -, status, milliseconds) and the Prometheus request
  counter and latency histogram, labelled by a route template (digits -> {n}, unknown paths -> other);
* ``audit`` : one JSON line per inference on ``ct2dwi.audit`` (user, SHA-256 of the input - never a name or a
  pixel -, model version, device, seconds, outcome) and the inference counter/histogram;
* ``software()``: package version, git commit, torch version.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import subprocess
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
REQUESTS = Counter("ct2dwi_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("ct2dwi_request_seconds", "HTTP request latency", ["route"], registry=REGISTRY,
                    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
INFERENCES = Counter("ct2dwi_inferences_total", "inferences by outcome", ["outcome"], registry=REGISTRY)
INFER_SECONDS = Histogram("ct2dwi_inference_seconds", "inference duration (successful)", registry=REGISTRY,
                          buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
QUEUE = Gauge("ct2dwi_inference_queue", "inferences waiting for a slot", registry=REGISTRY)
RUNNING = Gauge("ct2dwi_inferences_running", "inferences running", registry=REGISTRY)
TRAINING = Gauge("ct2dwi_training_running", "1 while a training run is in progress", registry=REGISTRY)

access_log = logging.getLogger("ct2dwi.access")
audit_log = logging.getLogger("ct2dwi.audit")
KNOWN = ("/healthz", "/readyz", "/metrics", "/info/", "/infer/", "/train/", "/datastore/", "/logs/", "/ui/", "/auth/")


def route_of(path: str) -> str:
    if path == "/" or any(path.startswith(k.rstrip("/")) for k in KNOWN):
        return re.sub(r"/\d+(?=/|$)", "/{n}", path)
    return "other"


class Observe:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            return await self.app(scope, receive, send_and_note)
        finally:
            dt = time.perf_counter() - t0
            route = route_of(scope.get("path", ""))
            REQUESTS.labels(scope["method"], route, str(status["code"])).inc()
            LATENCY.labels(route).observe(dt)
            access_log.info(json.dumps({"event": "access", "method": scope["method"], "path": scope.get("path", ""),
                                        "status": status["code"], "ms": round(dt * 1000, 1),
                                        "client": (scope.get("client") or ("", 0))[0]}))


def audit(user: str, input_sha256: str, version, device: str, seconds: float, outcome: str) -> None:
    INFERENCES.labels(outcome).inc()
    if outcome == "ok":
        INFER_SECONDS.observe(seconds)
    audit_log.info(json.dumps({"event": "inference", "user": user, "input_sha256": input_sha256, "model_version": version,
                               "device": device, "seconds": round(seconds, 3), "outcome": outcome,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))


def audit_event(event: str, user: str, **details) -> None:
    """One JSON line per training start/stop and version promote/rollback: who, when, what."""
    audit_log.info(json.dumps({"event": event, "user": user, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details},
                              default=str))


def metrics_text() -> bytes:
    return generate_latest(REGISTRY)


@functools.lru_cache(maxsize=1)
def software() -> dict:
    import torch

    from jmmda_model import __version__

    here = Path(__file__).resolve().parents[3]
    commit = "unknown"
    try:
        r = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                           timeout=5)
        if r.returncode == 0:
            commit = r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import os

    return {"jmmda": __version__, "git_commit": os.environ.get("CT2DWI_GIT_COMMIT", commit), "torch": torch.__version__,
            "cuda_available": bool(torch.cuda.is_available())}
