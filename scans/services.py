"""The scan upload: one code path for the API, the admin and the import command."""

import logging

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image
from rest_framework.exceptions import ValidationError

from copilot.exceptions import Conflict
from copilot.files import SCAN_KINDS, check_upload
from copilot.storage import StoredFiles, random_name
from patients.services import get_patient_or_404
from scans.dicom import DicomError, is_dicom, read_header
from scans.models import FOLDER, STORAGE_ALIAS, Scan
from scans.previews import PreviewError, make_previews

logger = logging.getLogger(__name__)

DEFAULT_VIEW_POSITION = "PA"
DEFAULT_MODALITY = "DX"

# Scan fields that a request may give, and the DICOM keyword that fills them.
REQUEST_HEADER_FIELDS = {
    "body_part": "BodyPartExamined",
    "view_position": "ViewPosition",
    "modality": "Modality",
}
# Scan fields filled from the DICOM header only.
HEADER_FIELDS = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "photometric_interpretation": "PhotometricInterpretation",
    "transfer_syntax_uid": "TransferSyntaxUID",
}


class PatientMismatch(Conflict):
    """A DICOM file whose PatientID is not the MRN of the patient it is stored for."""

    def __init__(self, detail, *, mrn, dicom_patient_id):
        super().__init__(detail)
        self.mrn = mrn
        self.dicom_patient_id = dicom_patient_id


def create_scan(
    patient,
    uploaded,
    *,
    body_part="",
    view_position="",
    modality="",
    scan_date=None,
    confirm_patient_mismatch=False,
    user=None,
):
    """Check, store and record an uploaded scan with its preview and thumbnail.

    Values given here win over the DICOM header, which wins over the defaults.
    Raises ValidationError (400), PayloadTooLarge (413), Conflict (409) or
    StorageError (502/503), and NotFound (404) when the patient is deleted before
    the row is saved. On any of them no row and no file is left behind.
    """
    checked = check_upload(uploaded, SCAN_KINDS, content_checks={"dicom": is_dicom})
    scan = Scan(
        patient=patient,
        original_filename=checked.original_filename,
        content_type=checked.content_type,
        size=checked.size,
        sha256=checked.sha256,
        uploaded_by=user if user and user.is_authenticated else None,
    )

    header = None
    if checked.kind == "dicom":
        header = _read_dicom_header(checked.file)
        _fill_from_header(scan, header)
        _check_patient_id(scan, patient, header, confirm_patient_mismatch, user)
        _check_not_imported(patient, header.sop_instance_uid)
    else:
        scan.columns, scan.rows = _image_size(checked.file)

    scan.body_part = _first_value(body_part, header and header.body_part_examined)
    if not scan.body_part:
        reason = "This field is required."
        if header:
            reason = (
                "This field is required because the DICOM header has no "
                "BodyPartExamined."
            )
        raise ValidationError({"body_part": [reason]})
    scan.view_position = _first_value(
        view_position, header and header.view_position, DEFAULT_VIEW_POSITION
    )
    scan.modality = _first_value(modality, header and header.modality, DEFAULT_MODALITY)
    scan.scan_date = scan_date or (header and header.study_datetime) or timezone.now()
    if header:
        _check_header_lengths(scan)

    try:
        preview, thumbnail = make_previews(checked.file, checked.kind)
    except (DicomError, PreviewError) as error:
        raise ValidationError({"file": [str(error)]}) from error
    checked.file.seek(0)

    with StoredFiles(STORAGE_ALIAS) as stored:
        scan.file = stored.save(random_name(FOLDER, checked.extension), checked.file)
        scan.preview = stored.save(
            random_name(f"{FOLDER}/previews", "png"), ContentFile(preview)
        )
        scan.thumbnail = stored.save(
            random_name(f"{FOLDER}/thumbnails", "png"), ContentFile(thumbnail)
        )
        try:
            with transaction.atomic():
                scan.save()
        except IntegrityError as error:
            if header and header.sop_instance_uid:
                _check_not_imported(patient, header.sop_instance_uid)
            # A patient deleted since the caller looked it up fails the foreign key.
            get_patient_or_404(patient.pk)
            raise error

    logger.info(
        "stored scan scan_id=%s patient_id=%s kind=%s size=%s",
        scan.pk,
        patient.pk,
        checked.kind,
        checked.size,
    )
    return scan


def _image_size(file):
    """Return (width, height) of a PNG or JPEG from its header, or (None, None)."""
    try:
        with Image.open(file) as image:
            return image.size
    except (OSError, Image.DecompressionBombError):
        # make_previews rejects such a file with a clear message.
        return None, None
    finally:
        file.seek(0)


def _first_value(*values):
    for value in values:
        if value and str(value).strip():
            return str(value).strip().upper()
    return ""


def _read_dicom_header(file):
    try:
        header = read_header(file)
    except DicomError as error:
        raise ValidationError({"file": [str(error)]}) from error
    file.seek(0)
    return header


def _fill_from_header(scan, header):
    scan.study_instance_uid = header.study_instance_uid
    scan.series_instance_uid = header.series_instance_uid
    scan.sop_instance_uid = header.sop_instance_uid
    scan.rows = header.rows
    scan.columns = header.columns
    scan.photometric_interpretation = header.photometric_interpretation
    scan.transfer_syntax_uid = header.transfer_syntax_uid
    scan.manufacturer = header.manufacturer[:64]
    scan.dicom_patient_id = header.patient_id[:64]


def _check_header_lengths(scan):
    """Raise a 400 naming a DICOM header value longer than its column.

    The API and the admin forms limit their values to the column lengths, so a
    longer value comes from the header.
    """
    for field_name, keyword in REQUEST_HEADER_FIELDS.items():
        value = getattr(scan, field_name)
        limit = Scan._meta.get_field(field_name).max_length
        if len(value) > limit:
            raise ValidationError(
                {
                    field_name: [
                        f"The DICOM {keyword} '{value}' is longer than {limit} "
                        f"characters. Send {field_name} to store the scan with "
                        "another value."
                    ]
                }
            )
    for field_name, keyword in HEADER_FIELDS.items():
        limit = Scan._meta.get_field(field_name).max_length
        if len(getattr(scan, field_name)) > limit:
            raise ValidationError(
                {
                    "file": [
                        f"The DICOM {keyword} is longer than {limit} characters, "
                        "so the file is not valid DICOM."
                    ]
                }
            )


def patient_ids_match(mrn, dicom_patient_id):
    """Compare an MRN with a DICOM PatientID, trimmed and case-insensitive."""
    return mrn.strip().casefold() == dicom_patient_id.strip().casefold()


def _check_patient_id(scan, patient, header, confirmed, user):
    if patient_ids_match(patient.mrn, header.patient_id):
        return
    if not confirmed:
        raise PatientMismatch(
            f"The DICOM PatientID '{header.patient_id}' does not match the MRN "
            f"'{patient.mrn}' of patient {patient.pk}. Check that the file belongs "
            "to this patient, then send confirm_patient_mismatch=true to store it.",
            mrn=patient.mrn,
            dicom_patient_id=header.patient_id,
        )
    scan.patient_mismatch_confirmed_by = (
        user if user and user.is_authenticated else None
    )
    scan.patient_mismatch_confirmed_at = timezone.now()


def _check_not_imported(patient, sop_instance_uid):
    if not sop_instance_uid:
        return
    existing = Scan.objects.filter(
        patient=patient, sop_instance_uid=sop_instance_uid
    ).first()
    if existing:
        raise Conflict(
            f"Scan {existing.pk} of patient {patient.pk} already has the SOP "
            f"Instance UID {sop_instance_uid}."
        )
