"""Intake's settings: the kit's, plus where its policy file is and how often its loops run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.settings import KitSettings, env

DEFAULT_POLICY = Path(__file__).parent / "policy.toml"


@dataclass(frozen=True)
class IntakeSettings(KitSettings):
    """Settings of the intake service, read from the environment."""

    service_name: str = env("SERVICE_NAME", "intake", doc="Name used for the consumer group, schema and logs.")
    policy_path: str = env(
        "INTAKE_POLICY_PATH", "", doc="Intake's classification policy file; empty: services/intake/policy.toml."
    )
    policy_reload_seconds: float = env(
        "INTAKE_POLICY_RELOAD_SECONDS", 2.0, doc="How often intake checks its policy file for a new version."
    )
    hotspot_poll_seconds: float = env(
        "INTAKE_HOTSPOT_POLL_SECONDS", 1.0, doc="How often the hot-spot loop counts newly accepted failures."
    )
    hotspot_batch_size: int = env(
        "INTAKE_HOTSPOT_BATCH_SIZE", 2000, doc="Most queued failures one hot-spot round counts."
    )

    @property
    def policy_file(self) -> Path:
        """Return the policy file in use."""
        return Path(self.policy_path) if self.policy_path else DEFAULT_POLICY
