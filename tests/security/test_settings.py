"""Deployment settings: `check --deploy` is clean with production values, and bad values fail loudly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

PRODUCTION_ENV = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/sem_portal",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "x7!q9Lm2#Vd8rT4zK0wPp6Yb3Nc5Hj1Gf-sE^uA&oW*iR@lZ_8Qe$Xy",
    "ALLOWED_HOSTS": "sem.example.org",
    "DEBUG": "false",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SEM_BEHIND_TLS_PROXY": "true",
}


def run_manage(*args: str, env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "SECRET_KEY", "DEBUG", "SEM_EMBEDDED"}
    }
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env_overrides=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_missing_secret_key_fails_loudly_outside_embedded_mode():
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != "SECRET_KEY"}
    result = run_manage("check", env_overrides=env)
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_secret_key_is_the_environment_value_in_production():
    result = run_manage(
        "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", env_overrides=PRODUCTION_ENV
    )
    assert result.returncode == 0, result.stderr
    # (Django 5.2's shell may print a line about auto-imported objects first.)
    assert result.stdout.strip().splitlines()[-1] == PRODUCTION_ENV["SECRET_KEY"]


def test_no_secret_key_is_written_in_the_code_or_the_compose_file():
    """Production reads the key from the environment (tests above); laptop mode makes a random one in var/."""
    import re

    assignments = [
        (path.relative_to(REPO_ROOT), line.strip())
        for folder in ("portal", "workers", "classifier")
        for path in (REPO_ROOT / folder).rglob("*.py")
        for line in path.read_text().splitlines()
        if re.match(r"\s*SECRET_KEY\s*=", line)
    ]
    assert [str(path) for path, _ in assignments] == ["portal/settings.py"]
    literals = set(re.findall(r"[\"']([^\"']*)[\"']", assignments[0][1]))
    assert literals <= {"SECRET_KEY", "", "secret-key"}, assignments[0][1]  # names, never a key
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "SECRET_KEY: ${SECRET_KEY:?" in compose  # compose refuses to start without it


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "is not a boolean"),
        ("SEM_MAX_UPLOAD_BYTES", "lots", "is not a size"),
        ("SEM_MAX_IMAGE_PIXELS", "-5", "must be at least 1"),
        ("SEM_GATE_MAX_RECALL_DROP", "7", "must be within"),
        ("DATABASE_URL", "mysql://x@y/z", "is not supported"),
        ("CACHE_URL", "memcached://cache:11211", "is not supported"),
        ("MEDIA_STORAGE_URL", "/srv/media", "is not a bucket URL"),
        ("MODEL_STORAGE_URL", "s3:///no-bucket", "is not a bucket URL"),
        ("S3_ADDRESSING_STYLE", "sideways", "must be one of"),
    ],
)
def test_bad_environment_values_refuse_to_start(name, value, message):
    result = run_manage("check", env_overrides={**PRODUCTION_ENV, name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_size_helper_accepts_units(monkeypatch):
    from portal.env import env_size_bytes

    for text, expected in [("500000", 500000), ("200MB", 200 * 10**6), ("1GiB", 1024**3), ("512k", 512 * 1024)]:
        monkeypatch.setenv("SEM_TEST_SIZE", text)
        assert env_size_bytes("SEM_TEST_SIZE", 1) == expected


def test_database_url_parsing():
    from portal.env import parse_database_url

    pg = parse_database_url("postgres://u%40x:p%3Aw@db.example:6543/sem?sslmode=require")
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == (
        "u@x",
        "p:w",
        "db.example",
        "6543",
        "sem",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert parse_database_url("sqlite:////abs/db.sqlite3")["NAME"] == "/abs/db.sqlite3"
    assert parse_database_url("sqlite:///var/db.sqlite3")["NAME"] == "var/db.sqlite3"


def test_cache_url_parsing_shares_throttle_counters_between_processes(tmp_path):
    from portal.env import parse_cache_url

    assert parse_cache_url("redis://cache:6379/1", tmp_path)["BACKEND"].endswith("RedisCache")
    assert parse_cache_url("file:///srv/cache", tmp_path)["LOCATION"] == "/srv/cache"
    default = parse_cache_url("", tmp_path)
    assert default["BACKEND"].endswith("FileBasedCache") and default["LOCATION"] == str(tmp_path)


def test_embedded_mode_makes_a_private_random_key_once(tmp_path):
    env = {"SEM_EMBEDDED": "true", "SEM_VAR_DIR": str(tmp_path)}  # run_manage drops SECRET_KEY and DATABASE_URL
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_manage("shell", "-c", code, env_overrides=env)
    second = run_manage("shell", "-c", code, env_overrides=env)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret-key").read_text()
    assert len(key) >= 50 and first.stdout.split()[-1] == second.stdout.split()[-1] == key
    assert (tmp_path / "secret-key").stat().st_mode & 0o077 == 0


def test_processes_starting_together_agree_on_the_embedded_key(tmp_path):
    """gunicorn workers, the Celery worker and beat may all create the key at once: one wins."""
    from concurrent.futures import ThreadPoolExecutor

    from portal.env import local_secret_key

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: local_secret_key(tmp_path / "secret-key"), range(32)))
    assert keys == {(tmp_path / "secret-key").read_text()}
    assert [p.name for p in tmp_path.iterdir()] == ["secret-key"]  # no partial files left
