"""``python -m services.common.token``: mint a development token for the gRPC API (a UI developer's first step).

It signs with what the services verify with: ``JWT_SECRET`` when set, else the secret the local runner (``make
run``) made for its data directory (``$DATA_DIR/jwt-secret``, default ``.data/``); or, for RS256, the private key
given. Issuer and audience default to ``JWT_ISSUER`` and ``JWT_AUDIENCE``, as the services check them.

    python -m services.common.token --sub e-17 --role agent --team front-desk [--ttl 3600]
    grpcurl -plaintext -H "authorization: Bearer $(python -m services.common.token --sub e-17 --role agent)" ...
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.common.auth import issue_token

ROOT = Path(__file__).resolve().parents[2]
SECRET_FILE = "jwt-secret"  # in the local runner's data directory


def local_secret(environ: Mapping[str, str]) -> str:
    """Return ``JWT_SECRET``, else the local runner's secret; "" when there is neither."""
    if environ.get("JWT_SECRET"):
        return environ["JWT_SECRET"]
    path = Path(environ.get("DATA_DIR") or ROOT / ".data") / SECRET_FILE
    return path.read_text().strip() if path.exists() else ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.common.token", description=__doc__.split("\n")[0])
    parser.add_argument("--sub", required=True, help="employee id (the token's subject)")
    parser.add_argument("--role", required=True, help="agent, senior_agent, team_lead, manager or director")
    parser.add_argument("--team", default="", help="the employee's team")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (default 3600)")
    parser.add_argument("--private-key", default="", help="RS256: sign with this PEM private key instead")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Print a signed token; 2 when there is nothing to sign with."""
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    extra = {name: environ[variable] for name, variable in (("iss", "JWT_ISSUER"), ("aud", "JWT_AUDIENCE"))
             if environ.get(variable)}  # fmt: skip
    if args.private_key:
        key, algorithm = Path(args.private_key).read_text(), "RS256"
    else:
        key, algorithm = local_secret(environ), "HS256"
    if not key:
        print("no key: set JWT_SECRET, start `make run` once (it makes one), or pass --private-key", file=sys.stderr)
        return 2
    token = issue_token(
        secret_or_private_key=key, algorithm=algorithm, sub=args.sub, role=args.role, team=args.team,
        ttl_seconds=args.ttl, **extra,
    )  # fmt: skip
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
