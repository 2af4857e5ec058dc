"""Training follows the server's life (#21 item 2), on a real server over loopback: SIGTERM and SIGKILL of the
server during training stop the training child; a restarted server reports the run truthfully and can start
again; a lock in the run folder keeps a second run out; Stop leaves a status that says stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from server_utils import Server, sample_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

LONG_RUN = {"epochs": 500, "batch_size": 2, "max_steps_per_epoch": 2, "val_fraction": 0.5}


def _run_status(url):
    return requests.get(f"{url}/train/ct2dwi/status", timeout=30).json()


def _start_and_wait_running(srv) -> psutil.Process:
    r = requests.post(f"{srv.url}/train/ct2dwi", json=LONG_RUN, timeout=30)
    assert r.status_code == 200, r.text
    status = srv.app_dir / "model" / "train_run" / "status.json"
    t0 = time.time()
    while time.time() - t0 < 180:  # running, with at least one epoch written
        try:
            st = json.loads(status.read_text())
            if st.get("state") == "running" and st.get("epoch", 0) >= 1:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    else:
        raise TimeoutError(srv.log()[-3000:])
    kids = psutil.Process(srv.proc.pid).children(recursive=True)
    assert kids, "no training child"
    return kids[0]


def _state(app_dir):
    return json.loads((app_dir / "model" / "train_run" / "status.json").read_text())


def _gone(proc: psutil.Process, timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return True
    except psutil.TimeoutExpired:
        return False


def _end_server_during_training(srv, sig, reason_word: str, wait_child: float) -> None:
    """Starts a long run, ends the server with ``sig`` and checks that the child went too and said why."""
    try:
        child = _start_and_wait_running(srv)
        srv.proc.send_signal(sig)
        srv.proc.wait(60)
        assert _gone(child, wait_child), f"the training child outlived the server ({sig!r})"
        st = _state(srv.app_dir)
        assert st["state"] == "stopped" and reason_word in st["stop_reason"], st
    finally:
        srv.stop()


def test_training_stops_with_the_server_and_the_restarted_server_tells_the_truth(tmp_path):
    srv = sample_server(tmp_path, n=2).wait()
    app_dir, studies = srv.app_dir, srv.studies
    # 1. SIGTERM: the server stops its child (which finishes its step and says so) and exits
    _end_server_during_training(srv, signal.SIGTERM, "server", wait_child=5)
    srv = Server(app_dir, studies).wait()
    body = _run_status(srv.url)
    assert body["run"]["state"] == "stopped" and body["task"] == {"status": "NONE"}
    # 2. SIGKILL: no handler runs in the server; the child sees it re-parented and stops by itself
    _end_server_during_training(srv, signal.SIGKILL, "killed", wait_child=30)

    srv = Server(app_dir, studies).wait()
    try:
        assert _run_status(srv.url)["run"]["state"] == "stopped"
        # 3. the run folder's lock: a process holding it keeps a new run out, named in the 409
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); from ct2dwi_app.train import run_lock\n"
             "from pathlib import Path\nwith run_lock(Path(sys.argv[2])):\n    print('held', flush=True); time.sleep(60)",
             str(app_dir), str(app_dir / "model" / "train_run")], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(app_dir)})
        try:
            assert holder.stdout.readline().strip() == "held"
            r = requests.post(f"{srv.url}/train/ct2dwi", json=LONG_RUN, timeout=30)
            assert r.status_code == 409 and str(holder.pid) in r.json()["detail"], r.text
        finally:
            holder.kill()
            holder.wait()
        # 4. Stop from the page's route: the task says STOPPED and the run says stopped (never "running")
        child = _start_and_wait_running(srv)
        r = requests.post(f"{srv.url}/train/ct2dwi", json=LONG_RUN, timeout=30)
        assert r.status_code == 409
        r = requests.delete(f"{srv.url}/train/", timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "STOPPED"
        assert _gone(child, 5)
        body = _run_status(srv.url)
        assert body["task"]["status"] == "STOPPED" and body["run"]["state"] == "stopped", body
        assert "Stop by" in body["run"]["stop_reason"] or "stopped by the server" in body["run"]["stop_reason"]
    finally:
        srv.stop()
