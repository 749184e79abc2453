"""Admin deletes that lock their rows first.

Two people who delete one row at the same moment both load it, and both call
delete(). The second delete removes nothing, but Django still sends post_delete
for it: the audit trail records a second delete and a second deletion of the
stored files is queued. With the rows locked first, the second request waits,
then finds them gone and deletes nothing.
"""

from django.db import transaction


class LockedDeleteMixin:
    def delete_model(self, request, obj):
        with transaction.atomic():
            locked = type(obj)._base_manager.select_for_update().filter(pk=obj.pk)
            if locked.values_list("pk", flat=True).first() is not None:
                super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            # Rows that another request deleted meanwhile are not among the
            # locked ones.
            pks = list(queryset.select_for_update().values_list("pk", flat=True))
            super().delete_queryset(request, queryset.model.objects.filter(pk__in=pks))
