"""Write the published contract (AsyncAPI document, JSON Schemas) from the code, under proto/published/.

Run after changing a topic or an event message: `make contract`. A unit test fails while the files differ
from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from services.common import contract  # noqa: E402

OUT = ROOT / "proto" / "published"


def rendered() -> dict[Path, str]:
    """Return every file of the published contract with its text."""
    files = {OUT / "asyncapi.yaml": yaml.safe_dump(contract.asyncapi(), sort_keys=False, allow_unicode=True)}
    for name in contract.event_messages():
        files[OUT / "schemas" / f"{name}.schema.json"] = json.dumps(contract.json_schema(name), indent=2) + "\n"
    return files


def main() -> None:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(rendered())} files under {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
