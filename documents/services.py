"""The document upload: one code path for the API and the admin."""

import logging

from django.db import transaction

from copilot.files import DOCUMENT_KINDS, check_upload
from copilot.storage import StoredFiles, random_name
from documents.models import FOLDER, STORAGE_ALIAS, PatientDocument

logger = logging.getLogger(__name__)

DEFAULT_DOCUMENT_TYPE = "PDF"


def create_document(patient, uploaded, *, document_name, document_type="", user=None):
    """Check, store and record an uploaded PDF document.

    Raises ValidationError (400), PayloadTooLarge (413) or StorageError (502/503);
    on any of them no row and no file is left behind.
    """
    checked = check_upload(uploaded, DOCUMENT_KINDS)
    document = PatientDocument(
        patient=patient,
        document_name=document_name.strip(),
        document_type=(document_type or DEFAULT_DOCUMENT_TYPE).strip().upper(),
        original_filename=checked.original_filename,
        content_type=checked.content_type,
        size=checked.size,
        sha256=checked.sha256,
        uploaded_by=user if user and user.is_authenticated else None,
    )

    with StoredFiles(STORAGE_ALIAS) as stored:
        document.file = stored.save(
            random_name(FOLDER, checked.extension), checked.file
        )
        with transaction.atomic():
            document.save()

    logger.info(
        "stored document document_id=%s patient_id=%s size=%s",
        document.pk,
        patient.pk,
        checked.size,
    )
    return document
