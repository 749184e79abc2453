"""Viewset pieces shared by the patient, scan and document endpoints."""

import logging

from django.db import transaction
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from copilot.responses import ErrorSerializer, MessageSerializer

logger = logging.getLogger(__name__)

NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such record.")
INVALID_PAGE = OpenApiResponse(
    ErrorSerializer, description="No such page: ?page= is not a page of the list."
)
INVALID_FIELDS = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Invalid fields: each field name maps to a list of messages.",
)
UNSUPPORTED_MEDIA_TYPE = OpenApiResponse(
    ErrorSerializer, description="The endpoint does not accept the body's Content-Type."
)


class NamedObjectMixin:
    """Name the record in 404 messages: "Scan 5 not found"."""

    object_label = "Object"

    def get_object(self):
        lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
        try:
            return super().get_object()
        except Http404:
            raise NotFound(f"{self.object_label} {lookup} not found") from None


class DeleteWithMessageMixin:
    """Respond to a delete with 200 and {"message": "Scan 5 deleted successfully"}."""

    @extend_schema(responses={200: MessageSerializer, 404: NOT_FOUND})
    def destroy(self, request, *args, **kwargs):
        instance = self.get_object()
        pk = instance.pk
        self.perform_destroy(instance)
        logger.info(
            "deleted %s id=%s user_id=%s", self.object_label, pk, request.user.pk
        )
        return Response(
            {"message": f"{self.object_label} {pk} deleted successfully"},
            status=status.HTTP_200_OK,
        )

    def perform_destroy(self, instance):
        """Delete the row, or raise a 404 when another request deleted it first.

        The row is locked before the delete, so of two requests for one row the
        second waits and finds it gone, instead of reporting a second delete.
        """
        model = type(instance)
        with transaction.atomic():
            locked = model._base_manager.select_for_update().filter(pk=instance.pk)
            if locked.values_list("pk", flat=True).first() is None:
                raise NotFound(f"{self.object_label} {instance.pk} not found")
            instance.delete()


# Ids are BigAutoField values. Django bounds a lookup on a primary key, but not on a
# foreign key, where a larger number fails in the database driver on SQLite.
MAX_ID = 2**63 - 1


def integer_query_param(request, name):
    """Return ?name= as an id, None when absent, or raise a 400 naming it."""
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValidationError({name: [f"'{value}' is not an integer id."]}) from None
    if not 1 <= number <= MAX_ID:
        raise ValidationError({name: [f"'{value}' is not a valid id."]})
    return number


class PatientFilterMixin:
    """Narrow a list to one patient's records with ?patient=ID."""

    def get_queryset(self):
        queryset = super().get_queryset()
        patient_id = integer_query_param(self.request, "patient")
        if patient_id is not None:
            queryset = queryset.filter(patient_id=patient_id)
        return queryset
