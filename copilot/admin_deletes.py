"""Admin deletes that lock their rows first.

Two people who delete one row at the same moment both load it, and both call
delete(). The second delete removes nothing, but Django still sends post_delete
for it: the audit trail records a second delete and a second deletion of the
stored files is queued. With the rows locked first, the second request waits,
then finds them gone and deletes nothing. The rows that a delete cascades to,
such as a patient's scans, are locked too, for the same reason.
"""

from django.db import router, transaction
from django.db.models.deletion import Collector


def lock_cascade(model, pks):
    """Lock the rows of `model` with these primary keys and the rows they cascade to.

    Return the primary keys of the rows that still exist. While the rows are
    locked, no other request can delete them or add rows that reference them, so
    the delete that follows collects only rows that it deletes.
    """
    rows = list(
        model._base_manager.select_for_update().filter(pk__in=pks).order_by("pk")
    )
    collector = Collector(using=router.db_for_write(model))
    collector.collect(rows)
    for related, instances in collector.data.items():
        list(
            related._base_manager.select_for_update()
            .filter(pk__in=[instance.pk for instance in instances])
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return [row.pk for row in rows]


class LockedDeleteMixin:
    def delete_model(self, request, obj):
        with transaction.atomic():
            if lock_cascade(type(obj), [obj.pk]):
                super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            # Rows that another request deleted meanwhile are not among the
            # locked ones.
            pks = lock_cascade(
                queryset.model, queryset.order_by().values_list("pk", flat=True)
            )
            super().delete_queryset(request, queryset.model.objects.filter(pk__in=pks))
