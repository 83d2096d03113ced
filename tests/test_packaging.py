"""The Docker image (issue 15): `COPY . .` must not ship secrets, the local database or the git history,
and the image installs nothing unused."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"var/", ".git/", ".venv/", ".env", "*.sqlite3"} <= ignored


def test_no_unused_dependencies():
    requirements = (ROOT / "requirements.txt").read_text().lower()
    assert "sqlalchemy" not in requirements
    assert "libgl1" not in (ROOT / "Dockerfile").read_text()
