"""Run buf (from the buf-bin wheel in this venv) on proto/ from the repo root.

    python scripts/buf.py lint        buf lint, with buf.yaml's STANDARD rules
    python scripts/buf.py breaking    buf breaking against the `main` branch (FILE rules)

Extra arguments are passed on to buf. The exit code is buf's. `breaking` is skipped (exit 0) while
`main` has no commit with buf.yaml and proto/ to compare against.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_BRANCH = "main"


def find_buf() -> str:
    local = Path(sys.executable).parent / "buf"
    found = str(local) if local.is_file() else shutil.which("buf")
    if not found:
        sys.exit(f"error: no buf binary next to {sys.executable} or on PATH; install buf-bin")
    return found


def base_has_protos() -> bool:
    """True when `main` exists and its tip has both buf.yaml and proto/ (something to compare with)."""
    for path in ("buf.yaml", "proto"):
        check = subprocess.run(["git", "cat-file", "-e", f"{BASE_BRANCH}:{path}"], cwd=ROOT, capture_output=True)
        if check.returncode != 0:
            return False
    return True


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lint", "breaking"):
        print(__doc__, file=sys.stderr)
        return 2
    command, extra = argv[0], argv[1:]
    args = [find_buf(), command]
    if command == "breaking":
        if not base_has_protos():
            print(f"skipped: branch {BASE_BRANCH!r} has no commit with buf.yaml and proto/ to compare with")
            return 0
        args += ["--against", f".git#branch={BASE_BRANCH}"]
    return subprocess.run([*args, *extra], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
