from rest_framework import serializers

from copilot.storage import file_url
from documents.models import PatientDocument


class DocumentSerializer(serializers.ModelSerializer):
    """A stored document: the guide's fields first, then file details."""

    patient_id = serializers.IntegerField(read_only=True)
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = PatientDocument
        fields = [
            "id",
            "patient_id",
            "document_name",
            "document_type",
            "file_url",
            "uploaded_at",
            "original_filename",
            "content_type",
            "size",
            "sha256",
        ]
        read_only_fields = fields

    def get_file_url(self, document) -> str:
        return file_url(self.context.get("request"), document.file)


class DocumentUploadSerializer(serializers.Serializer):
    """The form fields of POST /patients/{id}/upload/document."""

    file = serializers.FileField(help_text="A PDF (pdf).")
    document_name = serializers.CharField(max_length=200)
    document_type = serializers.CharField(
        max_length=50, required=False, allow_blank=True, help_text="Defaults to PDF."
    )

    def validate_document_name(self, value):
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value
