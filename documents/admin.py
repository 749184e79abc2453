from django import forms
from django.contrib import admin

from copilot.admin_deletes import LockedDeleteMixin
from copilot.admin_files import StoredFileLinksMixin, stored_file_link
from copilot.admin_uploads import UploadForm, UploadInline
from documents.models import STORAGE_ALIAS, PatientDocument
from documents.services import create_document


def open_link(document):
    return stored_file_link(document, "file", "Open")


class DocumentInline(admin.TabularInline):
    """The patient's stored documents, read-only, with a link to open each."""

    model = PatientDocument
    fields = ["document_name", "document_type", "uploaded_at", "open_file"]
    readonly_fields = fields
    extra = 0
    show_change_link = True
    verbose_name_plural = "Documents"

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="File")
    def open_file(self, document):
        return open_link(document)


class DocumentUploadForm(UploadForm):
    """The fields of create_document."""

    file = forms.FileField(help_text="A PDF (pdf).")
    document_name = forms.CharField(max_length=200)
    document_type = forms.CharField(
        max_length=50, required=False, help_text="Defaults to PDF."
    )

    class Meta:
        model = PatientDocument
        fields = ["patient"]


class DocumentUploadInline(UploadInline):
    """New documents, stored by create_document as the API stores them."""

    model = PatientDocument
    form = DocumentUploadForm
    fields = ["file", "document_name", "document_type"]
    storage_alias = STORAGE_ALIAS
    verbose_name = "document upload"
    verbose_name_plural = "Upload documents"

    def upload(self, request, patient, cleaned_data):
        return create_document(
            patient,
            cleaned_data["file"],
            document_name=cleaned_data["document_name"],
            document_type=cleaned_data["document_type"],
            user=request.user,
        )


@admin.register(PatientDocument)
class PatientDocumentAdmin(LockedDeleteMixin, StoredFileLinksMixin, admin.ModelAdmin):
    """Documents are added on the patient page; here they are listed and deleted."""

    file_fields = ["file"]
    list_display = [
        "id",
        "document_name",
        "document_type",
        "patient",
        "uploaded_at",
        "open_file",
    ]
    list_filter = ["document_type", "uploaded_at"]
    search_fields = ["document_name", "patient__mrn", "patient__name"]
    list_select_related = ["patient"]
    fields = [
        "patient",
        "document_name",
        "document_type",
        "open_file",
        "original_filename",
        "content_type",
        "size",
        "sha256",
        "uploaded_at",
        "uploaded_by",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("uploaded_by")

    @admin.display(description="File")
    def open_file(self, document):
        return open_link(document)
