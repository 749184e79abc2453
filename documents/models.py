from django.conf import settings
from django.db import models

from copilot.storage import StorageAlias
from patients.models import Patient

STORAGE_ALIAS = "documents"
FOLDER = "reports"


def document_storage():
    return StorageAlias(STORAGE_ALIAS)


class PatientDocument(models.Model):
    """A clinical document (PDF) of a patient.

    The `file` column keeps the prototype's name `file_url`; it stores the
    storage name, and the API derives the URL from it.
    """

    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, related_name="documents", db_index=False
    )
    document_name = models.CharField(max_length=200)
    document_type = models.CharField(max_length=50, default="PDF")
    file = models.FileField(
        storage=document_storage, max_length=255, db_column="file_url"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)

    original_filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    size = models.BigIntegerField(default=0, help_text="Size in bytes.")
    sha256 = models.CharField("SHA-256", max_length=64, blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        db_table = "patient_documents"
        ordering = ["-uploaded_at", "-id"]
        indexes = [
            models.Index(fields=["patient"], name="idx_documents_patient_id"),
        ]

    def __str__(self):
        return f"Document {self.pk}"

    @property
    def stored_names(self):
        return [self.file.name] if self.file.name else []
