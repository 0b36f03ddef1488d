"""The Docker files, read as Docker would: there is no Docker engine here to build or run them.

What can be checked without one is checked: the files they name exist and reach the image,
the commands parse as `gateway` commands, service names, ports, paths and variables agree
between the Dockerfile, both compose files and router.yaml, and the shipped router.yaml
serves with the environment and the read-only mount the compose file gives it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.cli import build_parser
from tests.conftest import free_port, start_gateway

REPO = Path(__file__).resolve().parent.parent
COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it: `!reset` (compose 2.24) empties an inherited value."""


ComposeLoader.add_constructor("!reset", lambda loader, node: [])


def compose(name: str) -> dict[str, Any]:
    return yaml.load((REPO / name).read_text(), Loader=ComposeLoader)


def interpolate(value: str) -> str:
    """Compose's own ${VAR:-default}, with every variable unset (as on a fresh clone)."""
    return COMPOSE_VAR.sub(lambda m: m.group(2) or "", value)


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, continuation lines joined, split by FROM."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [rest for instruction, rest in stage if instruction == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions(dockerfile_stages()[-1], "ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def exec_form(rest: str) -> list[str]:
    return yaml.safe_load(rest)  # a JSON array is YAML too


def test_the_image_is_slim_and_runs_gateway_serve_as_a_non_root_user() -> None:
    build, runtime = dockerfile_stages()
    assert all("-slim" in stage[0][1] for stage in (build, runtime))
    users = instructions(runtime, "USER")
    assert users and users[-1] not in ("root", "0")
    command = exec_form(instructions(runtime, "ENTRYPOINT")[-1]) + \
        exec_form(instructions(runtime, "CMD")[-1])
    assert command[0] == "gateway"
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 4000)
    assert instructions(runtime, "EXPOSE") == ["4000"]


def test_the_image_copies_files_that_exist_and_that_dockerignore_lets_through() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = []
    for stage in dockerfile_stages():
        for rest in instructions(stage, "COPY"):
            if not rest.startswith("--from"):
                sources += shlex.split(rest)[:-1]
    assert sources == ["requirements.lock", "pyproject.toml", "README.md", "gateway",
                       "router.yaml"]
    for source in sources:
        assert (REPO / source).exists()
        assert source not in ignored


def test_the_image_installs_what_requirements_lock_pins_by_hash_and_nothing_else() -> None:
    def pip_commands(stage: list[tuple[str, str]]) -> list[str]:
        return [part.strip() for rest in instructions(stage, "RUN")
                for part in rest.split("&&") if "pip " in part]

    build, runtime = dockerfile_stages()
    # Only the first reaches an index, and it checks every file against the lock's hashes;
    # the gateway is built by the locked setuptools; the image installs those wheels alone.
    assert pip_commands(build) == [
        "pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements.lock",
        "pip install --no-cache-dir --no-index --no-deps /wheels/setuptools-*.whl",
        "pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels ."]
    assert pip_commands(runtime) == [
        "pip install --no-cache-dir --no-index --no-deps /wheels/*.whl", "pip check"]


def test_the_image_config_path_and_writable_dirs_agree_with_router_yaml() -> None:
    runtime = dockerfile_stages()[-1]
    env = dockerfile_env()
    copied = {shlex.split(rest)[0]: shlex.split(rest)[-1]
              for rest in instructions(runtime, "COPY") if not rest.startswith("--from")}
    assert env["GATEWAY_CONFIG"] == copied["router.yaml"]
    router = (REPO / "router.yaml").read_text()
    # The config directory is mounted read-only: what the gateway writes goes elsewhere,
    # through the variables router.yaml reads, to directories the user owns.
    assert "${GATEWAY_USAGE_LOG:-" in router and "${GATEWAY_DATA_DIR:-" in router
    setup = " ".join(instructions(runtime, "RUN"))
    assert "chown gateway:gateway /var/log/gateway" in setup
    assert os.path.dirname(env["GATEWAY_USAGE_LOG"]) == "/var/log/gateway"
    assert env["GATEWAY_DATA_DIR"].startswith("/var/lib/gateway/")  # the user's home
    assert "--home-dir /var/lib/gateway" in setup


