"""Running the app with uvicorn so that stopping it (SIGTERM, Ctrl+C) takes seconds, not minutes.

uvicorn's graceful shutdown waits for every request in progress, and the app's lifespan
shutdown runs only after that; requests waiting on queued computations would keep the process
alive until all of them ran. :class:`AnnotatorServer` cancels the service's work as soon as the
signal arrives: queued jobs are dropped (their requests answer 503), a running "everything"
stops at its next decoder batch, and only a job already inside one model call finishes it.
"""
from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI

GRACEFUL_SHUTDOWN_S = 2  # then requests still waiting on a running model call are cancelled


class AnnotatorServer(uvicorn.Server):
    """A uvicorn server that cancels the app's queued and running work when asked to exit."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        service = getattr(self.config.app.state, "service", None)
        if service is not None and self._loop is not None and not self._loop.is_closed():
            # a signal handler may interrupt code holding the service's locks: close on the loop
            self._loop.call_soon_threadsafe(service.close)


def make_server(app: FastAPI, host: str, port: int, log_level: str = "warning") -> AnnotatorServer:
    """The server for ``app`` on ``host:port``; ``run()`` it (blocks until stopped)."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    return AnnotatorServer(config)
