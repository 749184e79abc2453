from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from copilot.models import AuditEntry


class Command(BaseCommand):
    help = "Delete audit entries older than AUDIT_RETENTION_DAYS."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            help="Keep this many days instead of AUDIT_RETENTION_DAYS.",
        )

    def handle(self, *args, days=None, **options):
        days = settings.AUDIT_RETENTION_DAYS if days is None else days
        if days < 0:
            raise CommandError(f"--days must be 0 or more, not {days}.")
        if days == 0:
            self.stdout.write("Retention is 0 days (keep forever): nothing pruned.")
            return

        before = timezone.now() - timedelta(days=days)
        deleted = AuditEntry.objects.prune(before)
        self.stdout.write(f"Deleted {deleted} audit entries older than {days} days.")
