"""The one settings module. Every deployment knob is an environment variable (see README).

Embedded defaults (no env set): SQLite and media under var/, Celery on kombu's filesystem
transport, so `make run` works on a laptop with no servers. Set DATABASE_URL and
CELERY_BROKER_URL to use PostgreSQL and Redis.
"""

import os
from pathlib import Path

from portal.env import (
    env_bool, env_float, env_int, env_list, env_path, env_size_bytes, env_str, parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("SEM_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
# Embedded mode is the laptop quick start (no DATABASE_URL): a fixed local secret and plain-HTTP
# cookies are acceptable there; any real deployment sets DATABASE_URL and must set SECRET_KEY.
EMBEDDED = env_bool("SEM_EMBEDDED", "DATABASE_URL" not in os.environ)
SECRET_KEY = env_str("SECRET_KEY", "insecure-embedded-key-for-local-use-only" if (DEBUG or EMBEDDED) else None)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if EMBEDDED:
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # the quick start keeps its database and files here
DATABASES = {"default": parse_database_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "staticfiles")
MEDIA_URL = "/media/"
MEDIA_ROOT = env_path("MEDIA_ROOT", VAR_DIR / "media")
MODEL_DIR = env_path("MODEL_DIR", VAR_DIR / "models")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
                    if DEBUG else "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Uploads ---------------------------------------------------------------------------------
# Largest accepted file (bytes) and largest decoded image (pixels): guards against decompression bombs.
SEM_MAX_UPLOAD_BYTES = env_size_bytes("SEM_MAX_UPLOAD_BYTES", 200 * 1024**2)
SEM_MAX_IMAGE_PIXELS = env_int("SEM_MAX_IMAGE_PIXELS", 100_000_000, minimum=1)
SEM_TEST_SPLIT_PERCENT = env_int("SEM_TEST_SPLIT_PERCENT", 15, minimum=0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024**2
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("SEM_MAX_FILES_PER_REQUEST", 500, minimum=1)

# --- Celery ----------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(VAR_DIR / "broker" / "out"),
        "data_folder_out": str(VAR_DIR / "broker" / "out"),
        "processed_folder": str(VAR_DIR / "broker" / "processed"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)}
)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- Classification and retraining -----------------------------------------------------------
SEM_CLASSIFY_BATCH_SIZE = env_int("SEM_CLASSIFY_BATCH_SIZE", 32, minimum=1)
SEM_PENDING_SWEEP_AFTER_S = env_int("SEM_PENDING_SWEEP_AFTER_S", 300, minimum=10)
SEM_RETRAIN_MIN_NEW_LABELS = env_int("SEM_RETRAIN_MIN_NEW_LABELS", 50, minimum=1)
SEM_RETRAIN_CRON = env_str("SEM_RETRAIN_CRON", "0 2 * * *")
SEM_TRAINING_TIMEOUT_S = env_int("SEM_TRAINING_TIMEOUT_S", 6 * 3600, minimum=60)
SEM_GATE_MACRO_F1_TOLERANCE = env_float("SEM_GATE_MACRO_F1_TOLERANCE", 0.0, minimum=0.0, maximum=1.0)
SEM_GATE_MAX_RECALL_DROP = env_float("SEM_GATE_MAX_RECALL_DROP", 0.05, minimum=0.0, maximum=1.0)
SEM_GATE_FIRST_MODEL_FLOOR = env_float("SEM_GATE_FIRST_MODEL_FLOOR", 0.0, minimum=0.0, maximum=1.0)
SEM_RECLASSIFY_AFTER_PROMOTION = env_bool("SEM_RECLASSIFY_AFTER_PROMOTION", True)
SEM_TRAIN_ARCH = env_str("SEM_TRAIN_ARCH", "resnet34")
SEM_TRAIN_SIZES = [int(size) for size in env_list("SEM_TRAIN_SIZES", ["64", "128", "224"])]
SEM_TRAIN_EPOCHS = [int(epochs) for epochs in env_list("SEM_TRAIN_EPOCHS", ["4", "3", "2"])]
SEM_PRETRAINED_WEIGHTS = env_str("SEM_PRETRAINED_WEIGHTS", "")

# --- REST API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SEM lab portal API",
    "DESCRIPTION": "Upload SEM images, read classifications, curate labels and manage models (LIMS integration).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Security (production values come from the environment) -----------------------------------
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not (DEBUG or EMBEDDED))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SEM_BEHIND_TLS_PROXY", False) else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
