"""Service endpoints: the API root, health, the schema, authenticated local file
delivery, and the JSON error pages for requests that no API view handles."""

import logging
import mimetypes

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import storages
from django.db import DatabaseError, connection
from django.http import FileResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes, throttle_classes
from rest_framework.exceptions import NotAuthenticated, NotFound, PermissionDenied
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.reverse import reverse

from copilot import audit
from copilot.exceptions import server_error_body
from copilot.responses import ErrorSerializer
from copilot.storage import StorageError, backend_name, ping_storage

logger = logging.getLogger(__name__)

API_NAME = "Radiologist's Copilot API"


@extend_schema(
    responses=inline_serializer(
        "ApiRoot",
        {
            "name": serializers.CharField(),
            "version": serializers.CharField(),
            "links": serializers.DictField(child=serializers.URLField()),
        },
    )
)
@api_view(["GET"])
@permission_classes([AllowAny])
def api_root(request):
    """Name and version of the API, and links to its main resources."""

    def link(name):
        return reverse(name, request=request)

    return Response(
        {
            "name": API_NAME,
            "version": settings.SPECTACULAR_SETTINGS["VERSION"],
            "links": {
                "health": link("health"),
                "patients": link("patient-list"),
                "scans": link("scan-list"),
                "documents": link("document-list"),
                "schema": link("schema"),
                "docs": link("swagger-ui"),
                "admin": link("admin:index"),
            },
        }
    )


@extend_schema(
    responses={
        (200, "application/json"): inline_serializer(
            "Health",
            {
                "status": serializers.ChoiceField(["healthy", "unhealthy"]),
                "database": serializers.ChoiceField(["connected", "unavailable"]),
                "cloudinary": serializers.ChoiceField(
                    ["configured", "not configured", "unreachable"]
                ),
                "storage": serializers.ChoiceField(["local", "cloudinary"]),
            },
        ),
        (503, "application/json"): inline_serializer(
            "HealthUnavailable",
            {
                "status": serializers.CharField(),
                "database": serializers.CharField(),
                "cloudinary": serializers.CharField(),
                "storage": serializers.CharField(),
            },
        ),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
@throttle_classes([])  # load balancers and probes poll it
def health(request):
    """Report whether the database runs a query and which storage is in use.

    With ?deep=1 the storage is pinged too, and a failed ping returns 503.
    """
    healthy = True
    database = "connected"
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        logger.error("health check: database query failed error=%s", error)
        database = "unavailable"
        healthy = False

    cloudinary = "configured" if settings.CLOUDINARY_ENABLED else "not configured"
    storage = backend_name("scans")
    body = {"database": database, "cloudinary": cloudinary, "storage": storage}

    if request.query_params.get("deep") in ("1", "true", "yes"):
        try:
            for alias in ("scans", "documents"):
                ping_storage(alias)
        except StorageError as error:
            logger.error("health check: storage ping failed error=%s", error.log_detail)
            healthy = False
            if storage == "cloudinary":
                body["cloudinary"] = "unreachable"
            # Anyone may call this endpoint, and the error can name server paths
            # or the storage account, so it goes to the log only.
            reason = "timed out" if error.timed_out else "failed"
            body["storage_error"] = (
                f"Storage ping {reason}. The server log has the error."
            )

    body = {"status": "healthy" if healthy else "unhealthy", **body}
    code = status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE
    return Response(body, status=code)


@extend_schema(exclude=True)
@api_view(["GET", "HEAD"])
@permission_classes([IsAuthenticated])
def serve_stored_file(request, path, alias, folder, permission):
    """Stream a file of the local storage to an authenticated user who may view it.

    Only files that a row of the permission's model stores under exactly this
    name are served.
    """
    if not request.user.has_perm(permission):
        raise PermissionDenied("You do not have permission to view this file.")

    name = f"{folder}/{path}"
    if backend_name(alias) != "local":
        raise NotFound(f"File {name} not found")
    # No stored name contains NUL, and PostgreSQL rejects it in a query.
    if "\x00" in name:
        raise NotFound("File not found")

    # A path with "..", "." or "//" can reach a file of another folder, which
    # another permission guards, so only the exact name of a row is served.
    owner = audit.find_file_owner(permission.replace(".view_", ".", 1), name)
    if owner is None:
        raise NotFound(f"File {name} not found")

    storage = storages[alias]
    try:
        if not storage.exists(name):
            raise NotFound(f"File {name} not found")
        handle = storage.open(name, "rb")
    except (SuspiciousFileOperation, IsADirectoryError) as error:
        raise NotFound(f"File {name} not found") from error

    audit.note_read(request, owner)

    content_type, _ = mimetypes.guess_type(name)
    response = FileResponse(
        handle, content_type=content_type or "application/octet-stream"
    )
    response["Cache-Control"] = "private, no-store"
    return response


serve_stored_file.audit_file_reads = True


class JSONErrorsMixin:
    """Render a view's errors in JSON, like those of every other endpoint.

    The schema and Swagger UI views would render them as YAML or HTML.
    """

    def handle_exception(self, exc):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class DocsView(JSONErrorsMixin, SpectacularSwaggerView):
    """The Swagger UI. A browser without a session goes to the admin's login page."""

    def handle_exception(self, exc):
        if not isinstance(exc, NotAuthenticated):
            return super().handle_exception(exc)

        # A client that prefers JSON, or rejects HTML with q=0, gets the JSON error.
        preferred = self.request._request.get_preferred_type(
            ["application/json", "text/html"]
        )
        if preferred == "text/html":
            response = redirect_to_login(
                self.request.get_full_path(), login_url=reverse("admin:login")
            )
        else:
            response = super().handle_exception(exc)
        # The response depends on Accept, so a shared cache must not reuse it for
        # another client.
        patch_vary_headers(response, ["Accept"])
        return response


class SchemaView(JSONErrorsMixin, SpectacularAPIView):
    """The OpenAPI schema."""

    @extend_schema(
        responses={
            200: OpenApiTypes.OBJECT,
            (404, "application/json"): OpenApiResponse(
                ErrorSerializer, description="Unknown ?format=."
            ),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# Errors outside DRF views (unknown URLs, the admin), as JSON like the API's.


def bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request, exception=None):
    return JsonResponse(
        {"detail": "You do not have permission to perform this action."}, status=403
    )


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request):
    return JsonResponse(server_error_body(), status=500)
