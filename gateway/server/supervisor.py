"""`gateway serve` under uvicorn, where SIGHUP means "reload router.yaml" in every worker.

uvicorn's own supervisor answers SIGHUP by replacing every worker process. Ours
passes the signal on, so each worker reloads in place: the same processes, no
connection dropped, no start-up cost. A worker that served POST /admin/reload
sends the supervisor a SIGHUP so its siblings reload too.

SIGHUP stays blocked in this process (gateway/__main__.py blocks it first), so
it is never delivered here: the supervisor picks it up as pending, and every
worker it starts inherits the block, so a SIGHUP reaching a worker before its
app can reload waits instead of killing it (app.create_app_from_env).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway.records.metrics import MULTIPROCESS_ENV

SUPERVISOR_ENV = "GATEWAY_SUPERVISOR_PID"  # set for the workers of `--workers N`, N > 1
STARTUP_FAILURE = 3  # uvicorn's exit status when the server never started


class _Workers(Multiprocess):
    def handle_signals(self) -> None:
        if signal.SIGHUP in signal.sigpending():  # blocked: it waits here for us
            signal.sigwait({signal.SIGHUP})  # pending, so this takes it without waiting
            self.signal_queue.append(signal.SIGHUP)
        super().handle_signals()

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # one that just died
                    os.kill(process.pid, signal.SIGHUP)


def serve(app: str, **options: Any) -> int:
    """Run `app` (an import string) as uvicorn.run would; the exit status."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # see the module's docstring
    config = uvicorn.Config(app, **options)
    if config.workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())  # inherited by the workers
        with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir:
            # Every worker writes its metrics here; a scrape of any one adds them all up.
            os.environ.setdefault(MULTIPROCESS_ENV, metrics_dir)
            _Workers(config, sockets=[config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else STARTUP_FAILURE


def reload_other_workers() -> bool:
    """From a worker: have the supervisor pass SIGHUP to every worker. False with one worker."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return False
    os.kill(int(supervisor), signal.SIGHUP)
    return True
