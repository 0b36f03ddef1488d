"""The lock files that every install uses: tested versions, hashed, inside pyproject's ranges.

A dependency released tomorrow must not change what `docker build`, `scripts/test` or the
README's install puts on a machine; a malicious release must never be admitted.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Published to PyPI by an attacker holding litellm's release key (March 2026).
MALICIOUS = {"litellm": ("1.82.7", "1.82.8")}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}"
                 r"(?: \\\n|\n))+)", re.M)


def pins(name: str) -> dict[str, str]:
    """A lock file's packages and versions; fails on an entry that is not pinned and hashed."""
    text = (REPO / name).read_text()
    found = {canonicalize_name(m.group(1)): m.group(2) for m in PIN.finditer(text)}
    entries = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(entries) == len(found), "an entry with no version or no hash"
    return found


def declared(extra: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(entry) for entry in listed]


RUNTIME, TEST = pins("requirements.lock"), pins("requirements-test.lock")


@pytest.mark.parametrize("requirement", [*declared(), *declared("test")], ids=str)
def test_every_dependency_has_a_bounded_range_that_admits_its_locked_version(
        requirement: Requirement) -> None:
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), \
        f"{requirement}: give it an upper bound (the next release that may break it)"
    assert requirement.specifier.contains(TEST[canonicalize_name(requirement.name)])


def test_no_malicious_release_is_admitted_or_locked() -> None:
    for name, versions in MALICIOUS.items():
        (requirement,) = [r for r in declared() if canonicalize_name(r.name) == name]
        assert not any(requirement.specifier.contains(v) for v in versions)
        assert RUNTIME[name] not in versions and TEST[name] not in versions


def test_the_build_backend_is_locked_so_no_build_downloads_one() -> None:
    (backend,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    assert backend.specifier.contains(RUNTIME[canonicalize_name(backend.name)])


def test_the_test_lock_is_the_runtime_lock_plus_the_test_extras() -> None:
    assert {name: TEST[name] for name in RUNTIME} == RUNTIME
    extras = {canonicalize_name(r.name) for r in declared("test")}
    assert extras <= set(TEST)


def test_what_the_tests_run_on_is_what_the_test_lock_pins() -> None:
    """scripts/test installs the lock: a package at another version means the tests ran on
    something else than what ships (run scripts/test, or scripts/lock after an upgrade)."""
    drifted = {}
    for name, version in TEST.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # needed only on older Pythons (async-timeout)
        if installed != version:
            drifted[name] = f"{installed} installed, {version} locked"
    assert drifted == {}
