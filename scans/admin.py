from django.contrib import admin

from scans.models import Scan


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "patient",
        "body_part",
        "view_position",
        "modality",
        "scan_date",
    ]
    list_filter = ["body_part", "modality", "view_position"]
    search_fields = ["patient__mrn", "patient__name"]
    date_hierarchy = "scan_date"
    list_select_related = ["patient"]
    readonly_fields = [
        field.name for field in Scan._meta.fields if field.name not in ("id",)
    ]

    def has_add_permission(self, request):
        return False
