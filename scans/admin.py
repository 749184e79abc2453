from django import forms
from django.contrib import admin
from django.utils.formats import localize
from django.utils.html import format_html
from django.utils.timezone import localtime

from copilot.admin_deletes import LockedDeleteMixin
from copilot.admin_files import (
    StoredFileLinksMixin,
    stored_file_link,
    stored_image_tag,
)
from copilot.admin_uploads import UploadForm, UploadInline
from scans.models import STORAGE_ALIAS, Scan
from scans.services import PatientMismatch, create_scan

ADMIN_CSS = {"all": ["scans/admin.css"]}


def thumbnail_tag(scan):
    return stored_image_tag(
        scan, "thumbnail", f"Thumbnail of scan {scan.pk}", "scan-thumbnail"
    )


def file_links(scan):
    return format_html(
        "{} | {}",
        stored_file_link(scan, "preview", "Preview"),
        stored_file_link(scan, "file", "Original"),
    )


def mismatch_text(scan):
    if not scan.patient_mismatch_confirmed:
        return "-"
    confirmed_by = scan.patient_mismatch_confirmed_by or "an unknown user"
    confirmed_at = localize(localtime(scan.patient_mismatch_confirmed_at))
    return format_html(
        '<strong class="scan-mismatch">The DICOM PatientID “{}” is not the MRN '
        "“{}”.</strong> Stored after confirmation by {} on {}.",
        scan.dicom_patient_id,
        scan.patient.mrn,
        confirmed_by,
        confirmed_at,
    )


class ScanInline(admin.TabularInline):
    """The patient's stored scans, read-only, with links to their files."""

    model = Scan
    fields = [
        "thumbnail_image",
        "body_part",
        "view_position",
        "modality",
        "scan_date",
        "files",
    ]
    readonly_fields = fields
    extra = 0
    show_change_link = True
    verbose_name_plural = "Scans"

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Thumbnail")
    def thumbnail_image(self, scan):
        return thumbnail_tag(scan)

    @admin.display(description="Files")
    def files(self, scan):
        return file_links(scan)


class ScanUploadForm(UploadForm):
    """The fields of create_scan; values left empty come from the DICOM header."""

    file = forms.FileField(
        help_text="PNG, JPEG or DICOM (png, jpg, jpeg, dcm, dicom).",
    )
    body_part = forms.CharField(
        max_length=100,
        required=False,
        help_text="Required unless the DICOM header has BodyPartExamined.",
    )
    view_position = forms.CharField(
        max_length=50, required=False, help_text="DICOM ViewPosition, else PA."
    )
    modality = forms.CharField(
        max_length=10, required=False, help_text="DICOM Modality, else DX."
    )
    scan_date = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"}),
        help_text="DICOM study date, else now.",
    )
    confirm_patient_mismatch = forms.BooleanField(
        required=False,
        help_text="Store a DICOM whose PatientID is not this patient's MRN.",
    )

    class Meta:
        model = Scan
        fields = ["patient"]


class ScanUploadInline(UploadInline):
    """New scans, stored by create_scan as the API stores them."""

    model = Scan
    form = ScanUploadForm
    fields = [
        "file",
        "body_part",
        "view_position",
        "modality",
        "scan_date",
        "confirm_patient_mismatch",
    ]
    storage_alias = STORAGE_ALIAS
    verbose_name = "scan upload"
    verbose_name_plural = "Upload scans"

    def upload(self, request, patient, cleaned_data):
        return create_scan(
            patient,
            cleaned_data["file"],
            body_part=cleaned_data["body_part"],
            view_position=cleaned_data["view_position"],
            modality=cleaned_data["modality"],
            scan_date=cleaned_data["scan_date"],
            confirm_patient_mismatch=cleaned_data["confirm_patient_mismatch"],
            user=request.user,
        )

    def error_messages(self, error):
        if isinstance(error, PatientMismatch):
            return {
                "confirm_patient_mismatch": [
                    f"The DICOM PatientID '{error.dicom_patient_id}' does not match "
                    f"the MRN '{error.mrn}'. Check that the file belongs to this "
                    "patient, then tick this box to store it."
                ]
            }
        return super().error_messages(error)


@admin.register(Scan)
class ScanAdmin(LockedDeleteMixin, StoredFileLinksMixin, admin.ModelAdmin):
    """Scans are added on the patient page; here they are listed and deleted."""

    file_fields = ["file", "preview", "thumbnail"]
    list_display = [
        "id",
        "thumbnail_image",
        "patient",
        "body_part",
        "view_position",
        "modality",
        "scan_date",
    ]
    list_display_links = ["id", "thumbnail_image"]
    list_filter = ["body_part", "modality", "view_position"]
    search_fields = ["patient__mrn", "patient__name"]
    date_hierarchy = "scan_date"
    list_select_related = ["patient"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "patient",
                    "preview_image",
                    "files",
                    "body_part",
                    "view_position",
                    "modality",
                    "scan_date",
                    "patient_mismatch",
                ]
            },
        ),
        (
            "Upload",
            {
                "fields": [
                    "original_filename",
                    "content_type",
                    "size",
                    "sha256",
                    "uploaded_at",
                    "uploaded_by",
                ]
            },
        ),
        (
            "DICOM header",
            {
                "fields": [
                    "dicom_patient_id",
                    "study_instance_uid",
                    "series_instance_uid",
                    "sop_instance_uid",
                    "rows",
                    "columns",
                    "photometric_interpretation",
                    "transfer_syntax_uid",
                    "manufacturer",
                ]
            },
        ),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request):
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("uploaded_by", "patient_mismatch_confirmed_by")
        )

    @admin.display(description="Thumbnail")
    def thumbnail_image(self, scan):
        return thumbnail_tag(scan)

    @admin.display(description="Preview")
    def preview_image(self, scan):
        image = stored_image_tag(
            scan, "preview", f"Preview of scan {scan.pk}", "scan-preview"
        )
        return stored_file_link(scan, "preview", image)

    @admin.display(description="Files")
    def files(self, scan):
        return file_links(scan)

    @admin.display(description="Patient mismatch")
    def patient_mismatch(self, scan):
        return mismatch_text(scan)
