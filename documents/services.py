"""The document upload: one code path for the API and the admin."""

import logging

from django.db import IntegrityError, transaction

from copilot.files import DOCUMENT_KINDS, check_upload
from copilot.storage import StoredFiles, random_name
from documents.models import FOLDER, STORAGE_ALIAS, PatientDocument
from patients.services import get_patient_or_404

logger = logging.getLogger(__name__)

DEFAULT_DOCUMENT_TYPE = "PDF"


def create_document(patient, uploaded, *, document_name, document_type="", user=None):
    """Check, store and record an uploaded PDF document.

    Raises ValidationError (400), PayloadTooLarge (413) or StorageError (502/503),
    and NotFound (404) when the patient is deleted before the row is saved. On
    any of them no row and no file is left behind.
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
        try:
            with transaction.atomic():
                document.save()
        except IntegrityError:
            # A patient deleted since the caller looked it up fails the foreign key.
            get_patient_or_404(patient.pk)
            raise

    logger.info(
        "stored document document_id=%s patient_id=%s size=%s",
        document.pk,
        patient.pk,
        checked.size,
    )
    return document
