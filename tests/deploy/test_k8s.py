"""deploy/k8s: every overlay renders with `kubectl kustomize`, validates against the Kubernetes schemas, and keeps
the invariants the services rely on (start commands, probes, ports, roles, topics, network reach)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from services.common.grpc_server import LIVENESS
from services.common.settings import KitSettings
from tests.deploy.manifests import (
    DEPLOY,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    ROOT,
    config,
    dockerfile,
    env_of,
    of_kind,
    pod_containers,
    real_start_commands,
    rendered,
)

SERVICES = tuple(real_start_commands())
PROVISION = ["python", "-m", "services.common.provision"]
TARGETS = ("base", *OVERLAYS)


def settings_class(name: str) -> type[KitSettings]:
    module = __import__(f"services.{name}.config", fromlist=["*"])
    (cls,) = [
        v for v in vars(module).values() if isinstance(v, type) and issubclass(v, KitSettings) and v is not KitSettings
    ]
    return cls


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(target, version):
    problems = []
    for doc in rendered(target):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_validation_catches_a_mistake():
    deployment = dict(of_kind(rendered("small"), "Deployment")["intake"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_each_service_runs_its_real_start_command_after_waiting_for_schema_and_topics(target):
    deployments = of_kind(rendered(target), "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, command in real_start_commands().items():
        spec = deployments[name]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["command"] == list(command)
        assert "args" not in container
        (wait,) = spec["initContainers"]
        assert wait["command"][:4] == [*PROVISION, "wait"]
        for c in (container, wait):
            env = env_of(c)
            assert env["SERVICE_NAME"]["value"] == name
            assert env["PGUSER"]["value"] == f"{name}_app"
            assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": f"recovery-{name}-db",
                "key": "app-password",
            }
            assert env["DATABASE_URL"]["value"] == "postgresql://$(PGUSER)@$(PGHOST):$(PGPORT)/$(PGDATABASE)"


def _image_env() -> dict[str, str]:
    final = max(i.stage for i in dockerfile())
    pairs = " ".join(i.arguments for i in dockerfile() if i.keyword == "ENV" and i.stage == final).split()
    return dict(p.split("=", 1) for p in pairs if "=" in p)


@pytest.mark.parametrize("target", TARGETS)
def test_probes_ask_grpc_health_on_the_port_the_image_serves(target):
    image_env = _image_env()
    for name, deployment in of_kind(rendered(target), "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": int(image_env["GRPC_PORT"]), "metrics": int(image_env["METRICS_PORT"])}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ports["metrics"])
        tls = "GRPC_TLS_CERT_FILE" in env_of(container)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            handler = container[probe]
            if tls:
                # The kubelet's grpc probe has no TLS: the image's own health client asks instead.
                assert "grpc" not in handler
                command = handler["exec"]["command"]
                assert command[:3] == ["python", "-m", "services.common.healthcheck"]
                assert command[command.index("--tls-server-name") + 1] == name
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert command[command.index("--tls-ca") + 1].rsplit("/", 1)[0] in mounts
                service = command[command.index("--service") + 1] if "--service" in command else ""
            else:
                assert handler["grpc"]["port"] == ports["grpc"], f"{name} {probe}"
                service = handler["grpc"].get("service", "")
            # Liveness asks whether the process is alive; readiness and start-up whether it can serve (the
            # server's status, which a database outage drops: restarting the pod would not bring it back).
            assert service == (LIVENESS if probe == "livenessProbe" else ""), f"{name} {probe}"
        live = container["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] >= 120


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_requests_limits_and_runs_locked_down_as_the_images_user(target):
    uid = int(next(i for i in reversed(dockerfile()) if i.keyword == "USER").arguments.split(":")[0])
    for doc in rendered(target):
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == uid
        assert spec["automountServiceAccountToken"] is False
        for container in pod_containers(spec):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            assert container["image"].endswith(("service-recovery:dev", "service-recovery:0.1.0")), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"], where


@pytest.mark.parametrize("target", TARGETS)
def test_policy_files_come_from_a_configmap_equal_to_the_services_own(target):
    docs = rendered(target)
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for name, deployment in of_kind(docs, "Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "policy")
        data = maps[volume["configMap"]["name"]]["data"]
        assert data == {"policy.toml": (ROOT / "services" / name / "policy.toml").read_text()}, (
            f"run `python scripts/deploy_sync_policies.py`: {name}'s policy copy is stale"
        )
        (container,) = spec["containers"]
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "policy")
        variable = next(v for v, _, _ in settings_class(name).reference() if v.endswith("_POLICY_PATH"))
        assert env_of(container)[variable]["value"] == f"{mount}/policy.toml"


def test_the_policy_copies_are_current():
    from scripts.deploy_sync_policies import stale

    assert stale() == [], "run `python scripts/deploy_sync_policies.py`"


@pytest.mark.parametrize("target", TARGETS)
def test_topics_settings_are_consistent_and_autoscaling_stays_within_the_partitions(target):
    docs = rendered(target)
    data = config(docs)
    partitions, replication = int(data["TOPIC_PARTITIONS"]), int(data["TOPIC_REPLICATION"])
    min_insync = int(data["TOPIC_MIN_INSYNC_REPLICAS"])
    assert 1 <= min_insync <= replication
    if replication > 1:
        assert min_insync >= 2, "with replicas to spare, an acknowledged write is on two of them"
    assert data["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    (container,) = of_kind(docs, "Job")["recovery-topics"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [*PROVISION, "topics", "--min-insync-replicas", "$(TOPIC_MIN_INSYNC_REPLICAS)"]
    assert container["envFrom"][0]["configMapRef"]["name"].startswith("recovery-config-")
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
    assert set(autoscalers) == set(SERVICES)
    for name, hpa in autoscalers.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions, name
        assert "replicas" not in of_kind(docs, "Deployment")[name]["spec"], "the autoscaler owns the count"
    budgets = of_kind(docs, "PodDisruptionBudget")
    assert {n: b["spec"]["selector"]["matchLabels"] for n, b in budgets.items()} == {
        n: {"app.kubernetes.io/name": n} for n in SERVICES
    }
    assert all(b["spec"]["maxUnavailable"] == 1 for b in budgets.values())


def test_the_overlays_differ_in_size():
    small, production = (config(rendered(o)) for o in ("small", "production"))
    assert (small["TOPIC_REPLICATION"], small["TOPIC_MIN_INSYNC_REPLICAS"]) == ("1", "1")
    assert (production["TOPIC_REPLICATION"], production["TOPIC_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    assert int(production["TOPIC_PARTITIONS"]) >= int(small["TOPIC_PARTITIONS"])


@pytest.mark.parametrize("target", TARGETS)
def test_the_migration_job_creates_the_roles_then_migrates_each_schema_as_its_owner(target):
    job = of_kind(rendered(target), "Job")["recovery-db-migrate"]
    spec = job["spec"]["template"]["spec"]
    (roles,) = spec["initContainers"]
    assert roles["command"] == [*PROVISION, "roles", "--sql", "/etc/recovery/sql/roles.sql"]
    roles_env = env_of(roles)
    assert roles_env["PGUSER"]["valueFrom"]["secretKeyRef"]["name"] == "recovery-db-admin"
    migrators = {c["name"]: c for c in spec["containers"]}
    assert set(migrators) == {f"migrate-{name}" for name in SERVICES}
    for name in SERVICES:
        for kind in ("owner", "app"):
            ref = roles_env[f"{name.upper()}_DB_{kind.upper()}_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": f"recovery-{name}-db", "key": f"{kind}-password"}
        container = migrators[f"migrate-{name}"]
        assert container["command"] == [*PROVISION, "migrate", "--grants", "/etc/recovery/sql/grants.sql"]
        env = env_of(container)
        assert env["SERVICE_NAME"]["value"] == name
        assert env["PGUSER"]["value"] == f"{name}_owner"
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": f"recovery-{name}-db",
            "key": "owner-password",
        }
    sql = next(v for v in spec["volumes"] if v["name"] == "sql")["configMap"]["name"]
    (sql_map,) = [d for d in rendered(target) if d["metadata"]["name"] == sql]
    for file in ("roles.sql", "grants.sql"):
        assert sql_map["data"][file] == (DEPLOY / "k8s" / "base" / "sql" / file).read_text()


def _ports(rules: list[dict]) -> set:
    return {(p["port"], p.get("protocol", "TCP")) for rule in rules for p in rule.get("ports", [])}


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_let_each_service_reach_only_kafka_postgres_and_dns(target):
    policies = of_kind(rendered(target), "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    allowed_egress = {(9093, "TCP"), (5432, "TCP"), (53, "UDP"), (53, "TCP")}
    for name in SERVICES:
        spec = policies[name]["spec"]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert _ports(spec["egress"]) == allowed_egress
        assert all(peer.get("namespaceSelector") for rule in spec["egress"] for peer in rule["to"])
        assert _ports(spec["ingress"]) == {("metrics", "TCP"), ("grpc", "TCP")}
        scrape = next(r for r in spec["ingress"] if _ports([r]) == {("metrics", "TCP")})
        assert scrape["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    provision = policies["recovery-provision"]["spec"]
    assert "ingress" not in provision and _ports(provision["egress"]) == allowed_egress


@pytest.mark.parametrize("target", TARGETS)
def test_every_referenced_secret_is_documented(target):
    readme = (DEPLOY / "README.md").read_text()
    names = set()

    def walk(node):
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                names.add(node["secretKeyRef"]["name"])
            if "secretName" in node:
                names.add(node["secretName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in rendered(target):
        walk(doc)
        assert doc["kind"] != "Secret", "Secrets are created outside the repository"
    documented = set(re.findall(r"`(recovery-[a-z<>-]+)`", readme))
    expanded = {d.replace("<service>", s) for d in documented for s in SERVICES}
    assert names <= expanded, f"undocumented in deploy/README.md: {sorted(names - expanded)}"
