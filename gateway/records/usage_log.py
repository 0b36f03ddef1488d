"""The usage log file: JSON lines appended by a thread of its own, rotated by size.

The event loop only puts a line on a queue; a writer thread appends what has
queued in one `write()` to a file opened with O_APPEND, so whole lines from
every worker process interleave without tearing. When the file passes
`max_mb`, it becomes `usage.jsonl.1` (`.1` becomes `.2`, and so on, `keep`
files kept): at most (keep + 1) x max_mb on disk. Workers rotate under a file
lock, and a worker whose file was rotated by another reopens the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import threading
from pathlib import Path

log = logging.getLogger("gateway")
BATCH = 512  # lines per write at most


class UsageLog:
    def __init__(self, path: Path, max_mb: float, keep: int):
        self.path = path
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.keep = keep
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._fd: int | None = None
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="usage-log", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        """Queue one line (ending in a newline); never blocks."""
        self._queue.put(line)

    def close(self, timeout_s: float = 5) -> None:
        """Write what is queued, then stop (blocking: call it off the event loop)."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            lines = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(lines) < BATCH and lines[-1] is not None:
                    lines.append(self._queue.get_nowait())
            stop = lines[-1] is None
            data = b"".join(line for line in lines if line is not None)
            if data:
                self._append(data)
            if stop:
                if self._fd is not None:
                    os.close(self._fd)
                return

    def _append(self, data: bytes) -> None:
        try:
            fd = self._current()
            os.write(fd, data)
            if os.fstat(fd).st_size >= self.max_bytes:
                self._rotate()
        except OSError as exc:
            # A full or read-only disk must not take serving down; say so once.
            if not self._failing:
                log.error("usage log %s cannot be written (%s); lines are dropped until it "
                          "can", self.path, exc.strerror)
            self._failing = True
            return
        if self._failing:
            log.warning("usage log %s is written again", self.path)
            self._failing = False

    def _current(self) -> int:
        """The open file, reopened when another worker has rotated it away."""
        if self._fd is not None:
            try:
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def _rotate(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                ours = (self._fd is not None
                        and os.stat(self.path).st_ino == os.fstat(self._fd).st_ino)
            except FileNotFoundError:
                ours = False
            if not ours:
                return  # another worker rotated it first: the next write reopens the path
            for n in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            if self.keep > 0:
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            else:
                os.unlink(self.path)
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
