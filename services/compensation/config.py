"""Compensation's settings: the kit's, plus where its policy file is and how often it is checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from services.common.settings import KitSettings, env

DEFAULT_POLICY = Path(__file__).parent.joinpath("policy.toml")


@dataclass(frozen=True)
class CompensationSettings(KitSettings):
    """Settings of the compensation service, read from the environment."""

    service_name: str = env("SERVICE_NAME", "compensation", doc="Name used for the consumer group, schema and logs.")
    policy_path: str = env(
        "COMPENSATION_POLICY_PATH", "", doc="Compensation policy file; empty: services/compensation/policy.toml."
    )
    # Whole milliseconds: the package holds no float at all (a unit test scans it), settings included.
    policy_reload_ms: int = env(
        "COMPENSATION_POLICY_RELOAD_MS", 2000, doc="How often compensation checks its policy file, in milliseconds."
    )

    @property
    def policy_reload_interval(self) -> timedelta:
        """Return how often the policy file is checked."""
        return timedelta(milliseconds=self.policy_reload_ms)

    @property
    def policy_file(self) -> Path:
        """Return the policy file in use."""
        return Path(self.policy_path) if self.policy_path else DEFAULT_POLICY
