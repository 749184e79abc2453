from django.contrib import admin

from copilot.models import PendingFileDeletion


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
