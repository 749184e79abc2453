"""Bulk import of DICOM files from a folder, through the API's upload path."""

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.db import IntegrityError, transaction
from rest_framework.exceptions import APIException, ValidationError

from copilot.storage import StorageError
from patients.models import MAX_AGE, Patient
from scans.dicom import DicomError, DicomHeader, is_dicom, read_header
from scans.models import Scan
from scans.services import create_scan

logger = logging.getLogger(__name__)

DICOM_EXTENSIONS = {".dcm", ".dicom"}
SEXES = {"M": "Male", "F": "Female", "O": "Other"}
# DICOMDIR is the index of a media folder, not an image.
INDEX_FILE_NAMES = {"DICOMDIR"}


@dataclass
class ImportReport:
    """The outcome of an import run: imported, skipped and failed files."""

    imported: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def find_files(folder):
    """Return every regular file below `folder`, sorted, except DICOMDIR indexes."""
    files = []
    for root, directories, names in os.walk(folder):
        directories.sort()
        for name in sorted(names):
            path = Path(root) / name
            if name.upper() in INDEX_FILE_NAMES or not path.is_file():
                continue
            files.append(path)
    return files


def import_file(path, *, create_patients=False, body_part="", user=None):
    """Import one file and return ("imported", scan) or ("skipped", reason).

    `body_part` is used when the header has no BodyPartExamined. Raises
    ImportFailure with the reason when the file cannot be imported.
    """
    with open(path, "rb") as handle:
        if not is_dicom(handle):
            raise ImportFailure("The file is not a DICOM data set.")
        try:
            header = read_header(handle)
        except DicomError as error:
            raise ImportFailure(str(error)) from error

        patient = _find_patient(header, create_patients)
        if (
            header.sop_instance_uid
            and Scan.objects.filter(
                patient=patient, sop_instance_uid=header.sop_instance_uid
            ).exists()
        ):
            return "skipped", "already imported (same SOP Instance UID)"

        name = path.name
        if path.suffix.lower() not in DICOM_EXTENSIONS:
            name = f"{name}.dcm"
        try:
            scan = create_scan(
                patient,
                File(handle, name=name),
                body_part=_header_or(header, body_part),
                user=user,
            )
        except (APIException, StorageError) as error:
            raise ImportFailure(_message(error)) from error
    return "imported", scan


def import_folder(
    files, *, create_patients=False, body_part="", user=None, progress=None
):
    """Import each file in turn; a failure in one never stops the others."""
    report = ImportReport()
    for path in files:
        try:
            outcome, detail = import_file(
                path, create_patients=create_patients, body_part=body_part, user=user
            )
        except ImportFailure as error:
            report.failed.append((path, str(error)))
        except Exception as error:  # noqa: BLE001 - reported, and the run goes on
            logger.exception("import of a DICOM file failed unexpectedly")
            report.failed.append((path, f"Unexpected error: {type(error).__name__}."))
        else:
            if outcome == "imported":
                report.imported.append(path)
                logger.info("imported DICOM file scan_id=%s", detail.pk)
            else:
                report.skipped.append((path, detail))
        if progress is not None:
            progress.update(1)
    return report


def _header_or(header, body_part):
    """Return "" when the header has a body part, so the header value wins."""
    return "" if header.body_part_examined else body_part


class ImportFailure(Exception):
    """A file that cannot be imported; the message is the reason."""


def _find_patient(header: DicomHeader, create_patients):
    patient_id = header.patient_id.strip()
    if not patient_id:
        raise ImportFailure("The DICOM header has no PatientID.")

    patient = (
        Patient.objects.filter(mrn=patient_id).first()
        or Patient.objects.filter(mrn__iexact=patient_id).first()
    )
    if patient is not None:
        return patient
    if not create_patients:
        raise ImportFailure(
            "No patient has the file's PatientID as MRN; "
            "run with --create-patients to create one from the header."
        )
    if len(patient_id) > Patient._meta.get_field("mrn").max_length:
        raise ImportFailure("The DICOM PatientID is longer than an MRN may be.")

    try:
        with transaction.atomic():
            patient, _ = Patient.objects.get_or_create(
                mrn=patient_id, defaults=_patient_fields(header)
            )
    except IntegrityError:
        patient = Patient.objects.get(mrn=patient_id)
    return patient


def _patient_fields(header):
    return {
        "name": _person_name(header.patient_name)[:200] or "Unknown",
        "age": _age(header),
        "gender": SEXES.get(header.patient_sex.upper(), ""),
    }


def _person_name(value):
    """Turn a DICOM person name "Family^Given^Middle" into "Given Middle Family"."""
    family, _, rest = value.partition("^")
    given_names = " ".join(part for part in rest.split("^")[:2] if part)
    return " ".join(part for part in (given_names, family) if part).strip()


def _age(header):
    """Return the age in years from PatientAge ("045Y"), else from the birth date."""
    age = header.patient_age.upper()
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        years = int(age[:3]) if age[3] == "Y" else 0
        return years if years <= MAX_AGE else None
    birth = header.patient_birth_date
    if birth is None:
        return None
    on = header.study_datetime.date() if header.study_datetime else dt.date.today()
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return years if 0 <= years <= MAX_AGE else None


def _message(error):
    if isinstance(error, ValidationError):
        detail = error.detail
        if isinstance(detail, dict):
            return " ".join(
                f"{field_name}: {' '.join(str(item) for item in items)}"
                for field_name, items in detail.items()
            )
        return " ".join(str(item) for item in detail)
    if isinstance(error, APIException):
        return str(error.detail)
    return str(error)
