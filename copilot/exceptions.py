"""API errors that DRF does not define, and the handler that renders them as JSON."""

import logging

from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from copilot.storage import StorageError

logger = logging.getLogger(__name__)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with a stored record."
    default_code = "conflict"


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The uploaded file is too large."
    default_code = "payload_too_large"


def exception_handler(exc, context):
    """Render storage failures as 502 (503 on a timeout), and the rest as DRF does."""
    if isinstance(exc, StorageError):
        code = (
            status.HTTP_503_SERVICE_UNAVAILABLE
            if exc.timed_out
            else status.HTTP_502_BAD_GATEWAY
        )
        return Response({"detail": str(exc)}, status=code)

    return drf_exception_handler(exc, context)
