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
            self.last_error = error.log_detail
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
                error.log_detail,
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


class AppendOnlyError(Exception):
    """An attempt to change or delete an audit entry."""


class AuditEntryQuerySet(models.QuerySet):
    """Audit entries can be added and read; updates and deletes raise."""

    def update(self, **kwargs):
        raise AppendOnlyError("Audit entries cannot be changed.")

    def delete(self):
        raise AppendOnlyError(
            "Audit entries cannot be deleted; `manage.py prune_audit` removes "
            "entries older than AUDIT_RETENTION_DAYS."
        )

    def prune(self, before):
        """Delete entries created before `before`; return how many went.

        Only the prune command calls this. On PostgreSQL a trigger rejects every
        other UPDATE or DELETE of the table, so the delete runs in a transaction
        that sets the flag the trigger checks.
        """
        from django.db import connections, transaction

        with transaction.atomic(using=self.db):
            connection = connections[self.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL copilot.audit_prune = 'on'")
            deleted, _ = models.QuerySet.delete(self.filter(created_at__lt=before))
        return deleted


class AuditEntry(models.Model):
    """One read, change, upload, delete or login attempt, and how it ended.

    Entries name users, objects and patients by id only: no patient names, MRNs
    or file contents. They are written once and never changed.
    """

    class Action(models.TextChoices):
        LIST = "list"
        READ = "read"
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"
        LOGIN = "login"
        LOGIN_FAILED = "login_failed"
        TOKEN_ROTATED = "token_rotated"
        TOKEN_REVOKED = "token_revoked"

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        INVALID = "invalid"
        UNAUTHENTICATED = "unauthenticated"
        DENIED = "denied"
        NOT_FOUND = "not_found"
        CONFLICT = "conflict"
        THROTTLED = "throttled"
        FAILED = "failed"
        LOCKED_OUT = "locked_out"
        ERROR = "error"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The user's id and name as they were, not a foreign key: entries outlive
    # users, and deleting a user must not have to change the trail.
    user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    patient_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    route = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    request_id = models.CharField(max_length=64, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        db_table = "audit_entries"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        target = f" {self.object_type} {self.object_id}".rstrip()
        return f"{self.action}{target} by user {self.user_id}: {self.outcome}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit entries cannot be changed.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit entries cannot be deleted.")


class PermissionsVersion(models.Model):
    """A value that changes with every change of users' or groups' permissions.

    Database triggers on the permission, group membership and content type tables
    replace it in the transaction that makes the change, however it is made: the
    admin, Django's models, bulk operations or SQL. Token authentication reads it
    with each token to know whether the permissions it keeps are still current.
    The table has one row, with id 1; without it nothing is kept.
    """

    version = models.CharField(max_length=32)

    class Meta:
        db_table = "permissions_version"

    def __str__(self):
        return self.version
