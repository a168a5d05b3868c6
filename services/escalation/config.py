"""Escalation's settings: the kit's, plus where its policy file is and how often its loops run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.settings import KitSettings, env

DEFAULT_POLICY = Path(__file__).parent / "policy.toml"


@dataclass(frozen=True)
class EscalationSettings(KitSettings):
    """Settings of the escalation service, read from the environment."""

    service_name: str = env("SERVICE_NAME", "escalation", doc="Name used for the consumer group, schema and logs.")
    policy_path: str = env(
        "ESCALATION_POLICY_PATH", "", doc="Empowerment policy file; empty: services/escalation/policy.toml."
    )
    policy_reload_seconds: float = env(
        "ESCALATION_POLICY_RELOAD_SECONDS", 2.0, doc="How often escalation checks its policy file for a new version."
    )
    timer_poll_seconds: float = env(
        "ESCALATION_TIMER_POLL_SECONDS", 0.5, doc="How often the SLA and approval timer loop looks for due timers."
    )
    timer_batch_size: int = env("ESCALATION_TIMER_BATCH_SIZE", 100, doc="Most timers one scheduler round fires.")
    gauge_seconds: float = env(
        "ESCALATION_GAUGE_SECONDS", 10.0, doc="How often gauges (cases by state, pending approvals, load) refresh."
    )
    incident_update_seconds: float = env(
        "ESCALATION_INCIDENT_UPDATE_SECONDS",
        5.0,
        doc="How often incidents whose cases changed get an IncidentUpdated (at most one per incident per round).",
    )
    watch_poll_seconds: float = env(
        "ESCALATION_WATCH_POLL_SECONDS", 0.5, doc="How often WatchCases streams look for changed cases."
    )

    @property
    def policy_file(self) -> Path:
        """Return the policy file in use."""
        return Path(self.policy_path) if self.policy_path else DEFAULT_POLICY
