"""Topics and database roles in deploy/ agree with the code: the topic catalogue, the services and their schemas.

(test_provision.py runs the same definitions against a real PostgreSQL and broker.)
"""

from __future__ import annotations

import re

import services.__main__ as runner
from services.common import provision
from services.common.topics import CATALOGUE
from tests.deploy.manifests import DEPLOY, ROOT, compose, of_kind, rendered
from tests.deploy.test_k8s import settings_class

SQL = DEPLOY / "k8s" / "base" / "sql"


def test_the_roles_sql_covers_exactly_the_services_each_in_its_own_schema():
    text = (SQL / "roles.sql").read_text()
    (listed,) = re.findall(r"FOREACH service IN ARRAY ARRAY\[([^\]]*)\]", text)
    services = tuple(name.strip().strip("'") for name in listed.split(","))
    assert services == runner.SERVICES == provision.SERVICES
    for name in services:
        settings = settings_class(name)()
        # Roles are <schema>_owner and <schema>_app, and the migration task grants <service>_app.
        assert settings.service_name == name and settings.schema == name
    assert "service || '_owner'" in text and "service || '_app'" in text


def test_the_grants_use_the_runtime_grant_function_a_service_defines_with_its_signature():
    grants = (SQL / "grants.sql").read_text()
    assert "grant_runtime_role(text, text)" in grants
    defining = [
        path.relative_to(ROOT)
        for path in (ROOT / "services").glob("*/migrations/*.sql")
        if re.search(r"CREATE FUNCTION grant_runtime_role\(schema_name text, role_name text\)", path.read_text())
    ]
    assert [str(p) for p in defining] == ["services/escalation/migrations/0001_escalation.sql"]


def test_every_topic_named_in_deploy_is_in_the_catalogue():
    names = {t.name for t in CATALOGUE}
    files = [DEPLOY / "README.md", *(DEPLOY / "compose").rglob("*"), *(DEPLOY / "k8s").rglob("*")]
    for path in files:
        if path.is_file() and path.suffix in {".yaml", ".yml", ".md", ".sql"}:
            for topic in re.findall(r"\brecovery\.[a-z-]+\.v\d+\b", path.read_text()):
                assert topic in names, f"{path.relative_to(ROOT)} names {topic}, which is not in the catalogue"


def test_topics_are_only_ever_created_from_the_catalogue():
    # Both deployments create topics with the provision task, which takes the names from CATALOGUE; nothing
    # in deploy/ lists topics of its own (kafka-topics.sh or a topic list would drift).
    assert compose()["services"]["kafka-topics"]["command"][3] == "topics"
    for overlay in ("small", "production"):
        job = of_kind(rendered(overlay), "Job")["recovery-topics"]
        assert job["spec"]["template"]["spec"]["containers"][0]["command"][3] == "topics"
    for path in DEPLOY.rglob("*.y*ml"):
        assert "kafka-topics.sh" not in path.read_text(), path


def _short(topic: str) -> str:
    return topic.removeprefix("recovery.").removesuffix(".v1")


def test_the_kafka_users_table_matches_the_catalogue_and_the_subscriptions():
    text = (DEPLOY / "README.md").read_text()
    table = text.split("<!-- kafka-acls:begin -->")[1].split("<!-- kafka-acls:end -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        user, group, reads, writes = (cell.strip() for cell in line.strip("|").split("|"))
        rows[user.strip("`")] = (
            group.strip("`"),
            re.findall(r"`([a-z-]+)`", reads),
            re.findall(r"`([a-z-]+)`", writes),
        )
    assert list(rows) == list(runner.SERVICES)
    for service, (group, reads, writes) in rows.items():
        assert group == settings_class(service)().service_name  # the consumer group is the service name
        assert reads == [_short(t.name) for t in CATALOGUE if service in t.consumers]
        assert writes == [_short(t.name) for t in CATALOGUE if service in t.producers]
        subscribed = re.findall(
            r'\("(recovery\.[a-z-]+\.v1)"', (ROOT / f"services/{service}/entrypoints/consumers.py").read_text()
        )
        assert sorted(map(_short, subscribed)) == sorted(reads)
