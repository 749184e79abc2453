"""Request body limits, checked on the Content-Length header before the body is read."""

import logging

from django.conf import settings
from django.http import JsonResponse
from rest_framework import status

logger = logging.getLogger(__name__)


def body_limit(content_type):
    """Return the largest body allowed for a media type, or None for no limit.

    A multipart body carries one file of up to MAX_UPLOAD_SIZE and form fields of
    up to DATA_UPLOAD_MAX_MEMORY_SIZE. Any other body (JSON, a urlencoded form)
    has no file, so the form limit alone applies: DRF's JSON parser reads the body
    without Django's DATA_UPLOAD_MAX_MEMORY_SIZE check.
    """
    fields = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if content_type.lower().startswith("multipart/"):
        return settings.MAX_UPLOAD_SIZE + (fields or 0)
    return fields


class RequestBodyLimitMiddleware:
    """Reject a body larger than allowed with 413, before reading any of it.

    Django reads a multipart body whole, spooling its file to disk, before the
    upload check can reject the file. Here the declared Content-Length decides,
    so a 10 GB upload costs neither time nor disk.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            logger.warning(
                "rejected request path=%s invalid content_length=%r",
                request.path,
                declared,
            )
            return JsonResponse(
                {"detail": f"Invalid Content-Length header '{declared}'."},
                status=status.HTTP_400_BAD_REQUEST,
            )

        limit = body_limit(request.META.get("CONTENT_TYPE", ""))
        if limit is not None and length > limit:
            logger.warning(
                "rejected request body path=%s content_length=%s limit=%s",
                request.path,
                length,
                limit,
            )
            return JsonResponse(
                {
                    "detail": f"The request body is {length} bytes, larger than "
                    f"the maximum of {limit} bytes."
                },
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )

        return self.get_response(request)
