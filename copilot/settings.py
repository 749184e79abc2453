"""Settings, read from the environment and an optional .env file.

Every variable is listed with its default in .env.example. With no configuration
the project runs on SQLite and stores files on the local disk under MEDIA_ROOT.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

# Used only while DEBUG is on, so a development key never signs production data.
DEVELOPMENT_SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or in .env, for "
            "example with SECRET_KEY=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'), or set DEBUG=true for development."
        )
    SECRET_KEY = DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "copilot",
    "patients",
    "scans",
    "documents",
]

MIDDLEWARE = [
    "copilot.requestid.RequestIDMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "copilot.middleware.RequestBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "copilot.audit.AuditMiddleware",
]

ROOT_URLCONF = "copilot.urls"
WSGI_APPLICATION = "copilot.wsgi.application"
APPEND_SLASH = False

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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
# Opening a PostgreSQL connection cost about as much as serving a read, so each
# worker thread keeps its connection, checked before it is reused.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# The API's rate limits count in this cache. The default lives in each process;
# with several workers use a shared one, for example dbcache://cache_table
# (after `manage.py createcachetable`) or a Redis URL.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out login is refused before its password is checked.
    "copilot.auth.LoginLockoutBackend",
    "copilot.auth.SingleQueryModelBackend",
]

# Proxies in front of this server whose X-Forwarded-For is trusted; 0 ignores it.
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
PROXY_COUNT = env.int("PROXY_COUNT", default=1 if BEHIND_TLS_PROXY else 0)

# Failed logins on the admin and POST /auth/token (django-axes): after
# LOGIN_FAILURE_LIMIT failures of one username from one address, that pair is
# refused for LOGIN_LOCKOUT_MINUTES, with 429. A success resets the count.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "copilot.audit.client_address"
# Successful logins are in the audit trail; axes keeps only the failures.
AXES_DISABLE_ACCESS_LOG = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# Files

MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATIC_URL = "/static/"
WHITENOISE_USE_FINDERS = True

MAX_UPLOAD_SIZE = env.int("MAX_UPLOAD_SIZE", default=100 * 1024 * 1024)
# Uploads above this size are spooled to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("FILE_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)
FILE_UPLOAD_TEMP_DIR = env.str("FILE_UPLOAD_TEMP_DIR", default=None)
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# Cloudinary stores scans and documents when credentials are set, either as
# CLOUDINARY_URL or as the three CLOUDINARY_* variables. The SDK reads them from
# the environment too. Without them nothing imports the Cloudinary packages.
CLOUDINARY_URL = env.str("CLOUDINARY_URL", default="")
_cloudinary_credentials = {
    "CLOUD_NAME": env.str("CLOUDINARY_CLOUD_NAME", default=""),
    "API_KEY": env.str("CLOUDINARY_API_KEY", default=""),
    "API_SECRET": env.str("CLOUDINARY_API_SECRET", default=""),
}
CLOUDINARY_ENABLED = bool(CLOUDINARY_URL) or all(_cloudinary_credentials.values())
# django-cloudinary-storage copies these credentials into the SDK when present,
# so empty ones must not be passed: they would override CLOUDINARY_URL.
CLOUDINARY_STORAGE = (
    _cloudinary_credentials if all(_cloudinary_credentials.values()) else {}
)
# "authenticated" makes every file URL signed, so it cannot be guessed.
CLOUDINARY_DELIVERY_TYPE = env.str("CLOUDINARY_DELIVERY_TYPE", default="upload")
if CLOUDINARY_DELIVERY_TYPE not in ("upload", "authenticated"):
    raise ImproperlyConfigured(
        f"CLOUDINARY_DELIVERY_TYPE is {CLOUDINARY_DELIVERY_TYPE!r}. Set it to "
        "'upload' or 'authenticated' (recommended for patient data)."
    )
# Seconds before any call to Cloudinary gives up.
CLOUDINARY_TIMEOUT = env.float("CLOUDINARY_TIMEOUT", default=30.0)
# Files larger than this many bytes are uploaded in chunks of CLOUDINARY_CHUNK_SIZE
# bytes (Cloudinary wants chunks of at least 5 MB). A file sent in one request is
# held in memory about twice by the SDK, so the threshold is one chunk.
CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD = env.int(
    "CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD", default=20_000_000
)
CLOUDINARY_CHUNK_SIZE = env.int("CLOUDINARY_CHUNK_SIZE", default=20_000_000)

LOCAL_STORAGE = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"location": MEDIA_ROOT, "base_url": MEDIA_URL},
}
CLOUDINARY_STORAGE_BACKEND = {"BACKEND": "copilot.cloudinary.CloudinaryStorage"}
FILE_STORAGE = CLOUDINARY_STORAGE_BACKEND if CLOUDINARY_ENABLED else LOCAL_STORAGE
# Static files stay on the local disk, served by WhiteNoise. The
# "cloudinary_storage" app is not installed: the storage class needs no app, and
# the app's collectstatic reads STATICFILES_STORAGE, which Django 5.1 removed.
STORAGES = {
    "default": LOCAL_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "scans": FILE_STORAGE,
    "documents": FILE_STORAGE,
}

# API

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "copilot.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["copilot.permissions.ModelPermissions"],
    "DEFAULT_PAGINATION_CLASS": "copilot.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "copilot.exceptions.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "copilot.throttling.UserRateThrottle",
        "copilot.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_RATE_USER", default="600/minute"),
        "anon": env.str("API_RATE_ANON", default="60/minute"),
        "login": env.str("API_RATE_LOGIN", default="10/minute"),
    },
    # Rate limits count per REMOTE_ADDR unless trusted proxies forward another address.
    "NUM_PROXIES": PROXY_COUNT,
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Radiologist's Copilot API",
    "DESCRIPTION": "Patients, X-ray scans and clinical documents.",
    "VERSION": "2.1.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Security. The secure defaults apply whenever DEBUG is off.

SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    if not SECURE_SSL_REDIRECT:
        # The proxy redirects HTTP to HTTPS itself.
        SILENCED_SYSTEM_CHECKS = ["security.W008"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Audit trail: which models are audited, and the attribute of each that contains
# the patient's id. Entries older than AUDIT_RETENTION_DAYS are removed by
# `manage.py prune_audit`; 0 keeps them forever.
AUDIT_MODELS = {
    "patients.Patient": "id",
    "scans.Scan": "patient_id",
    "documents.PatientDocument": "patient_id",
}
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=6 * 366)

# Log lines name ids, never patient names, MRNs, file contents or secrets.
# django.request logs the path without the query string, which may carry a
# ?search= name; the gunicorn access log is set up the same way in
# copilot/gunicorn_conf.py.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "copilot.requestid.RequestIDFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s "
            "request_id=%(request_id)s %(message)s"
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
