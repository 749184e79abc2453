"""Admin inlines that store uploaded files through an app's upload service.

The upload services (create_scan, create_document) check, store and record a
file in one call, and their checks need the saved parent row. So an upload
inline validates only its form fields, and the service runs when the admin saves
the related objects, inside the admin's transaction.

When a service rejects a file, UploadingAdminMixin lets the transaction roll
back and deletes the files of uploads stored earlier in the same request. Then
it validates the same POST again with the service's messages attached to the
forms, so the page shows them as form errors and nothing is saved.
"""

import logging

from django import forms
from django.contrib import admin
from rest_framework.exceptions import APIException, ValidationError

from copilot.storage import StorageError, delete_files_now

logger = logging.getLogger(__name__)


class RejectedUploads(Exception):
    """Files rejected by upload services, with `errors` per form prefix."""

    def __init__(self, errors):
        super().__init__(f"{len(errors)} upload(s) rejected")
        self.errors = errors


class UploadForm(forms.ModelForm):
    """A form for one new upload, whose row the service creates instead of save().

    `upload_errors` maps form prefixes to {field name or None: [messages]} from
    a rejected earlier attempt, and clean() adds the ones for this form.
    """

    def __init__(self, *args, upload_errors=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.upload_errors = upload_errors or {}

    def clean(self):
        cleaned_data = super().clean()
        for field_name, messages in self.upload_errors.get(self.prefix, {}).items():
            self.add_error(field_name, messages)
        return cleaned_data


class UploadInline(admin.TabularInline):
    """Empty rows that each upload one file, while another inline lists stored rows.

    Subclasses set `form` (an UploadForm whose Meta.fields lists only the foreign
    key), `fields`, `storage_alias`, and implement upload(). The inline appears
    only to users who may add rows.
    """

    extra = 1
    can_delete = False
    storage_alias = None

    def upload(self, request, parent, cleaned_data):
        """Store the file of one form through the service; return the new row."""
        raise NotImplementedError

    def error_messages(self, error):
        """Return {field name or None: [messages]} for an error of the service."""
        if isinstance(error, ValidationError) and isinstance(error.detail, dict):
            form_fields = self.form.base_fields
            messages = {}
            for field_name, details in error.detail.items():
                key = field_name if field_name in form_fields else None
                texts = details if isinstance(details, list) else [details]
                messages.setdefault(key, []).extend(str(text) for text in texts)
            return messages
        if isinstance(error, APIException):
            return {"file": [str(error.detail)]}
        return {None: [str(error)]}

    def get_queryset(self, request):
        return super().get_queryset(request).none()

    def get_formset(self, request, obj=None, **kwargs):
        # The form's Meta lists only the foreign key, so model validation skips
        # the declared fields, such as "file", which the service fills in.
        kwargs["fields"] = self.form._meta.fields
        formset = super().get_formset(request, obj, **kwargs)
        formset.upload_inline = self
        return formset

    def has_view_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class UploadingAdminMixin:
    """A ModelAdmin mixin that saves UploadInline rows through their services."""

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, UploadInline):
            errors = getattr(request, "upload_errors", {})
            kwargs["form_kwargs"] = {"upload_errors": errors}
        return kwargs

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        request.stored_uploads = []
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except RejectedUploads as rejected:
            self._delete_rolled_back_uploads(request)
            request.upload_errors = rejected.errors
        except BaseException:
            self._delete_rolled_back_uploads(request)
            raise

        # The rows are rolled back. Validating again with the errors attached
        # renders the page with them, and stores nothing.
        request.stored_uploads = []
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_related(self, request, form, formsets, change):
        form.save_m2m()
        errors = {}
        for formset in formsets:
            try:
                self.save_formset(request, form, formset, change)
            except RejectedUploads as rejected:
                errors.update(rejected.errors)
        if errors:
            raise RejectedUploads(errors)

    def save_formset(self, request, form, formset, change):
        inline = getattr(formset, "upload_inline", None)
        if inline is None:
            return super().save_formset(request, form, formset, change)

        formset.new_objects = []
        formset.changed_objects = []
        formset.deleted_objects = []
        errors = {}
        for upload_form in formset.extra_forms:
            if not upload_form.has_changed():
                continue
            try:
                obj = inline.upload(request, formset.instance, upload_form.cleaned_data)
            except (APIException, StorageError) as error:
                logger.info(
                    "admin upload rejected model=%s parent_id=%s error=%s",
                    inline.opts.label,
                    formset.instance.pk,
                    error,
                )
                errors[upload_form.prefix] = inline.error_messages(error)
                continue
            request.stored_uploads.append((inline.storage_alias, obj.stored_names))
            upload_form.instance = obj
            formset.new_objects.append(obj)
        if errors:
            raise RejectedUploads(errors)

    def _delete_rolled_back_uploads(self, request):
        for alias, names in request.stored_uploads:
            delete_files_now(alias, names)
        request.stored_uploads = []
