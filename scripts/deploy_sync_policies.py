"""Copy each service's policy file into deploy/k8s/base/policies/, where kustomize can read it.

Kustomize's configMapGenerator reads only files below the kustomization's folder, so the policy ConfigMaps
are built from copies of ``services/<name>/policy.toml``. Run this after editing a policy; ``--check``
changes nothing and exits 1 naming every copy that differs (tests/deploy runs the same comparison).

    python scripts/deploy_sync_policies.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("intake", "escalation", "compensation", "followup")
COPIES = ROOT / "deploy" / "k8s" / "base" / "policies"


def pairs() -> list[tuple[Path, Path]]:
    """Return (source, copy) for every service."""
    return [(ROOT / "services" / name / "policy.toml", COPIES / f"{name}.toml") for name in SERVICES]


def stale() -> list[Path]:
    """Return the copies that are missing or differ from their source."""
    return [copy for source, copy in pairs() if not copy.exists() or copy.read_bytes() != source.read_bytes()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report copies that differ")
    args = parser.parse_args(argv)
    differing = stale()
    if args.check:
        for copy in differing:
            print(f"{copy.relative_to(ROOT)} differs from its service's policy.toml", file=sys.stderr)
        return 1 if differing else 0
    COPIES.mkdir(parents=True, exist_ok=True)
    for source, copy in pairs():
        if copy in differing:
            copy.write_bytes(source.read_bytes())
            print(f"updated {copy.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
