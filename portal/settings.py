"""The one settings module. Every deployment knob is an environment variable (see README).

Embedded defaults (no env set): SQLite and media under var/, Celery on kombu's filesystem
transport, so `make run` works on a laptop with no servers. Set DATABASE_URL and
CELERY_BROKER_URL to use PostgreSQL and Redis.
"""

import datetime
import os
from pathlib import Path

from classifier.config import TrainConfig
from portal.env import (
    env_bool,
    env_choice,
    env_duration_s,
    env_float,
    env_int,
    env_list,
    env_path,
    env_rate,
    env_size_bytes,
    env_str,
    local_secret_key,
    parse_cache_url,
    parse_database_url,
    parse_storage_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("SEM_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
# Embedded mode is the laptop quick start (no DATABASE_URL): a random key kept in var/secret-key and
# plain-HTTP cookies are acceptable there; any real deployment sets DATABASE_URL and must set SECRET_KEY.
EMBEDDED = env_bool("SEM_EMBEDDED", "DATABASE_URL" not in os.environ)
SECRET_KEY = (
    (env_str("SECRET_KEY", "") or local_secret_key(VAR_DIR / "secret-key"))
    if (DEBUG or EMBEDDED)
    else env_str("SECRET_KEY")
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "portal.request_guard.csrf_failure"  # the JSON error body under /api/

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
    "drf_spectacular_sidecar",  # vendored Swagger UI / ReDoc for /api/docs/
    "django_celery_beat",
    "axes",  # failed-login counting and lockout (portal/login_guard.py)
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.request_guard.HostileInputMiddleware",  # 400 for NUL bytes in URLs and for values the database refuses
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Caps request bodies on their Content-Length before the CSRF check (or a view) reads them; anonymous
    # requests never spool files; throttles web uploads (portal/request_limits.py).
    "portal.request_limits.RequestBodyLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.DatabaseUnavailableMiddleware",  # 503, not 500, while the database restarts
    "axes.middleware.AxesMiddleware",  # the locked-out page (429) for a login refused by LoginGuardBackend
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
                "portal.web.context.navigation",
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
# Brute-force protection (portal/login_guard.py): an account, or a client address, that failed
# SEM_LOGIN_FAILURE_LIMIT times is locked for SEM_LOGIN_LOCKOUT_MINUTES after its last failure. Counted in
# the database, so it holds while the cache is down.
AUTHENTICATION_BACKENDS = [
    "portal.login_guard.LoginGuardBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("SEM_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env_int("SEM_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks
AXES_RESET_ON_SUCCESS = False  # else logging into one's own account between guesses resets the address's count
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_CALLABLE = "portal.login_guard.lockout_response"
AXES_CLIENT_IP_CALLABLE = "portal.login_guard.client_ip"
AXES_VERBOSE = False
# Reverse proxies in front of the web processes that append the client's address to X-Forwarded-For
# (0: clients connect directly, REMOTE_ADDR is the client).
SEM_PROXY_COUNT = env_int("SEM_PROXY_COUNT", 0, minimum=0)
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
# API throttle counters, shared by all web processes (see parse_cache_url).
CACHES = {"default": parse_cache_url(env_str("CACHE_URL", ""), VAR_DIR / "cache")}
# --- Media and model storage (docs/operations.md, "Object storage") -------------------------------
# Unset: files under MEDIA_ROOT and MODEL_DIR, on one host or a shared (NFS) mount. `s3://bucket/prefix`:
# an S3-compatible object store (AWS S3, MinIO, Ceph RGW), and workers need no shared disk: each keeps a
# local read-through cache (SEM_WORKER_CACHE_DIR). Models default to `models/` beside the media.
MEDIA_BUCKET = parse_storage_url("MEDIA_STORAGE_URL", env_str("MEDIA_STORAGE_URL", ""))
MODEL_BUCKET = parse_storage_url(
    "MODEL_STORAGE_URL",
    env_str("MODEL_STORAGE_URL", f"s3://{MEDIA_BUCKET[0]}/{MEDIA_BUCKET[1]}/models" if MEDIA_BUCKET else ""),
)
# Object storage downloads: streamed through the web process (default), or a redirect to a signed URL
# valid this long, handed out only after the same access check (the store must be reachable by browsers).
SEM_SIGNED_DOWNLOADS = env_bool("SEM_SIGNED_DOWNLOADS", False)
SEM_SIGNED_URL_EXPIRY_S = env_int("SEM_SIGNED_URL_EXPIRY_S", 60, minimum=5)
S3_OPTIONS = {
    "endpoint_url": env_str("S3_ENDPOINT_URL", "") or None,  # MinIO, Ceph RGW; unset: AWS
    "region_name": env_str("S3_REGION", "us-east-1"),
    "access_key": env_str("S3_ACCESS_KEY_ID", "") or None,  # unset: boto3's own chain (AWS_*, instance role)
    "secret_key": env_str("S3_SECRET_ACCESS_KEY", "") or None,
    "addressing_style": env_choice("S3_ADDRESSING_STYLE", "path", {"path", "virtual", "auto"}),
    "signature_version": "s3v4",  # signed URLs that AWS, MinIO and Ceph RGW all accept
    "file_overwrite": False,  # a taken name gets a suffix, as on the file system
    "querystring_expire": SEM_SIGNED_URL_EXPIRY_S,
    "max_memory_size": 8 * 1024**2,  # larger objects opened as files spool to FILE_UPLOAD_TEMP_DIR
}


def _storage(bucket: tuple[str, str] | None, local_backend: str) -> dict:
    if bucket is None:
        return {"BACKEND": local_backend}
    return {
        "BACKEND": "portal.s3_storage.S3MediaStorage",
        "OPTIONS": {**S3_OPTIONS, "bucket_name": bucket[0], "location": bucket[1].strip("/")},
    }


STORAGES = {
    # No half-written files on either backend (portal/storage.py, portal/s3_storage.py).
    "default": _storage(MEDIA_BUCKET, "portal.storage.MediaStorage"),
    "models": _storage(MODEL_BUCKET, "portal.storage.ModelFileStorage"),
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}

# --- Uploads ---------------------------------------------------------------------------------
# Largest accepted file (bytes) and largest decoded image (pixels): guards against decompression bombs.
SEM_MAX_UPLOAD_BYTES = env_size_bytes("SEM_MAX_UPLOAD_BYTES", 200 * 1024**2)
SEM_MAX_IMAGE_PIXELS = env_int("SEM_MAX_IMAGE_PIXELS", 100_000_000, minimum=1)
# Decoded size of the first page, from the header before decoding: width x height x samples per pixel x
# bytes per sample. The pixel limit alone lets a 1,000-samples-per-pixel TIFF decode to gigabytes.
SEM_MAX_DECODED_BYTES = env_size_bytes("SEM_MAX_DECODED_BYTES", 256 * 1024**2)
# Longest side / shortest side: a 1 x 200,000 strip is no micrograph (and its derivative would be huge).
SEM_MAX_ASPECT_RATIO = env_float("SEM_MAX_ASPECT_RATIO", 20.0, minimum=1.0)
# Untrusted files are decoded in a child process (portal/services/ingestion/decode_guard.py) capped at this much
# address space above its start and killed after this long: a decoder surprise refuses one upload
# ("decoding_limit") instead of taking the web or worker process down. Off only for debugging. The deadline
# stays well under gunicorn's 120 s worker timeout (Dockerfile): the decode must end before the request does.
# The largest accepted images take a few seconds.
SEM_DECODE_IN_CHILD = env_bool("SEM_DECODE_IN_CHILD", True)
SEM_DECODE_MEMORY_BYTES = env_size_bytes("SEM_DECODE_MEMORY_BYTES", 2 * 1024**3)
SEM_DECODE_TIMEOUT_S = env_duration_s("SEM_DECODE_TIMEOUT_S", "60s")
SEM_TEST_SPLIT_PERCENT = env_int("SEM_TEST_SPLIT_PERCENT", 15, minimum=0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024**2
# Request bodies larger than that are spooled to files here (and ingestion's own copy too), not to
# /tmp: the sweeper removes what killed web processes leave behind (older than an hour). Put it where
# the sweeper's worker sees it too (docker-compose: under the media volume).
FILE_UPLOAD_TEMP_DIR = str(env_path("SEM_UPLOAD_TEMP_DIR", VAR_DIR / "upload-spool"))
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("SEM_MAX_FILES_PER_REQUEST", 500, minimum=1)
# Workers' local copies of derivatives and model artifacts from object storage, keyed by sha256, checked
# when loaded, least recently used removed beyond this size (portal/services/delivery/file_cache.py).
SEM_WORKER_CACHE_DIR = env_path("SEM_WORKER_CACHE_DIR", VAR_DIR / "worker-cache")
SEM_WORKER_CACHE_MAX_BYTES = env_size_bytes("SEM_WORKER_CACHE_MAX", 20 * 1024**3)

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
# Workers (issue 4). Three queues: `gpu` runs classification and training (a GPU host runs a worker
# on it; without a GPU the same tasks run on the CPU), `default` runs webhook deliveries, and
# `maintenance` the beat's periodic tasks (the sweeper, the retrain check, watch-folder scans), so that
# a flood of deliveries never makes the sweeper late. A worker that does everything: -Q gpu,default,maintenance.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "workers.classify_images": {"queue": "gpu"},
    "workers.reclassify_backlog": {"queue": "gpu"},
    "workers.train_model": {"queue": "gpu"},
    "workers.compute_heatmap": {"queue": "gpu"},
    "workers.sweep": {"queue": "maintenance"},
    "workers.maybe_retrain": {"queue": "maintenance"},
    "workers.scan_watch_folders": {"queue": "maintenance"},
    "workers.webhooks.*": {"queue": "default"},
}
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
# A killed worker must not lose its message: acknowledge after the task, requeue when the pool
# process dies, and take one message at a time so a long batch never hides others in a prefetch.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Two pool processes by default, so a long training on the gpu queue does not hold up new uploads.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 2, minimum=1)
# Recycle pool processes: training leaves hundreds of MB behind, torch allocators fragment.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 200, minimum=1)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_MB", 6144, minimum=256) * 1024  # KiB
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True  # they are redelivered (acks_late)
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu does not create the folders, and puts its exchange table in ./control unless told.
    CELERY_BROKER_TRANSPORT_OPTIONS["control_folder"] = str(VAR_DIR / "broker" / "control")
    # kombu's filesystem transport with atomic message files (a worker could read a half-written one).
    CELERY_BROKER_TRANSPORT = "portal.broker_transport:Transport"
    # The folder is polled; kombu's default of 1 s idles a worker for up to a second between batches.
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.1
    for _folder in ("out", "processed", "control"):
        (VAR_DIR / "broker" / _folder).mkdir(parents=True, exist_ok=True)
else:
    # Redis delivers lower numbers first; background re-classification is sent with priority 9.
    CELERY_BROKER_TRANSPORT_OPTIONS.update({"queue_order_strategy": "priority", "priority_steps": [0, 3, 6, 9]})

# --- Classification and retraining -----------------------------------------------------------
SEM_CLASSIFY_BATCH_SIZE = env_int("SEM_CLASSIFY_BATCH_SIZE", 32, minimum=1)
SEM_PENDING_SWEEP_AFTER_S = env_int("SEM_PENDING_SWEEP_AFTER_S", 300, minimum=10)
# A web process reloads its similar-image matrix (seconds at 100,000 images) at most this often after
# labels or classifications change; a promotion or roll-back reloads at once (portal/services/curation/similar.py).
SEM_SIMILAR_REFRESH_S = env_int("SEM_SIMILAR_REFRESH_S", 30, minimum=0)
SEM_RETRAIN_MIN_NEW_LABELS = env_int("SEM_RETRAIN_MIN_NEW_LABELS", 50, minimum=1)
SEM_RETRAIN_CRON = env_str("SEM_RETRAIN_CRON", "0 2 * * *")
# After a review session (no new curated label for SEM_REFIT_QUIET_S seconds), a frozen-feature production
# model's head is refitted on its stored embeddings once this many curated train labels changed (0: never);
# the nightly full training still runs (classifier/head_refit.py).
SEM_REFIT_MIN_NEW_LABELS = env_int("SEM_REFIT_MIN_NEW_LABELS", 10, minimum=0)
SEM_REFIT_QUIET_S = env_int("SEM_REFIT_QUIET_S", 180, minimum=0)
SEM_TRAINING_TIMEOUT_S = env_int("SEM_TRAINING_TIMEOUT_S", 6 * 3600, minimum=60)
SEM_GATE_MACRO_F1_TOLERANCE = env_float("SEM_GATE_MACRO_F1_TOLERANCE", 0.0, minimum=0.0, maximum=1.0)
SEM_GATE_MAX_RECALL_DROP = env_float("SEM_GATE_MAX_RECALL_DROP", 0.05, minimum=0.0, maximum=1.0)
SEM_GATE_FIRST_MODEL_FLOOR = env_float("SEM_GATE_FIRST_MODEL_FLOOR", 0.0, minimum=0.0, maximum=1.0)
# A first model must beat always answering the largest test class by this much accuracy (a negative
# value lets a worse one through: only the tests of the loop's mechanics do that).
SEM_GATE_BASELINE_MARGIN = env_float("SEM_GATE_BASELINE_MARGIN", 0.05, minimum=-1.0, maximum=1.0)
# A prediction below this confidence (plus its model's calibration error) is shown as "uncertain"
# (ModelVersion.uncertain_below): with temperature-scaled confidences, a 0.6 answer is wrong 4 times in 10.
SEM_UNCERTAIN_BELOW = env_float("SEM_UNCERTAIN_BELOW", 0.6, minimum=0.0, maximum=1.0)
# Prediction sets (classifier.conformal): each set holds the true category with at least this probability
# on images like the model's held-out curated ones; a model with a conformal calibration calls a prediction
# confident when its set is one category (SEMImage.prediction_uncertain), SEM_UNCERTAIN_BELOW otherwise.
SEM_PREDICTION_SET_COVERAGE = env_float("SEM_PREDICTION_SET_COVERAGE", 0.9, minimum=0.5, maximum=0.99)
# SEM detectors give greyscale: an upload whose colourfulness (Hasler & Süsstrunk, classifier.colour) is
# above this is a photo, a map or a colourised picture, out of scope like a blank frame. Under 15 is "not
# colourful" on their scale; real micrographs measure at most 4.1 (bench/RESULTS.md). 0 or below: off.
SEM_COLOUR_OUT_OF_SCOPE = env_float("SEM_COLOUR_OUT_OF_SCOPE", 15.0)
# The gate's uncertainty (portal.services.learning.promotion): a paired, stratified bootstrap of candidate minus
# production on the same test images; promote when the lower bound at this level is above -tolerance.
SEM_GATE_CONFIDENCE = env_float("SEM_GATE_CONFIDENCE", 0.9, minimum=0.5, maximum=0.999)
SEM_GATE_BOOTSTRAP_RESAMPLES = env_int("SEM_GATE_BOOTSTRAP_RESAMPLES", 2000, minimum=1000)
# Below these test-split sizes the gate says it cannot tell instead of deciding on noise.
SEM_GATE_MIN_TEST_IMAGES = env_int("SEM_GATE_MIN_TEST_IMAGES", 30, minimum=0)
SEM_GATE_MIN_TEST_PER_CLASS = env_int("SEM_GATE_MIN_TEST_PER_CLASS", 3, minimum=0)
SEM_RECLASSIFY_AFTER_PROMOTION = env_bool("SEM_RECLASSIFY_AFTER_PROMOTION", True)
# The default learns from frozen ImageNet features (classifier/backbones.py: weights from a pinned
# package, nothing downloads); a torchvision/timm name fine-tunes with progressive resizing instead.
# Their defaults are the classifier's own (classifier.config.TrainConfig), as in the CLI.
SEM_TRAIN_ARCH = env_str("SEM_TRAIN_ARCH", TrainConfig.arch)
SEM_TRAIN_SIZES = [int(size) for size in env_list("SEM_TRAIN_SIZES", [str(size) for size in TrainConfig.sizes])]
# Scheduled and manual runs fit their epochs into this wall-clock budget (measured step times);
# SEM_TRAIN_EPOCHS, when set, fixes the epochs per stage instead.
SEM_TRAIN_BUDGET_S = env_duration_s("SEM_TRAIN_BUDGET", "10min")
SEM_TRAIN_EPOCHS = [int(epochs) for epochs in env_list("SEM_TRAIN_EPOCHS", [])] or None
# A category with fewer curated training images is not offered by the model.
SEM_MIN_IMAGES_PER_CLASS = env_int("SEM_MIN_IMAGES_PER_CLASS", 5, minimum=1)
SEM_PRETRAINED_WEIGHTS = env_str("SEM_PRETRAINED_WEIGHTS", "")
# Workers (issue 4): a running training whose heartbeat (every few seconds) is older than this has
# lost its worker; the sweeper fails it and releases the training lock.
SEM_TRAINING_STALE_AFTER_S = env_int("SEM_TRAINING_STALE_AFTER_S", 600, minimum=30)
SEM_BACKLOG_PRIORITY = 9  # Redis: 0 runs first; new uploads use the default 0
# Files of an upload killed between writing them and its commit are removed by the sweeper after this
# (an upload takes seconds; the grace only has to outlast the slowest one).
SEM_INTERRUPTED_UPLOAD_GRACE_S = env_int("SEM_INTERRUPTED_UPLOAD_GRACE_S", 3600, minimum=30)

# --- REST API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "portal.api.schema.PortalAutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # the browsable API and Swagger UI
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.StableCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "portal.api.throttling.PerTokenRateThrottle",
        "portal.api.throttling.UploadRateThrottle",
    ],
    # Per token (or per session user): "api" for every request, "upload" for image uploads on top.
    "DEFAULT_THROTTLE_RATES": {
        "api": env_rate("SEM_API_RATE", "3000/min"),
        "upload": env_rate("SEM_API_UPLOAD_RATE", "600/min"),
    },
    "EXCEPTION_HANDLER": "portal.api.exceptions.api_exception_handler",
    # JSON bodies (the image upload is multipart: portal/api/views/images.py): one encoding, whose types and
    # nulls mean what the schema says.
    "DEFAULT_PARSER_CLASSES": ["portal.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SEM lab portal API",
    "DESCRIPTION": (
        "Upload SEM images, read classifications, curate labels and manage models (LIMS integration).\n\n"
        "Authenticate with a personal token from /account/tokens/: `Authorization: Bearer sem_...`. "
        'Every 4xx answer has the body `{"error": {"code", "message", "fields"}}`. '
        "Lists use cursor pagination: follow `next` until it is null."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,  # multipart upload and read-only fields get correct request schemas
    # Swagger UI and ReDoc from drf-spectacular-sidecar's vendored files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The default hooks, then the limits the views enforce that serializers cannot state (portal/api/schema.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "portal.api.schema.strict_schema"],
    "ENUM_NAME_OVERRIDES": {
        "ImageStatusEnum": "portal.models.SEMImage.Status",
        "ModelStatusEnum": "portal.models.ModelVersion.Status",
        "TrainingRunStatusEnum": "portal.models.TrainingRun.Status",
        "WebhookDeliveryStatusEnum": "portal.models.WebhookDelivery.Status",
    },
}
# Webhook delivery: attempts per delivery, exponential backoff from BACKOFF_S up to BACKOFF_MAX_S.
SEM_WEBHOOK_MAX_ATTEMPTS = env_int("SEM_WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)
SEM_WEBHOOK_BACKOFF_S = env_float("SEM_WEBHOOK_BACKOFF_S", 30.0, minimum=0.0)
SEM_WEBHOOK_BACKOFF_MAX_S = env_float("SEM_WEBHOOK_BACKOFF_MAX_S", 3600.0, minimum=0.0)
# Redis returns a message that a worker took but never acknowledged (the whole worker died) to its
# queue after this timeout. It must outlast the longest acknowledged-late task (classification: 15 min
# hard limit) and the longest retry countdown (a webhook's backoff), or a message still held by a live
# worker would run twice. Training acknowledges on start, so it does not count (it was 7 hours here).
CLASSIFY_TIME_LIMIT_S = 900
if not CELERY_BROKER_URL.startswith("filesystem") and "CELERY_VISIBILITY_TIMEOUT" not in os.environ:
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = int(
        max(CLASSIFY_TIME_LIMIT_S, SEM_WEBHOOK_BACKOFF_MAX_S) + 600
    )
SEM_WEBHOOK_TIMEOUT_S = env_float("SEM_WEBHOOK_TIMEOUT_S", 10.0, minimum=0.1)
# Deliveries to this server itself (loopback) are refused unless allowed (a LIMS on the same host, the tests).
SEM_WEBHOOK_ALLOW_LOOPBACK = env_bool("SEM_WEBHOOK_ALLOW_LOOPBACK", EMBEDDED)
# Each user may keep this many subscriptions (each one is a delivery per event: a cap on fan-out).
SEM_WEBHOOK_MAX_SUBSCRIPTIONS_PER_USER = env_int("SEM_WEBHOOK_MAX_SUBSCRIPTIONS_PER_USER", 20, minimum=1)

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
