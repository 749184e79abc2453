"""Settings for the test suite: the normal settings, served over plain HTTP.

The database, the storage and every other setting still come from the
environment, so the same suite runs on SQLite, PostgreSQL and Cloudinary.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-" + "x" * 40)

from copilot.settings import *  # noqa: E402, F403

SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# High enough that no test is throttled by accident; the throttle tests lower them.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {
        "user": "100000/minute",
        "anon": "100000/minute",
        "login": "100000/minute",
    },
}
