from django.contrib import admin

from documents.models import PatientDocument
from patients.models import Patient
from scans.models import Scan


class ScanInline(admin.TabularInline):
    model = Scan
    fields = ["file", "body_part", "view_position", "modality", "scan_date"]
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = True

    def has_add_permission(self, request, obj=None):
        return False


class DocumentInline(admin.TabularInline):
    model = PatientDocument
    fields = ["document_name", "document_type", "file", "uploaded_at"]
    readonly_fields = fields
    extra = 0
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["mrn", "name", "age", "gender", "scans_count", "documents_count"]
    search_fields = ["mrn", "name"]
    list_filter = ["gender", "created_at"]
    inlines = [ScanInline, DocumentInline]

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts()

    @admin.display(description="Scans", ordering="scans_count")
    def scans_count(self, patient):
        return patient.scans_count

    @admin.display(description="Documents", ordering="documents_count")
    def documents_count(self, patient):
        return patient.documents_count
