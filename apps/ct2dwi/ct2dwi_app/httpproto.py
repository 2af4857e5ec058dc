"""uvicorn's h11 protocol with a request-head timeout (CT2DWI_HEADER_TIMEOUT_S, default 10 s).

uvicorn times out idle keep-alive connections only after a response; a client that connects and sends half a
request head (or nothing) holds its connection for ever, and ``--limit_concurrency`` counts it, so enough
half-open sockets make every new client get 503. Here each connection waiting for a request head has that
long to finish it; past that it is closed. Bodies have their own timeout (uploads.BodyLimit)."""
from __future__ import annotations

import logging
import os

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = float(os.environ.get("CT2DWI_HEADER_TIMEOUT_S", "10"))


class HeadTimeoutH11Protocol(H11Protocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = None
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # h11 leaves IDLE once a whole request head has arrived; bytes of a next head re-arm the timer
        if self.conn.their_state is h11.IDLE and self.cycle_done():
            self._arm()
        else:
            self._disarm()

    def cycle_done(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and self.cycle_done() and not self.transport.is_closing():
            log.warning("closed a connection from %s: no complete request head within %g s (CT2DWI_HEADER_TIMEOUT_S)",
                        self.client[0] if self.client else "?", HEADER_TIMEOUT_S)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


def install() -> None:
    """Makes uvicorn's "auto" and "h11" choices use this protocol (call before uvicorn.run, in one process)."""
    import uvicorn.config

    target = f"{__name__}:HeadTimeoutH11Protocol"
    uvicorn.config.HTTP_PROTOCOLS["h11"] = target
    uvicorn.config.HTTP_PROTOCOLS["auto"] = target
