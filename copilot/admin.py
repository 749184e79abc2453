from django.contrib import admin

from copilot.models import AuditEntry, PendingFileDeletion


@admin.register(PendingFileDeletion)
class PendingFileDeletionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "storage_alias",
        "name",
        "attempts",
        "created_at",
        "last_attempt_at",
    ]
    readonly_fields = [field.name for field in PendingFileDeletion._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class UserFilter(admin.SimpleListFilter):
    """Filter by user id, offering the users named in the trail."""

    title = "user"
    parameter_name = "user_id"

    def lookups(self, request, model_admin):
        rows = (
            AuditEntry.objects.exclude(user_id=None)
            .order_by("user_id")
            .values_list("user_id", "username")
            .distinct()
        )
        return [(str(user_id), f"{username} ({user_id})") for user_id, username in rows]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(user_id=self.value())
        return queryset


class PatientFilter(admin.SimpleListFilter):
    """Filter by patient id; ?patient_id=ID works for any id."""

    title = "patient id"
    parameter_name = "patient_id"
    choices_limit = 100

    def lookups(self, request, model_admin):
        ids = (
            AuditEntry.objects.exclude(patient_id=None)
            .order_by("-patient_id")
            .values_list("patient_id", flat=True)
            .distinct()[: self.choices_limit]
        )
        return [(str(patient_id), str(patient_id)) for patient_id in ids]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(patient_id=self.value())
        return queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit trail, read-only: the admin adds, changes and deletes no entries."""

    list_display = [
        "created_at",
        "username",
        "action",
        "object_type",
        "object_id",
        "patient_id",
        "outcome",
        "client_address",
        "route",
    ]
    list_filter = [
        UserFilter,
        PatientFilter,
        "action",
        "outcome",
        "object_type",
        "created_at",
    ]
    search_fields = ["username", "request_id", "route"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in AuditEntry._meta.fields]
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
