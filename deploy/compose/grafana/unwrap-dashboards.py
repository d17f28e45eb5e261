# ruff: noqa: INP001 - a standalone script mounted into a container, not a module of a package
"""Make the relay's dashboards loadable by Grafana's file provisioning.

The relay ships its dashboards in the HTTP API's import form, ``{"dashboard": {...}}``.
File provisioning reads the dashboard object itself and refuses the wrapped form
("Dashboard title cannot be empty"). This writes each dashboard unwrapped, with the UID
that the relay's alerts link to (their ``dashboard_url`` annotations), so
``http://127.0.0.1:3000/d/gmail-integration`` opens the overview. The files in
deploy/relay/grafana stay as they are (the project's copies of the relay's originals).

Usage: python3 unwrap-dashboards.py SRC_DIR OUT_DIR   (standard library only)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

UIDS = {
    "gmail-integration-overview.json": "gmail-integration",
    "rollout-controller-monitoring.json": "rollout-controller",
    "structured-errors-analysis.json": "errors",
}
"""File name -> UID, from the alerts' ``dashboard_url`` (``https://grafana/d/UID/...``)."""


def unwrap(document: dict[str, object], name: str) -> dict[str, object]:
    """The dashboard object of an API-form or plain dashboard, with a stable UID and no id."""
    inner = document.get("dashboard", document)
    if not isinstance(inner, dict) or not inner.get("title"):
        raise ValueError("no dashboard title (expected {'dashboard': {'title': ...}} or a dashboard)")
    dashboard = {**inner, "id": None}
    dashboard.setdefault("uid", UIDS.get(name, Path(name).stem)[:40])
    return dashboard


def main(argv: list[str]) -> int:
    """Unwrap every ``*.json`` in SRC_DIR into OUT_DIR; exit 2 on bad input."""
    if len(argv) != 3:
        print("usage: unwrap-dashboards.py SRC_DIR OUT_DIR", file=sys.stderr)
        return 2
    src, out = Path(argv[1]), Path(argv[2])
    files = sorted(src.glob("*.json"))
    if not files:
        print(f"unwrap-dashboards: {src}: no *.json files", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            dashboard = unwrap(json.loads(path.read_text(encoding="utf-8")), path.name)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            print(f"unwrap-dashboards: {path}: {e}", file=sys.stderr)
            return 2
        tmp = out / f".{path.name}.tmp"
        tmp.write_text(json.dumps(dashboard, indent=2) + "\n", encoding="utf-8")
        tmp.replace(out / path.name)
        print(f"unwrap-dashboards: {path.name}: {dashboard['title']!r} uid={dashboard['uid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
