"""deploy/compose: valid against the Compose specification, and wired the way the services and deploy/ expect."""

from __future__ import annotations

import glob
import importlib.resources
import json
import re
from pathlib import Path

import jsonschema
import yaml

from services.common.topics import CATALOGUE
from tests.deploy.manifests import COMPOSE_FILE, DEPLOY, compose, real_start_commands

SERVICES = tuple(real_start_commands())
PROVISION = ["python", "-m", "services.common.provision"]


def compose_schema() -> dict:
    # The Compose specification's JSON schema, as check-jsonschema ships it (pinned in requirements.lock).
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def compose_validator() -> jsonschema.protocols.Validator:
    schema = compose_schema()
    # Its $schema names draft 07 without the trailing '#', which jsonschema does not recognise by itself.
    draft = jsonschema.Draft202012Validator if "2020-12" in schema["$schema"] else jsonschema.Draft7Validator
    draft.check_schema(schema)
    return draft(schema)


def test_the_compose_file_validates_against_the_compose_specification():
    errors = sorted(compose_validator().iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_mistake():
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["intake"]["depends_on"]["kafka-topics"]["condition"] = "service_done"
    broken["services"]["intake"]["helthcheck"] = {}
    assert len(list(compose_validator().iter_errors(broken))) == 2


def test_the_services_start_exactly_as_make_run_starts_them():
    services = compose()["services"]
    for name, command in real_start_commands().items():
        assert services[name]["command"] == list(command), name
        assert services[name]["environment"]["SERVICE_NAME"] == name
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "services.common.healthcheck"]


