from django.conf import settings
from django.db import models
from django.utils import timezone

from copilot.storage import StorageAlias
from patients.models import Patient

STORAGE_ALIAS = "scans"
FOLDER = "xrays"


def scan_storage():
    return StorageAlias(STORAGE_ALIAS)


class Scan(models.Model):
    """An X-ray image (PNG, JPEG or DICOM) of a patient, with its previews.

    The `file` column keeps the prototype's name `file_url`; it stores the
    storage name of the original, and the API derives the URL from it.
    """

    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, related_name="scans", db_index=False
    )
    file = models.FileField(storage=scan_storage, max_length=255, db_column="file_url")
    body_part = models.CharField(max_length=100)
    view_position = models.CharField(max_length=50, default="PA")
    modality = models.CharField(max_length=10, default="DX")
    scan_date = models.DateTimeField(default=timezone.now)

    original_filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    size = models.BigIntegerField(default=0, help_text="Size in bytes.")
    sha256 = models.CharField("SHA-256", max_length=64, blank=True)
    uploaded_at = models.DateTimeField(auto_now_add=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    preview = models.FileField(storage=scan_storage, max_length=255, blank=True)
    thumbnail = models.FileField(storage=scan_storage, max_length=255, blank=True)

    # DICOM header values; empty for PNG and JPEG scans.
    study_instance_uid = models.CharField(
        "Study Instance UID", max_length=64, blank=True
    )
    series_instance_uid = models.CharField(
        "Series Instance UID", max_length=64, blank=True
    )
    sop_instance_uid = models.CharField("SOP Instance UID", max_length=64, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    photometric_interpretation = models.CharField(max_length=32, blank=True)
    transfer_syntax_uid = models.CharField(
        "Transfer Syntax UID", max_length=64, blank=True
    )
    manufacturer = models.CharField(max_length=64, blank=True)
    dicom_patient_id = models.CharField("DICOM Patient ID", max_length=64, blank=True)

    # Set when a user confirmed storing a DICOM whose PatientID is not the MRN.
    patient_mismatch_confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    patient_mismatch_confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "scans"
        ordering = ["-scan_date", "-id"]
        indexes = [
            models.Index(fields=["patient"], name="idx_scans_patient_id"),
            models.Index(
                fields=["sop_instance_uid"], name="idx_scans_sop_instance_uid"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "sop_instance_uid"],
                condition=~models.Q(sop_instance_uid=""),
                name="scans_unique_sop_instance_per_patient",
            ),
        ]

    def __str__(self):
        return f"Scan {self.pk}"

    @property
    def stored_names(self):
        """Storage names of the original and its previews."""
        return [
            name
            for name in (self.file.name, self.preview.name, self.thumbnail.name)
            if name
        ]

    @property
    def patient_mismatch_confirmed(self):
        return self.patient_mismatch_confirmed_at is not None
