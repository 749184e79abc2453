"""Request ids: one per request, on the response and in every log line.

A sane incoming X-Request-ID (from a proxy or a frontend) is kept, so one id
follows a request across services. Any other value is replaced by a new id.
"""

import contextvars
import logging
import re
import uuid

HEADER = "X-Request-ID"
NO_REQUEST = "-"

# Letters, digits, dot, underscore and hyphen, 8 to 64 of them: UUIDs and hex
# ids pass, while line breaks, spaces and oversized values do not.
SANE_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")

_current = contextvars.ContextVar("request_id", default=NO_REQUEST)


def current_request_id():
    """Return the id of the request being served, or "-" outside a request."""
    return _current.get()


def request_id_from(incoming):
    """Return `incoming` if it is a sane id, otherwise a new random one."""
    if incoming and SANE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIDMiddleware:
    """Give each request an id, set X-Request-ID on its response, log with it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_from(request.META.get("HTTP_X_REQUEST_ID", ""))
        request.request_id = request_id
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response


class RequestIDFilter(logging.Filter):
    """Add `request_id` to every log record, "-" outside a request."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True
