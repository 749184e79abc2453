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
from patients.serializers import PatientSummarySerializer
from patients.services import get_patient_or_404
from scans.models import Scan
from scans.serializers import ScanSerializer, ScanUploadSerializer
from scans.services import create_scan

UPLOAD_ERRORS = {
    400: INVALID_FIELDS,
    404: OpenApiResponse(ErrorSerializer, description="Patient not found."),
    409: OpenApiResponse(
        ErrorSerializer,
        description="DICOM PatientID differs from the MRN, or SOP Instance UID "
        "already stored for this patient.",
    ),
    413: OpenApiResponse(ErrorSerializer, description="File larger than allowed."),
    415: UNSUPPORTED_MEDIA_TYPE,
    502: OpenApiResponse(ErrorSerializer, description="Storage failed."),
    503: OpenApiResponse(ErrorSerializer, description="Storage timed out."),
}


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("patient", int, description="Only this patient's scans.")
        ],
        responses={200: ScanSerializer, 400: INVALID_FIELDS, 404: INVALID_PAGE},
    ),
    retrieve=extend_schema(responses={200: ScanSerializer, 404: NOT_FOUND}),
)
class ScanViewSet(
    NamedObjectMixin,
    PatientFilterMixin,
    DeleteWithMessageMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """X-ray scans: list, read, upload to a patient, delete with their files."""

    queryset = Scan.objects.select_related("patient_mismatch_confirmed_by")
    serializer_class = ScanSerializer
    object_label = "Scan"

    @extend_schema(
        request=ScanUploadSerializer,
        responses={
            201: inline_serializer(
                "ScanUploadResponse",
                {
                    "message": serializers.CharField(),
                    "scan": ScanSerializer(),
                    "patient": PatientSummarySerializer(),
                },
            ),
            **UPLOAD_ERRORS,
        },
    )
    def create(self, request, patient_id=None):
        patient = get_patient_or_404(patient_id)
        form = ScanUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = form.validated_data

        scan = create_scan(
            patient,
            fields["file"],
            body_part=fields.get("body_part", ""),
            view_position=fields.get("view_position", ""),
            modality=fields.get("modality", ""),
            scan_date=fields.get("scan_date"),
            confirm_patient_mismatch=fields["confirm_patient_mismatch"],
            user=request.user,
        )
        return Response(
            {
                "message": "X-ray scan uploaded successfully",
                "scan": ScanSerializer(scan, context={"request": request}).data,
                "patient": PatientSummarySerializer(patient).data,
            },
            status=status.HTTP_201_CREATED,
        )
