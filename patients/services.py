from django.db import IntegrityError, transaction
from rest_framework.exceptions import NotFound, PermissionDenied

from copilot.exceptions import Conflict
from patients.models import Patient

# The related rows that deleting a patient removes too, and the permission each
# needs, as in the admin.
CASCADED_DELETES = [
    ("scans", "scans.delete_scan"),
    ("documents", "documents.delete_patientdocument"),
]


def get_patient_or_404(patient_id):
    """Return the patient, or raise a 404 "Patient 7 not found"."""
    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        raise NotFound(f"Patient {patient_id} not found")
    return patient


def save_patient(serializer):
    """Save a patient serializer; a taken MRN raises a 409 naming it.

    The unique constraint decides, not a check before the insert, so two
    concurrent requests for one MRN get exactly one success.
    """
    try:
        with transaction.atomic():
            return serializer.save()
    except IntegrityError as error:
        mrn = serializer.validated_data.get("mrn")
        if mrn and Patient.objects.filter(mrn=mrn).exists():
            raise Conflict(f"A patient with MRN '{mrn}' already exists.") from error
        raise


def delete_patient(patient, user):
    """Delete a patient with its scans and documents, if `user` may delete them all.

    The patient row stays locked from the check to the delete, so an upload that
    starts meanwhile waits and then finds no patient. Raises NotFound (404) when
    another request deleted the patient first, and PermissionDenied (403) naming
    the related rows that the user may not delete.
    """
    with transaction.atomic():
        locked = Patient.objects.select_for_update().filter(pk=patient.pk)
        if locked.values_list("pk", flat=True).first() is None:
            raise NotFound(f"Patient {patient.pk} not found")
        for related_name, permission in CASCADED_DELETES:
            if user.has_perm(permission):
                continue
            if getattr(patient, related_name).exists():
                raise PermissionDenied(
                    f"Deleting patient {patient.pk} deletes its {related_name}, "
                    "which you do not have permission to delete."
                )
        patient.delete()