def test_kafka_runs_in_kraft_mode_and_creates_no_topic_by_itself():
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:") and not kafka["image"].endswith(":latest")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_topics_are_created_from_the_catalogue_with_settings_the_single_broker_can_honour():
    services = compose()["services"]
    one_shot = services["kafka-topics"]
    assert one_shot["command"][:4] == [*PROVISION, "topics"]
    min_insync = int(one_shot["command"][one_shot["command"].index("--min-insync-replicas") + 1])
    env = one_shot["environment"]
    partitions, replication = int(env["TOPIC_PARTITIONS"]), int(env["TOPIC_REPLICATION"])
    brokers = 1
    assert 1 <= min_insync <= replication <= brokers
    assert int(services["kafka"]["environment"]["KAFKA_MIN_INSYNC_REPLICAS"]) <= replication
    for name in SERVICES:
        service_env = services[name]["environment"]
        # The services check and would create the same topics: they must agree on the shape.
        assert (int(service_env["TOPIC_PARTITIONS"]), int(service_env["TOPIC_REPLICATION"])) == (
            partitions,
            replication,
        )
        assert service_env["KAFKA_ENABLE_IDEMPOTENCE"] == "true", "idempotent producers on Apache Kafka"
        assert services[name]["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
    assert len(CATALOGUE) == len({t.name for t in CATALOGUE})


def _user(url: str) -> str:
    return re.fullmatch(r"postgresql://([a-z_]+)@postgres:5432/recovery", url).group(1)


def test_each_service_logs_in_as_its_runtime_role_after_its_owner_migrated_the_schema():
    services = compose()["services"]
    roles_env = services["db-roles"]["environment"]
    assert services["db-roles"]["command"] == [*PROVISION, "roles", "--sql", "/etc/recovery/sql/roles.sql"]
    for name in SERVICES:
        for kind in ("owner", "app"):
            assert f"{name.upper()}_DB_{kind.upper()}_PASSWORD" in roles_env
        migrate = services[f"migrate-{name}"]
        assert migrate["command"] == [*PROVISION, "migrate", "--grants", "/etc/recovery/sql/grants.sql"]
        assert migrate["environment"]["SERVICE_NAME"] == name
        assert _user(migrate["environment"]["DATABASE_URL"]) == f"{name}_owner"
        # The password a role gets is the one its user logs in with (the same variable and default).
        owner_secret = roles_env[f"{name.upper()}_DB_OWNER_PASSWORD"]
        assert migrate["environment"]["PGPASSWORD"] == owner_secret
        assert migrate["depends_on"]["db-roles"]["condition"] == "service_completed_successfully"
        service = services[name]
        assert _user(service["environment"]["DATABASE_URL"]) == f"{name}_app"
        assert service["environment"]["PGPASSWORD"] == roles_env[f"{name.upper()}_DB_APP_PASSWORD"]
        assert service["depends_on"][f"migrate-{name}"]["condition"] == "service_completed_successfully"
    assert len({roles_env[f"{n.upper()}_DB_{k}_PASSWORD"] for n in SERVICES for k in ("OWNER", "APP")}) == 8


def test_every_bind_mount_exists():
    base = COMPOSE_FILE.parent
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (base / source).exists(), f"{name}: {source}"


def _mount(service: str, target: str) -> Path:
    for volume in compose()["services"][service]["volumes"]:
        source, mounted, *_ = volume.split(":")
        if mounted == target:
            return (COMPOSE_FILE.parent / source).resolve()
    raise AssertionError(f"{service} mounts nothing at {target}")


def test_prometheus_scrapes_every_service_with_deploy_prometheus_rules():
    config = yaml.safe_load((COMPOSE_FILE.parent / "prometheus.yml").read_text())
    targets = {
        target: group["labels"]["service"]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {f"{name}:9100": name for name in SERVICES}
    assert _mount("prometheus", "/etc/prometheus/rules") == (DEPLOY / "prometheus" / "rules").resolve()
    # The same rule files deploy/prometheus/prometheus.yml loads, through the mount.
    ours = {Path(p).name for pattern in config["rule_files"] for p in glob.glob(str(DEPLOY / "prometheus" / pattern))}
    theirs = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["rule_files"]
    assert {Path(p).name for p in theirs} <= ours
    assert ours, "deploy/prometheus/rules has rule files"


def test_grafana_loads_deploy_grafana_dashboards_through_its_provider_with_the_same_datasource():
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert _mount("grafana", "/etc/grafana/provisioning/dashboards") == (provisioning / "dashboards").resolve()
    dashboards_at = {
        provider["options"]["path"]
        for path in (provisioning / "dashboards").glob("*.y*ml")
        for provider in yaml.safe_load(path.read_text())["providers"]
    }
    for path in dashboards_at:
        assert _mount("grafana", path) == (DEPLOY / "grafana" / "dashboards").resolve()
    theirs = [
        source
        for path in (provisioning / "datasources").glob("*.y*ml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    ours_dir = _mount("grafana", "/etc/grafana/provisioning/datasources")
    ours = [s for p in ours_dir.glob("*.y*ml") for s in yaml.safe_load(p.read_text())["datasources"]]
    assert [(s["uid"], s["name"], s["type"]) for s in ours] == [(s["uid"], s["name"], s["type"]) for s in theirs]
    assert all(s["url"] == "http://prometheus:9090" for s in ours)


def test_images_are_pinned():
    for name, service in compose()["services"].items():
        image = service["image"]
        if image.startswith("service-recovery:"):
            assert service["build"]["context"] == "../.."
            continue
        assert re.search(r":v?\d+\.\d+\.\d+", image) or re.search(r":\d+\.\d+-", image), f"{name}: {image}"


async def test_the_services_producers_wait_for_all_replicas_and_are_idempotent_with_these_settings():
    from services.common.kafka import make_producer
    from services.common.settings import KitSettings
    from tests.deploy.manifests import config, rendered

    environments = {f"compose {name}": compose()["services"][name]["environment"] for name in SERVICES}
    environments |= {f"k8s {overlay}": config(rendered(overlay)) for overlay in ("small", "production")}
    for where, environ in environments.items():
        # (The CA file is only mounted in the cluster.)
        settings = KitSettings.from_env({k: str(v) for k, v in environ.items()}, kafka_ssl_cafile="")
        producer = make_producer(settings)
        try:
            # acks=all is -1 on the wire; an idempotent producer has a transaction manager (id and sequences).
            assert producer._sender._acks == -1, where
            assert producer._txn_manager is not None, where
        finally:
            await producer.stop()
