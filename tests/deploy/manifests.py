"""What the deployment tests read: the Dockerfile, the compose file, the rendered kustomize overlays, and the
services' real start commands (taken from the local runner, services/__main__.py, not restated)."""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
OVERLAYS = ("small", "production")
# Kubernetes versions the rendered manifests must be valid for: the oldest supported (the probes' preStop
# sleep action is on by default from 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def venv_tool(name: str) -> str:
    """Return the path of a tool the pinned requirements install next to the interpreter (kubectl, hadolint)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: `make test` installs it from requirements.lock ({name}-bin wheel)")
    return found


@functools.cache
def real_start_commands() -> dict[str, tuple[str, ...]]:
    """Return each service's start command exactly as `make run` (services/__main__.py) spawns it.

    The runner's own spawn function is called with Popen replaced, so nothing starts; the interpreter path
    becomes plain ``python``, which is what the image puts on PATH.
    """
    import services.__main__ as runner
    from services.common.settings import KitSettings

    seen: dict[str, tuple[str, ...]] = {}

    class Recorder:
        pid = 0

        def __init__(self, args, **_kwargs) -> None:
            assert args[0] == sys.executable, args
            seen[args[-1].removeprefix("services.")] = ("python", *args[1:])

    settings = KitSettings(kafka_bootstrap_servers="kafka:9092", database_url="postgresql://x@db/recovery")
    original = runner.subprocess.Popen
    runner.subprocess.Popen = Recorder
    try:
        for name in runner.existing_services():
            runner._spawn(name, settings)
    finally:
        runner.subprocess.Popen = original
    assert tuple(seen) == runner.SERVICES, "every service has an entrypoint"
    return seen


# ------------------------------------------------------------------------------------------ Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int  # index of the FROM it belongs to

    def exec_form(self) -> list[str]:
        """Return a JSON-array (exec form) argument list; raises ValueError for the shell form."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1]
        return json.loads(text)


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """Return the Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions, stage = [], -1
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return tuple(instructions)


def runtime_packages() -> list[str]:
    """Return the requirement strings the image's runtime stage installs (its `pip install` list)."""
    for instruction in dockerfile():
        if instruction.keyword == "RUN" and "/opt/venv/bin/pip install" in instruction.arguments:
            command = instruction.arguments.split("/opt/venv/bin/pip install", 1)[1].split("&&", 1)[0]
            return [word for word in shlex.split(command) if not word.startswith("-") and word != "requirements.lock"]
    raise AssertionError("the Dockerfile installs no runtime packages into /opt/venv")


def locked() -> dict[str, str]:
    """Return requirements.lock as {canonical name: version}."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


# ------------------------------------------------------------------------------------------- compose


@functools.cache
def compose() -> dict:
    """Return the compose file as data (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


# ---------------------------------------------------------------------------------------- kubernetes


@functools.cache
def rendered(target: str) -> tuple[dict, ...]:
    """Return the documents ``kubectl kustomize`` renders for an overlay name or ``base``."""
    folder = K8S / "base" if target == "base" else K8S / "overlays" / target
    result = subprocess.run(
        [venv_tool("kubectl"), "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {folder.relative_to(ROOT)} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[dict, ...], kind: str) -> dict[str, dict]:
    """Return the documents of ``kind`` by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def config(docs: tuple[dict, ...]) -> dict[str, str]:
    """Return the shared recovery-config ConfigMap's data (its name carries kustomize's hash suffix)."""
    (found,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("recovery-config-")]
    return found["data"]


def env_of(container: dict) -> dict[str, dict]:
    """Return a container's env entries by name."""
    return {e["name"]: e for e in container.get("env", [])}


def pod_containers(pod_spec: dict) -> list[dict]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]
