from rest_framework import serializers

from copilot.storage import file_url
from scans.models import Scan


class ScanSerializer(serializers.ModelSerializer):
    """A stored scan: the guide's fields first, then file and DICOM details."""

    patient_id = serializers.IntegerField(read_only=True)
    file_url = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    patient_mismatch_confirmed_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = Scan
        fields = [
            "id",
            "patient_id",
            "file_url",
            "body_part",
            "view_position",
            "modality",
            "scan_date",
            "preview_url",
            "thumbnail_url",
            "original_filename",
            "content_type",
            "size",
            "sha256",
            "uploaded_at",
            "study_instance_uid",
            "series_instance_uid",
            "sop_instance_uid",
            "rows",
            "columns",
            "photometric_interpretation",
            "transfer_syntax_uid",
            "manufacturer",
            "dicom_patient_id",
            "patient_mismatch_confirmed_by",
            "patient_mismatch_confirmed_at",
        ]
        read_only_fields = fields

    def get_file_url(self, scan) -> str:
        return file_url(self.context.get("request"), scan.file)

    def get_preview_url(self, scan) -> str | None:
        return file_url(self.context.get("request"), scan.preview)

    def get_thumbnail_url(self, scan) -> str | None:
        return file_url(self.context.get("request"), scan.thumbnail)


class ScanUploadSerializer(serializers.Serializer):
    """The form fields of POST /patients/{id}/upload/scan."""

    file = serializers.FileField(
        help_text="PNG, JPEG or DICOM (png, jpg, jpeg, dcm, dicom)."
    )
    body_part = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        help_text="Required unless the DICOM header has BodyPartExamined.",
    )
    view_position = serializers.CharField(
        max_length=50,
        required=False,
        allow_blank=True,
        help_text="Defaults to the DICOM ViewPosition, else PA.",
    )
    modality = serializers.CharField(
        max_length=10,
        required=False,
        allow_blank=True,
        help_text="Defaults to the DICOM Modality, else DX.",
    )
    scan_date = serializers.DateTimeField(
        required=False, help_text="Defaults to the DICOM study date, else now."
    )
    confirm_patient_mismatch = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Store a DICOM whose PatientID differs from the patient's MRN.",
    )
