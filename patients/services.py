from django.db import IntegrityError, transaction
from rest_framework.exceptions import NotFound

from copilot.exceptions import Conflict
from patients.models import Patient


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
