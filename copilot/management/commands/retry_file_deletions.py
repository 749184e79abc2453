"""Retry the deletes of stored files that failed after their rows were deleted."""

import logging
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from copilot.models import PendingFileDeletion

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Delete the stored files recorded in pending_file_deletions, once each. "
        "Safe to run from cron: concurrent runs skip the rows another run holds."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--min-age",
            type=int,
            default=60,
            help=(
                "Skip rows younger than this many seconds, which the request "
                "that wrote them is still handling (default 60)."
            ),
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="Try at most this many rows."
        )

    def handle(self, *args, min_age, limit, **options):
        cutoff = timezone.now() - timedelta(seconds=min_age)
        # Rows written during the run wait for the next one, so a run ends.
        last_id = PendingFileDeletion.objects.aggregate(Max("id"))["id__max"] or 0
        deleted = failed = 0
        after = 0

        while limit is None or deleted + failed < limit:
            # One row per transaction: its lock is held only while its file is
            # deleted, and another run skips it instead of waiting.
            with transaction.atomic():
                row = (
                    PendingFileDeletion.objects.select_for_update(skip_locked=True)
                    .filter(pk__gt=after, pk__lte=last_id, created_at__lte=cutoff)
                    .order_by("pk")
                    .first()
                )
                if row is None:
                    break
                after = row.pk
                if row.attempt():
                    deleted += 1
                else:
                    failed += 1

        logger.info("retried file deletions deleted=%s failed=%s", deleted, failed)
        self.stdout.write(f"Deleted {deleted} stored files.")
        if failed:
            raise CommandError(
                f"{failed} deletes failed; they stay in pending_file_deletions "
                "for the next run."
            )
