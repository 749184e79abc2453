from django.db.models.signals import post_delete
from django.dispatch import receiver

from copilot.storage import delete_files_on_commit
from documents.models import STORAGE_ALIAS, PatientDocument


@receiver(post_delete, sender=PatientDocument)
def delete_document_file(sender, instance, **kwargs):
    """Delete the stored file of every deleted document, including bulk and cascade."""
    delete_files_on_commit(STORAGE_ALIAS, instance.stored_names)
