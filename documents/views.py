from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from copilot.responses import ErrorSerializer
from copilot.viewsets import (
    INVALID_FIELDS,
    INVALID_PAGE,
    NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    DeleteWithMessageMixin,
    NamedObjectMixin,
    PatientFilterMixin,
)
from documents.models import PatientDocument
from documents.serializers import DocumentSerializer, DocumentUploadSerializer
from documents.services import create_document
from patients.serializers import PatientSummarySerializer
from patients.services import get_patient_or_404

UPLOAD_ERRORS = {
    400: INVALID_FIELDS,
    404: OpenApiResponse(ErrorSerializer, description="Patient not found."),
    413: OpenApiResponse(ErrorSerializer, description="File larger than allowed."),
    415: UNSUPPORTED_MEDIA_TYPE,
    502: OpenApiResponse(ErrorSerializer, description="Storage failed."),
    503: OpenApiResponse(ErrorSerializer, description="Storage timed out."),
}


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "patient", int, description="Only this patient's documents."
            )
        ],
        responses={200: DocumentSerializer, 400: INVALID_FIELDS, 404: INVALID_PAGE},
    ),
    retrieve=extend_schema(responses={200: DocumentSerializer, 404: NOT_FOUND}),
)
class DocumentViewSet(
    NamedObjectMixin,
    PatientFilterMixin,
    DeleteWithMessageMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Clinical documents: list, read, upload to a patient, delete with the file."""

    queryset = PatientDocument.objects.all()
    serializer_class = DocumentSerializer
    object_label = "Document"

    @extend_schema(
        request=DocumentUploadSerializer,
        responses={
            201: inline_serializer(
                "DocumentUploadResponse",
                {
                    "message": serializers.CharField(),
                    "document": DocumentSerializer(),
                    "patient": PatientSummarySerializer(),
                },
            ),
            **UPLOAD_ERRORS,
        },
    )
    def create(self, request, patient_id=None):
        patient = get_patient_or_404(patient_id)
        form = DocumentUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = form.validated_data

        document = create_document(
            patient,
            fields["file"],
            document_name=fields["document_name"],
            document_type=fields.get("document_type", ""),
            user=request.user,
        )
        return Response(
            {
                "message": "Document uploaded successfully",
                "document": DocumentSerializer(
                    document, context={"request": request}
                ).data,
                "patient": PatientSummarySerializer(patient).data,
            },
            status=status.HTTP_201_CREATED,
        )
