from django.db.models.signals import post_delete
from django.dispatch import receiver

from copilot.storage import delete_files_on_commit
from scans.models import STORAGE_ALIAS, Scan


@receiver(post_delete, sender=Scan)
def delete_scan_files(sender, instance, **kwargs):
    """Delete the stored files of every deleted scan, including bulk and cascade."""
    delete_files_on_commit(STORAGE_ALIAS, instance.stored_names)
