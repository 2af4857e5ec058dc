"""What the module's widgets show, as a pure-python state machine (no Qt): the Qt glue only maps a ``View``
onto widgets, so every rule here is tested with pytest.

Phases of a server job (synthesis, training status/stop, versions):

    idle --start--> running --worker returns--> done | error
    running --cancel--> cancelling --worker returns--> idle ("cancelled"; a late result is discarded)
    any --reset (scene closed, module left)--> idle, the running job abandoned

A job's temporary files (the exported CT and mask) are removed when the job ends, whatever the path.
An exception raised while *showing* a result ends in the error phase, never in a status stuck on
"Synthesizing... N s".
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .logic import BackgroundCall

IDLE, RUNNING, CANCELLING, DONE, ERROR = "idle", "running", "cancelling", "done", "error"


class Cancelled(Exception):
    """The user cancelled the job."""


@dataclass(frozen=True)
class View:
    phase: str
    status: str
    error: bool
    busy: bool  # progress bar shown
    run_enabled: bool
    cancel_enabled: bool
    connect_enabled: bool
    train_enabled: bool


class TempFolder:
    """A private temporary folder for one job's files; ``cleanup`` is idempotent."""

    def __init__(self, prefix: str = "CT2DWI_"):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def exists(self) -> bool:
        return self.path.exists()


class JobRunner:
    """One server job at a time, run in a worker thread; ``poll`` (from a GUI timer) returns the View."""

    def __init__(self):
        self.phase = IDLE
        self.status = "Ready"
        self.error = False
        self.what = ""
        self._call: BackgroundCall | None = None
        self._cancel: threading.Event | None = None
        self._files: TempFolder | None = None
        self._on_done: Callable[[Any], str | None] | None = None

    # ------------------------------------------------------------------ transitions
    def start(self, what: str, fn: Callable[[threading.Event], Any], on_done: Callable[[Any], str | None],
              files: TempFolder | None = None) -> None:
        """Runs ``fn(cancel_event)`` in a worker; ``on_done(result)`` (GUI thread) returns the status text."""
        if self.phase in (RUNNING, CANCELLING):
            if files is not None:
                files.cleanup()
            raise RuntimeError(f"'{self.what}' is still running; cancel it or wait")
        self.phase, self.what, self.error = RUNNING, what, False
        self.status = f"{what}..."
        self._cancel = threading.Event()
        self._files = files
        self._on_done = on_done
        self._call = BackgroundCall(fn, self._cancel)

    def cancel(self) -> None:
        if self.phase != RUNNING:
            return
        self.phase = CANCELLING
        self.status = f"Cancelling {self.what.lower()}..."
        self._cancel.set()

    def reset(self, reason: str = "Ready") -> None:
        """Abandons a running job (scene closed, module left): its result will be ignored, files removed."""
        if self._cancel is not None:
            self._cancel.set()
        self._finish_files()
        self._call = None
        self.phase, self.status, self.error = IDLE, reason, False

    def fail(self, message: str) -> None:
        """An error found before a job starts (no CT selected, cannot write the inputs, ...)."""
        if self.phase in (RUNNING, CANCELLING):
            return
        self.phase, self.status, self.error = ERROR, message, True

    def poll(self) -> View:
        call = self._call
        if call is not None and self.phase in (RUNNING, CANCELLING):
            if not call.done:
                if self.phase == RUNNING:
                    self.status = f"{self.what}... {call.elapsed:.0f} s"
            else:
                self._call = None
                cancelled = self.phase == CANCELLING
                try:
                    result = call.result()
                    if cancelled:
                        raise Cancelled()
                    message = self._on_done(result) if self._on_done else None
                    self.phase, self.status, self.error = DONE, message or f"{self.what}: done", False
                except Cancelled:
                    self.phase, self.status, self.error = IDLE, f"{self.what}: cancelled", False
                except Exception as exc:  # noqa: BLE001 - every failure reaches the user
                    self.phase, self.error = ERROR, True
                    self.status = str(exc) if exc.__class__.__name__ == "ServerError" else f"{self.what} failed: {exc}"
                finally:
                    self._finish_files()
        return self.view()

    def _finish_files(self) -> None:
        if self._files is not None:
            self._files.cleanup()
            self._files = None

    # ------------------------------------------------------------------ what the widgets show
    def view(self, has_ct: bool = True) -> View:
        busy = self.phase in (RUNNING, CANCELLING)
        return View(
            phase=self.phase, status=self.status, error=self.error, busy=busy,
            run_enabled=has_ct and not busy, cancel_enabled=self.phase == RUNNING,
            connect_enabled=not busy, train_enabled=not busy,
        )


def cancellable(fn: Callable[[], Any], cancel: threading.Event, poll_s: float = 0.1) -> Any:
    """Runs a blocking call (an HTTP request) in an inner thread and returns its result, or raises
    Cancelled as soon as ``cancel`` is set; the abandoned call's result is dropped when it arrives."""
    box: dict = {}
    done = threading.Event()

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="CT2DWI-request", daemon=True).start()
    while not done.wait(poll_s):
        if cancel.is_set():
            raise Cancelled()
    if cancel.is_set():
        raise Cancelled()
    if "error" in box:
        raise box["error"]
    return box["result"]
