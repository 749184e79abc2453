from django.contrib import admin

from documents.models import PatientDocument


@admin.register(PatientDocument)
class PatientDocumentAdmin(admin.ModelAdmin):
    list_display = ["id", "document_name", "document_type", "patient", "uploaded_at"]
    list_filter = ["document_type", "uploaded_at"]
    search_fields = ["document_name", "patient__mrn", "patient__name"]
    list_select_related = ["patient"]
    readonly_fields = [
        field.name for field in PatientDocument._meta.fields if field.name != "id"
    ]

    def has_add_permission(self, request):
        return False
