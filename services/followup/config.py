"""Followup's settings: the kit's, plus its policy file, scheduler pace and delay tuning for tests and demos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.errors import FieldViolation, InvalidInput
from services.common.settings import KitSettings, env
from services.followup.domain.model import FollowupKind
from services.followup.domain.schedule import DelayTuning

DEFAULT_POLICY = Path(__file__).parent / "policy.toml"


@dataclass(frozen=True)
class FollowupSettings(KitSettings):
    """Settings of the followup service, read from the environment."""

    service_name: str = env("SERVICE_NAME", "followup", doc="Name used for the consumer group, schema and logs.")
    policy_path: str = env(
        "FOLLOWUP_POLICY_PATH", "", doc="Followup's schedule policy file; empty: services/followup/policy.toml."
    )
    policy_reload_seconds: float = env(
        "FOLLOWUP_POLICY_RELOAD_SECONDS", 2.0, doc="How often followup checks its policy file for a new version."
    )
    scheduler_poll_seconds: float = env(
        "FOLLOWUP_SCHEDULER_POLL_SECONDS", 0.5, doc="How often the scheduler looks for due follow-ups when idle."
    )
    scheduler_batch_size: int = env(
        "FOLLOWUP_SCHEDULER_BATCH_SIZE", 200, doc="Most due follow-ups one scheduler transaction claims."
    )
    gauge_seconds: float = env(
        "FOLLOWUP_GAUGE_SECONDS", 15.0, doc="How often the pending and overdue gauges are recounted."
    )
    delay_scale: float = env(
        "FOLLOWUP_DELAY_SCALE",
        1.0,
        doc="Multiplies every policy delay (e.g. 0.0001 for a demo); a scaled delay is elapsed time.",
    )
    delay_overrides: str = env(
        "FOLLOWUP_DELAY_OVERRIDES",
        "",
        doc="Per-kind delay in seconds, overriding the policy: 'satisfaction_check=5,check_in=20'.",
    )

    @property
    def policy_file(self) -> Path:
        """Return the policy file in use."""
        return Path(self.policy_path) if self.policy_path else DEFAULT_POLICY

    def tuning(self) -> DelayTuning:
        """Return the delay tuning these settings ask for; raises InvalidInput naming a bad override."""
        return DelayTuning(scale=self.delay_scale, override_seconds=parse_overrides(self.delay_overrides))


def parse_overrides(text: str) -> dict[FollowupKind, float]:
    """Return ``kind=seconds`` pairs as a map; raises InvalidInput naming every bad pair."""
    overrides: dict[FollowupKind, float] = {}
    violations = []
    kinds = {k.value: k for k in FollowupKind}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        name, _, seconds = pair.partition("=")
        kind = kinds.get(name.strip())
        try:
            value = float(seconds)
        except ValueError:
            value = -1.0
        if kind is None or value < 0:
            violations.append(FieldViolation(f"FOLLOWUP_DELAY_OVERRIDES.{name.strip()}", "expected <kind>=<seconds>"))
            continue
        overrides[kind] = value
    if violations:
        raise InvalidInput.of(*violations)
    return overrides
