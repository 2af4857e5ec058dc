"""Starts the real CT-to-DWI MONAI Label server (apps/ct2dwi/serve.py) on loopback for tests."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "ct2dwi"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_app(dst: Path, with_demo: bool = True) -> Path:
    ignore = shutil.ignore_patterns("logs", "train_run", "jmmda.pt", "__pycache__", "bin", "lib", *(() if with_demo else ("*.pt",)))
    shutil.copytree(APP, dst, ignore=ignore)
    return dst


def copy_studies(dst: Path, n: int | None = None) -> Path:
    src = ROOT / "sample_data" / "studies"
    ids = sorted(p.name for p in src.glob("*.nii.gz"))[:n]
    for tag in ("dwi", "brainmask", "lesion"):
        (dst / "labels" / tag).mkdir(parents=True)
    for name in ids:
        shutil.copy(src / name, dst / name)
        for tag in ("dwi", "brainmask", "lesion"):
            shutil.copy(src / "labels" / tag / name, dst / "labels" / tag / name)
    return dst


class Server:
    def __init__(self, app_dir: Path, studies: Path, env: dict | None = None, conf: dict | None = None, extra_args=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(app_dir).parent / f"server_{self.port}.log"
        e = {**os.environ, "PYTHONUNBUFFERED": "1", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false", **(env or {})}
        args = [sys.executable, str(Path(app_dir) / "serve.py"), "--app", str(app_dir), "--studies", str(studies),
                "--host", "127.0.0.1", "--port", str(self.port), *extra_args]
        for k, v in (conf or {}).items():
            args += ["--conf", k, str(v)]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=e, cwd=str(app_dir.parent))

    def wait(self, timeout=120, path="/info/", headers=None, ok=(200,)):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                r = requests.get(self.url + path, timeout=5, headers=headers)
                if r.status_code in ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server did not start in {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        import psutil

        try:  # training subprocesses are children of the server: none may outlive it
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
        except psutil.NoSuchProcess:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