def test_the_healthcheck_asks_ready_on_the_served_port(gateway: str, tmp_path: Path) -> None:
    runtime = dockerfile_stages()[-1]
    healthcheck = exec_form(instructions(runtime, "HEALTHCHECK")[-1].split("CMD", 1)[1])
    assert "healthcheck" not in compose("docker-compose.yml")["services"]["gateway"]  # inherited
    assert "http://127.0.0.1:4000/ready" in healthcheck[-1]
    # Run it as Docker would, against a live gateway (on this test's port), one whose store
    # does not answer (/health 200, /ready 503), and a dead port.
    def run_on(port: int) -> int:
        probe = healthcheck[-1].replace("4000", str(port))
        return subprocess.run([sys.executable, *healthcheck[1:-1], probe], capture_output=True,
                              timeout=10).returncode

    assert run_on(urllib.parse.urlsplit(gateway).port) == 0
    config = tmp_path / "router.yaml"
    config.write_text("providers: {}\nmodels: {}\n"
                      f"settings: {{allow_anonymous: true, redis_url: 'redis://127.0.0.1:"
                      f"{free_port()}/0', usage_log: ''}}\n")
    process, storeless = start_gateway(config, tmp_path / "gateway.log")
    try:
        assert httpx.get(f"{storeless}/health", timeout=5).status_code == 200
        assert run_on(urllib.parse.urlsplit(storeless).port) != 0
    finally:
        process.terminate()
        process.wait(10)
    assert run_on(free_port()) != 0


def test_compose_waits_for_a_healthy_persistent_redis_and_names_it_in_redis_url() -> None:
    services = compose("docker-compose.yml")["services"]
    redis, gateway = services["redis"], services["gateway"]
    assert redis["command"][:1] == ["redis-server"]
    assert "--appendonly yes" in " ".join(redis["command"])
    assert "redis-cli" in redis["healthcheck"]["test"]
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    url = urllib.parse.urlsplit(gateway["environment"]["REDIS_URL"])
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    assert "ports" not in redis  # reached by the gateway only, never published


def test_compose_declares_every_named_volume_it_mounts() -> None:
    document = compose("docker-compose.yml")
    named = set()
    for service in document["services"].values():
        for mount in service.get("volumes", []):
            source = interpolate(mount).split(":")[0]
            if not source.startswith((".", "/")):
                named.add(source)
            else:
                assert (REPO / source).exists(), mount
    assert named == set(document["volumes"]) == {"redis-data", "gateway-logs"}
    assert "redis-data:/data" in document["services"]["redis"]["volumes"]


def test_compose_mounts_the_config_directory_where_the_gateway_reads_it() -> None:
    gateway = compose("docker-compose.yml")["services"]["gateway"]
    env = gateway["environment"]
    mounts = {interpolate(m).split(":")[1]: interpolate(m) for m in gateway["volumes"]}
    config_mount = mounts[os.path.dirname(env["GATEWAY_CONFIG"])]
    assert config_mount.endswith(":ro")
    host_dir = REPO / config_mount.split(":")[0]
    assert (host_dir / os.path.basename(env["GATEWAY_CONFIG"])).is_file()
    assert os.path.dirname(env["GATEWAY_USAGE_LOG"]) in mounts
    assert env["GATEWAY_CONFIG"] == dockerfile_env()["GATEWAY_CONFIG"]
    assert env["GATEWAY_USAGE_LOG"] == dockerfile_env()["GATEWAY_USAGE_LOG"]


def test_compose_runs_gateway_serve_on_the_published_port() -> None:
    gateway = compose("docker-compose.yml")["services"]["gateway"]
    args = build_parser().parse_args([interpolate(part) for part in gateway["command"]])
    assert (args.command, args.host, args.port, args.workers) == ("serve", "0.0.0.0", 4000, 1)
    # Published on the host's loopback unless .env says wider: a fresh clone exposes nothing.
    assert [interpolate(p) for p in gateway["ports"]] == ["127.0.0.1:4000:4000"]
    assert gateway["env_file"] == [{"path": ".env", "required": False}]
    # `gateway serve` lets requests in flight finish for 30 s after SIGTERM; Docker's
    # default is to SIGKILL after 10 s.
    assert int(gateway["stop_grace_period"].removesuffix("s")) > 30


