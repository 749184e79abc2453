"""API errors that DRF does not define, and the handler that renders them as JSON."""

import logging

from django.conf import settings
from django.core.exceptions import (
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from copilot.requestid import current_request_id
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


def server_error_body():
    """Return the body of a 500: no traceback, and the request id for the logs."""
    return {"detail": "Internal server error.", "request_id": current_request_id()}


def exception_handler(exc, context):
    """Render every API error as a JSON object.

    Storage failures become 502 (503 on a timeout); Django's limits on the
    request body, which DRF does not handle, become 413 or 400; API errors are
    rendered as DRF does, with a bare list of messages wrapped in
    {"detail": ...} so that every error body is an object; any other error is a
    500 whose traceback goes to the log only.
    """
    if isinstance(exc, StorageError):
        code = (
            status.HTTP_503_SERVICE_UNAVAILABLE
            if exc.timed_out
            else status.HTTP_502_BAD_GATEWAY
        )
        view = context.get("view")
        logger.error(
            "storage failure in %s status=%s error=%s",
            type(view).__name__ if view is not None else "-",
            code,
            exc.log_detail,
        )
        return Response({"detail": str(exc)}, status=code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {
                "detail": "The form fields are larger than the maximum of "
                f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
            },
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)

    response = drf_exception_handler(exc, context)
    if response is not None:
        if isinstance(response.data, list):
            messages = " ".join(str(item) for item in response.data)
            response.data = {"detail": messages}
        return response

    view = context.get("view")
    logger.error(
        "unexpected error in %s: %s",
        type(view).__name__ if view is not None else "a view",
        type(exc).__name__,
        exc_info=exc,
    )
    return Response(server_error_body(), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
