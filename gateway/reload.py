"""Hot reload: router.yaml is re-read and swapped in whole, without a restart.

Three things start a reload: the file changing (polled), SIGHUP, and POST
/admin/reload. A request takes `services.config` once, on arrival, and keeps it,
so requests in flight finish on the configuration they started with while new
ones get the new one. An invalid file changes nothing that serves: its problems
are logged and kept as `last_error` until a valid file clears them.

The file is polled (a stat every half second, by path) rather than watched with
inotify: a stat by path sees an editor's write-and-rename, a Kubernetes
ConfigMap's symlink swap and a Docker bind mount alike, where inotify events
are lost or arrive for the old inode.

A file may be read half-written, and a prefix of router.yaml is often valid
YAML that gives a key more (its budget line or allow list cut off). Waiting
for the file to hold still does not help against a writer that pauses longer,
so the watcher trusts what it reads only when the file was replaced whole (a
new inode at the path: a rename, a symlink swap), as Envoy and Kubernetes do.
A file rewritten in place (same inode) is applied only if it widens nobody
compared with the last trusted file (see widening.py); otherwise it is held,
and said so, until SIGHUP or POST /admin/reload, which trust the file as the
operator's word that it is complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gateway import widening
from gateway.config import Config, ConfigError, parse_config
from gateway.providers import build
from gateway.services import Services

log = logging.getLogger("gateway")

POLL_S = 0.5
# The store is chosen when `gateway serve` starts (it may have started the embedded one).
RESTART_ONLY = ("redis_url", "data_dir")

Signature = tuple[int, int, int, int, int] | None
Identity = tuple[int, int] | None  # (device, inode): which file the path names


@dataclass(frozen=True)
class Reloaded:
    status: Literal["reloaded", "unchanged", "rejected", "held"]
    changes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    widens: tuple[str, ...] = ()  # held: what the file would give that the trusted one did not


@dataclass(frozen=True)
class Held:
    """A file written in place that would widen someone: it waits for an explicit reload."""

    at: str  # ISO 8601, UTC
    sha256: str
    widens: tuple[str, ...]


@dataclass(frozen=True)
class ReloadError:
    at: str  # ISO 8601, UTC
    problems: tuple[str, ...]


def prepare(config: Config) -> None:
    """Load what `config` needs before it serves (blocking: run it off the event loop)."""
    if build.needs_litellm(config.models.values()):
        build.preload_litellm()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Reloader:
    def __init__(self, services: Services):
        self.services = services
        self.loaded_at = _now()
        self.last_error: ReloadError | None = None
        self.pending_restart: tuple[str, ...] = ()  # settings edited that need a restart
        self.held: Held | None = None
        # The last configuration read from a file known whole: at start, by SIGHUP or POST,
        # or replaced whole. A file written in place must not give more than this one.
        self.trusted = services.config
        self._identity = _identity(services.config.path)  # of the file read last
        self._lock = asyncio.Lock()

    async def reload(self, cause: str, explicit: bool = True) -> Reloaded:
        """`explicit`: asked for (SIGHUP, POST), so the file is taken to be whole."""
        async with self._lock:  # one reload at a time, whatever started it
            return await self._reload(cause, explicit)

    async def _reload(self, cause: str, explicit: bool) -> Reloaded:
        old = self.services.config
        try:
            identity, data = await asyncio.to_thread(_read, old.path)
            whole = explicit or identity != self._identity
            self._identity = identity
            if hashlib.sha256(data).hexdigest() == old.sha256:
                self.last_error = self.held = None  # the file is back to what serves
                if whole:
                    self.trusted = old
                return Reloaded("unchanged")
            new = await asyncio.to_thread(parse_config, data, old.path)
        except OSError as exc:
            return self._rejected(cause, [f"{old.path}: cannot read: {exc.strerror}"])
        except ConfigError as exc:
            return self._rejected(cause, exc.problems)
        self.last_error = None
        if not whole and (widens := widening.widenings(self.trusted, new)):
            return self._hold(new, widens)
        self.held = None
        new = self._keep_restart_only(old, new)
        if whole:
            self.trusted = new
        await asyncio.to_thread(prepare, new)
        await self.services.reconfigure(new)
        self.loaded_at = _now()
        changes = describe_changes(old, new)
        log.info("%s reloaded (%s): %s", old.path.name, cause,
                 "; ".join(changes) or "no effective change")
        for warning in new.warnings:
            log.warning("%s", warning)
        return Reloaded("reloaded", tuple(changes))

    def _rejected(self, cause: str, problems: list[str]) -> Reloaded:
        self.last_error = ReloadError(_now(), tuple(problems))
        log.error("%s not reloaded (%s): %d problem(s); the previous configuration keeps "
                  "serving:\n  %s", self.services.config.path.name, cause, len(problems),
                  "\n  ".join(problems))
        return Reloaded("rejected", problems=tuple(problems))

    def _hold(self, new: Config, widens: list[str]) -> Reloaded:
        self.held = Held(_now(), new.sha256, tuple(widens))
        log.warning("%s was written in place and widens access or money (%s): held, since "
                    "it may be half-written; the previous configuration keeps serving. Apply "
                    "it with SIGHUP or POST /admin/reload, or save it by rename (write a copy, "
                    "then mv it over %s)", new.path.name, "; ".join(widens), new.path.name)
        return Reloaded("held", widens=tuple(widens))

    def _keep_restart_only(self, old: Config, new: Config) -> Config:
        changed = [name for name in RESTART_ONLY
                   if getattr(new.settings, name) != getattr(old.settings, name)]
        self.pending_restart = tuple(f"settings.{name}" for name in changed)
        if not changed:
            return new
        log.warning("%s changed in %s: the store is chosen at start, so this takes effect when "
                    "the gateway restarts; the current store keeps serving",
                    " and ".join(self.pending_restart), old.path.name)
        kept = new.settings.model_copy(update={n: getattr(old.settings, n) for n in changed})
        return dataclasses.replace(new, settings=kept)

    async def watch(self) -> None:
        """Poll the file; reload once it has changed and then held still for one poll."""
        seen: Signature = None  # unknown: the first poll compares the file's content once
        changed = True
        while True:
            await asyncio.sleep(POLL_S)
            await self.services.adapters.close_retired(asyncio.get_running_loop().time())
            if not self.services.config.settings.watch_config:
                continue
            now = await asyncio.to_thread(_signature, self.services.config.path)
            if now != seen:
                seen, changed = now, True
                continue  # an editor may still be writing: wait for it to hold still
            if changed:
                changed = False
                await self.reload_in_background("file changed", explicit=False)

    async def reload_in_background(self, cause: str, explicit: bool = True) -> None:
        """For the watcher and SIGHUP, which nobody awaits: a failure is logged, not raised."""
        try:
            await self.reload(cause, explicit)
        except Exception as exc:  # the outermost handler of a background reload
            log.error("reload (%s) failed: %s", cause, type(exc).__name__)


def _read(path: Path) -> tuple[Identity, bytes]:
    """The file's content, and which file it came from (read from the same descriptor)."""
    with path.open("rb") as file:
        st = os.fstat(file.fileno())
        return (st.st_dev, st.st_ino), file.read()


def _identity(path: Path) -> Identity:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing for a moment while an editor renames its copy into place
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def describe_changes(old: Config, new: Config) -> list[str]:
    """What a reload changed, by name only: never a value (values may be secrets)."""
    out: list[str] = []
    sections: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("providers", old.providers, new.providers),
        ("models", old.models, new.models),
        # a group's balance or weights are a change of its tier, though its models are not
        ("tiers", {n: (c, old.groups.get(n)) for n, c in old.tiers.items()},
         {n: (c, new.groups.get(n)) for n, c in new.tiers.items()}),
        ("keys", {k.name: k for k in old.keys}, {k.name: k for k in new.keys}),
        ("settings", widening.flat(old.settings.model_dump()),
         widening.flat(new.settings.model_dump())),
    ]
    for section, before, after in sections:
        for verb, names in (("added", after.keys() - before.keys()),
                            ("removed", before.keys() - after.keys()),
                            ("changed", {n for n in before.keys() & after.keys()
                                         if before[n] != after[n]})):
            if names:
                out.append(f"{section} {verb}: {', '.join(sorted(names))}")
    return out
