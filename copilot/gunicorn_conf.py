"""gunicorn settings: `gunicorn -c python:copilot.gunicorn_conf copilot.wsgi`.

Each value can be changed with gunicorn's own environment variables or options;
the access log is the one to keep as it is.
"""

import multiprocessing
import os

bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# Uploads of large DICOM files and their previews can take a while.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5

accesslog = "-"
# Method and path without the query string (?search= may carry a patient's
# name), no referrer for the same reason, and the request id of the app's logs.
access_log_format = (
    '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'
)
