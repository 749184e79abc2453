from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import filters, mixins, status, viewsets
from rest_framework.response import Response

from copilot.responses import ErrorSerializer
from copilot.viewsets import (
    INVALID_FIELDS,
    INVALID_PAGE,
    NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    DeleteWithMessageMixin,
    NamedObjectMixin,
)
from documents.models import PatientDocument
from patients.models import Patient
from patients.serializers import (
    PatientDetailSerializer,
    PatientListSerializer,
    PatientSerializer,
)
from patients.services import delete_patient, save_patient
from scans.models import Scan

CONFLICT = OpenApiResponse(ErrorSerializer, description="The MRN is taken.")


@extend_schema_view(
    list=extend_schema(
        responses={200: PatientListSerializer, 400: INVALID_FIELDS, 404: INVALID_PAGE}
    ),
    create=extend_schema(
        responses={
            201: PatientSerializer,
            400: INVALID_FIELDS,
            409: CONFLICT,
            415: UNSUPPORTED_MEDIA_TYPE,
        }
    ),
    retrieve=extend_schema(responses={200: PatientDetailSerializer, 404: NOT_FOUND}),
    partial_update=extend_schema(
        responses={
            200: PatientSerializer,
            400: INVALID_FIELDS,
            404: NOT_FOUND,
            409: CONFLICT,
            415: UNSUPPORTED_MEDIA_TYPE,
        }
    ),
)
class PatientViewSet(
    NamedObjectMixin,
    DeleteWithMessageMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Patients: create, list with counts, read with scans and documents."""

    queryset = Patient.objects.all()
    object_label = "Patient"
    filter_backends = [filters.SearchFilter]
    search_fields = ["mrn", "name"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "list":
            return queryset.with_counts()
        if self.action == "retrieve":
            # A user sees the scans and documents their permissions let them
            # view, and an empty list for the others.
            user = self.request.user
            scans = Scan.objects.select_related("patient_mismatch_confirmed_by")
            if not user.has_perm("scans.view_scan"):
                scans = scans.none()
            documents = PatientDocument.objects.all()
            if not user.has_perm("documents.view_patientdocument"):
                documents = documents.none()
            return queryset.prefetch_related(
                Prefetch("scans", scans), Prefetch("documents", documents)
            )
        return queryset

    def get_serializer_class(self):
        if self.action == "list":
            return PatientListSerializer
        if self.action == "retrieve":
            return PatientDetailSerializer
        return PatientSerializer

    def perform_create(self, serializer):
        save_patient(serializer)

    def perform_update(self, serializer):
        save_patient(serializer)

    def perform_destroy(self, instance):
        delete_patient(instance, self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        return Response(serializer.data, status=status.HTTP_201_CREATED)