def test_compose_publishes_on_loopback_unless_the_operator_names_an_address() -> None:
    """Without a master key, /metrics and /admin refuse callers from off the gateway's
    machine (a container's host is off it); the port is on the host's loopback as well."""
    for name, service in (("docker-compose.yml", "gateway"),
                          ("docker-compose.replicas.yml", "lb")):
        (published,) = compose(name)["services"][service]["ports"]
        assert published == "${GATEWAY_BIND_ADDRESS:-127.0.0.1}:${GATEWAY_PORT:-4000}:4000"
    example = (REPO / ".env.example").read_text()
    assert re.search(r"^# GATEWAY_BIND_ADDRESS=127\.0\.0\.1$", example, re.M)
    assert re.search(r"^GATEWAY_MASTER_KEY=$", example, re.M)  # empty: safe, as shipped


def test_env_example_or_the_image_gives_every_variable_router_yaml_reads() -> None:
    example = (REPO / ".env.example").read_text()
    given = set(re.findall(r"^#? ?([A-Z_]+)=", example, re.M)) | set(dockerfile_env()) | \
        set(compose("docker-compose.yml")["services"]["gateway"]["environment"])
    values = json.dumps([yaml.safe_load((REPO / "router.yaml").read_text()),
                         compose("docker-compose.yml")])  # the values, not the comments
    read = {name for name, _default in COMPOSE_VAR.findall(values)}
    assert read - given == set()
    assert {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GROQ_API_KEY"} <= read


def test_replicas_share_one_redis_behind_nginx_on_the_same_port() -> None:
    base = compose("docker-compose.yml")["services"]
    override = compose("docker-compose.replicas.yml")["services"]
    assert override["gateway"]["ports"] == []  # `!reset`: the replicas publish nothing
    lb = override["lb"]
    assert [interpolate(p) for p in lb["ports"]] == [interpolate(p) for p in
                                                     base["gateway"]["ports"]]
    assert lb["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    conf_source, conf_target = lb["volumes"][0].split(":")[:2]
    nginx = (REPO / conf_source).read_text()
    assert conf_target == "/etc/nginx/conf.d/default.conf"
    assert "server gateway:4000;" in nginx and "listen 4000;" in nginx
    assert "proxy_buffering off;" in nginx  # or streams arrive all at once


def test_the_shipped_router_yaml_serves_as_compose_runs_it(
        tmp_path: Path, mock, redis_server) -> None:
    """The compose environment and mount, with Ollama (the one keyless provider) on the mock."""
    mounted = tmp_path / "etc-gateway"
    mounted.mkdir()
    shutil.copy(REPO / "router.yaml", mounted / "router.yaml")
    environment = compose("docker-compose.yml")["services"]["gateway"]["environment"]
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
           "GATEWAY_CONFIG": str(mounted / "router.yaml"),
           "REDIS_URL": redis_server.url,  # environment["REDIS_URL"], on this machine
           "GATEWAY_USAGE_LOG": str(tmp_path / "var-log" / "usage.jsonl"),
           "OLLAMA_API_BASE": mock.base_url}
    assert set(environment) == {"REDIS_URL", "GATEWAY_CONFIG", "GATEWAY_USAGE_LOG"}
    process, base_url = start_gateway(mounted / "router.yaml", tmp_path / "gateway.log", env=env)
    try:
        ready = httpx.get(f"{base_url}/ready", timeout=5).json()
        reply = httpx.post(f"{base_url}/v1/chat/completions", timeout=10,
                           headers={"Authorization": "Bearer sk-gateway-example"},
                           json={"model": "local", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        process.terminate()
        process.wait(10)
    assert ready["store"] == "redis"
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "llama-local"
    assert (tmp_path / "var-log" / "usage.jsonl").read_text().count("\n") == 1
    assert os.listdir(mounted) == ["router.yaml"]  # nothing written next to the config
