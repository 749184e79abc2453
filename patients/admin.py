from django.contrib import admin
from django.db.models import Exists, OuterRef

from copilot.admin_deletes import LockedDeleteMixin
from copilot.admin_uploads import UploadingAdminMixin
from documents.admin import DocumentInline, DocumentUploadInline
from patients.models import Patient
from scans.admin import ScanInline, ScanUploadInline
from scans.models import Scan

# Permissions that let a user upload or delete files on the patient page
# without the permission to change the patient's own fields.
FILE_PERMISSIONS = [
    "scans.add_scan",
    "scans.delete_scan",
    "documents.add_patientdocument",
    "documents.delete_patientdocument",
]


class HasScansFilter(admin.SimpleListFilter):
    title = "has scans"
    parameter_name = "has_scans"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        has_scans = Exists(Scan.objects.filter(patient=OuterRef("pk")))
        if self.value() == "yes":
            return queryset.filter(has_scans)
        if self.value() == "no":
            return queryset.filter(~has_scans)
        return queryset


@admin.register(Patient)
class PatientAdmin(LockedDeleteMixin, UploadingAdminMixin, admin.ModelAdmin):
    """Patients with their scans and documents, the radiologist's workspace."""

    list_display = [
        "mrn",
        "name",
        "age",
        "gender",
        "scans_count",
        "documents_count",
        "last_scan_date",
    ]
    list_display_links = ["mrn", "name"]
    search_fields = ["mrn", "name"]
    list_filter = ["gender", HasScansFilter, "created_at"]
    fields = ["mrn", "name", "age", "gender"]
    inlines = [ScanInline, ScanUploadInline, DocumentInline, DocumentUploadInline]

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts().with_last_scan_date()

    def has_change_permission(self, request, obj=None):
        if super().has_change_permission(request, obj):
            return True
        # Files are uploaded and deleted by saving the patient page. The
        # patient's fields stay read-only for these users (get_readonly_fields).
        return obj is not None and any(
            request.user.has_perm(permission) for permission in FILE_PERMISSIONS
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not super().has_change_permission(request, obj):
            return self.fields
        return super().get_readonly_fields(request, obj)

    @admin.display(description="Scans", ordering="scans_count")
    def scans_count(self, patient):
        return patient.scans_count

    @admin.display(description="Documents", ordering="documents_count")
    def documents_count(self, patient):
        return patient.documents_count

    @admin.display(description="Last scan", ordering="last_scan_date", empty_value="-")
    def last_scan_date(self, patient):
        return patient.last_scan_date
