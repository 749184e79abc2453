import logging

from django.core.files.storage import storages
from django.db import models
from django.utils import timezone

logger = logging.getLogger(__name__)


class PendingFileDeletion(models.Model):
    """A stored file whose row is gone and that still has to be deleted.

    Written in the same transaction as the delete of the row that referenced the
    file, and removed once the storage confirms the delete.
    """

    storage_alias = models.CharField(max_length=50)
    name = models.CharField(max_length=255)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "pending_file_deletions"
        ordering = ["id"]

    def __str__(self):
        return f"{self.storage_alias}:{self.name}"

    def attempt(self):
        """Delete the file from its storage; return True when it is gone."""
        from copilot.storage import StorageError, translate_storage_errors

        try:
            with translate_storage_errors("delete"):
                storages[self.storage_alias].delete(self.name)
        except StorageError as error:
            self.attempts += 1
            self.last_error = str(error)
            self.last_attempt_at = timezone.now()
            # An update, not save(): another process may have finished the row.
            PendingFileDeletion.objects.filter(pk=self.pk).update(
                attempts=models.F("attempts") + 1,
                last_error=self.last_error,
                last_attempt_at=self.last_attempt_at,
            )
            logger.error(
                "delete of stored file failed pending_id=%s alias=%s name=%s "
                "attempts=%s error=%s",
                self.pk,
                self.storage_alias,
                self.name,
                self.attempts,
                error,
            )
            return False

        logger.info(
            "deleted stored file pending_id=%s alias=%s name=%s",
            self.pk,
            self.storage_alias,
            self.name,
        )
        self.delete()
        return True
