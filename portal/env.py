"""Typed environment helpers for settings: each fails loudly on a bad value.

In the spirit of paperless-ngx's settings parsers and healthchecks' hc/settings.py:
a misconfigured deployment should refuse to start, not run with a silent default.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from portal.durations import parse_duration

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"Environment variable {name} is required")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        parsed = int(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if minimum is not None and parsed < minimum:
        raise ImproperlyConfigured(f"{name}={parsed} must be at least {minimum}")
    return parsed


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        parsed = float(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if (minimum is not None and parsed < minimum) or (maximum is not None and parsed > maximum):
        raise ImproperlyConfigured(f"{name}={parsed} must be within [{minimum}, {maximum}]")
    return parsed


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = os.environ.get(name, default).strip()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(sorted(choices))}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def env_duration_s(name: str, default: str) -> float:
    """Seconds from '20min', '90s', '1h30min' or a plain number of seconds."""
    value = os.environ.get(name, default)
    try:
        return parse_duration(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}={value!r}: {error}") from None


def env_size_bytes(name: str, default: int) -> int:
    """Accept plain bytes or a suffix: 200MB, 1.5GiB, 512k."""
    value = os.environ.get(name)
    if value is None:
        return default
    text = value.strip().lower().replace(" ", "")
    units = {
        "gib": 1024**3,
        "mib": 1024**2,
        "kib": 1024,
        "gb": 10**9,
        "mb": 10**6,
        "kb": 10**3,
        "g": 1024**3,
        "m": 1024**2,
        "k": 1024,
        "b": 1,
    }
    number, factor = text, 1
    for suffix, scale in units.items():
        if text.endswith(suffix):
            number, factor = text[: -len(suffix)], scale
            break
    try:
        parsed = int(float(number) * factor)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a size (e.g. 200MB, 1GiB, 500000)") from None
    if parsed <= 0:
        raise ImproperlyConfigured(f"{name}={value!r} must be positive")
    return parsed


def parse_database_url(url: str) -> dict:
    """postgres://user:pass@host:port/name or sqlite:///path/to/db.sqlite3."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path.db or sqlite:////absolute/path.db
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or ":memory:",
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgres:// or sqlite://)")


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate: `<count>/<period>` with period second, minute, hour or day (`100/min`)."""
    value = os.environ.get(name, default).strip()
    count, _, period = value.partition("/")
    if not (count.isdigit() and period[:1] in {"s", "m", "h", "d"}):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate (e.g. 3000/min, 10/s, 50000/day)")
    return value


def parse_cache_url(url: str, default_dir: Path) -> dict:
    """Django CACHES["default"] from `redis://host:6379/1`, `file:///path`, or empty (a folder under var/).

    The cache holds API throttle counters: every web process must see the same ones, so the
    per-process memory cache is not offered.
    """
    if not url:
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(default_dir)}
    parsed = urlparse(url)
    if parsed.scheme in {"redis", "rediss"}:
        # Short socket timeouts: an unreachable Redis must not hold a request for minutes (the API
        # throttle falls back to per-process counting when the cache fails, portal/api/throttling.py).
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    if parsed.scheme == "file" and parsed.path:
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": parsed.path}
    raise ImproperlyConfigured(f"CACHE_URL scheme {parsed.scheme!r} is not supported (use redis:// or file:///path)")


def local_secret_key(path: Path) -> str:
    """A random key made on the first run and kept in a private file (laptop mode), so that no
    install shares a key written in the code."""
    import secrets

    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(key)
    try:
        os.link(partial, path)  # never replaces a key another process wrote first
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        os.remove(partial)
    return key


def parse_storage_url(name: str, url: str) -> tuple[str, str] | None:
    """(bucket, key prefix) from `s3://bucket/prefix`; None for an empty value or `file://` (the local
    file system). Anything else refuses to start: a typo must not silently store media on a local disk."""
    url = url.strip()
    if not url or url == "file://":
        return None
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
        raise ImproperlyConfigured(f"{name}={url!r} is not a bucket URL (use s3://bucket or s3://bucket/prefix)")
    return parsed.netloc, parsed.path.strip("/")
