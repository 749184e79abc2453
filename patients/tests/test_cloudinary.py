"""A patient's files in Cloudinary, from upload to the delete of the patient.

The SDK talks over HTTP to the CloudinaryServer of the `cloudinary_storage`
fixture, which replaces Cloudinary and its CDN.
"""

import pytest

from conftest import CHEST_MRN, upload
from copilot.models import PendingFileDeletion
from documents.models import PatientDocument
from patients.models import Patient
from scans.models import Scan

pytestmark = pytest.mark.usefixtures("cloudinary_storage")


def upload_files(api, patient_id, chest_jpeg, chest_dicom, report_pdf):
    jpeg = api.post(
        f"/patients/{patient_id}/upload/scan",
        {
            "file": upload("chest_pa.jpg", chest_jpeg),
            "body_part": "CHEST",
            "view_position": "PA",
        },
    )
    dicom = api.post(
        f"/patients/{patient_id}/upload/scan",
        {"file": upload("RG1_UNCR.dcm", chest_dicom)},
    )
    document = api.post(
        f"/patients/{patient_id}/upload/document",
        {"file": upload("blood_work.pdf", report_pdf), "document_name": "Blood Work"},
    )
    assert (jpeg.status_code, dicom.status_code, document.status_code) == (
        201,
        201,
        201,
    )
    return jpeg.json()["scan"], dicom.json()["scan"], document.json()["document"]


class TestPatientFiles:
    @pytest.mark.django_db(transaction=True)
    def test_it_stores_and_deletes_every_file(
        self, api, chest_jpeg, chest_dicom, report_pdf, cloudinary_storage
    ):
        # No letter of the name is a hex digit, so no random id or signature
        # can contain it by chance.
        created = api.post("/patients", {"mrn": CHEST_MRN, "name": "Quinn Thorpe"})
        assert created.status_code == 201
        patient_id = created.json()["id"]
        jpeg, dicom, document = upload_files(
            api, patient_id, chest_jpeg, chest_dicom, report_pdf
        )
        assert len(cloudinary_storage.resources) == 7

        response = api.get(f"/patients/{patient_id}")

        assert response.status_code == 200
        body = response.json()
        scans = {scan["id"]: scan for scan in body["scans"]}
        assert set(scans) == {jpeg["id"], dicom["id"]}
        assert scans[jpeg["id"]]["body_part"] == "CHEST"
        assert scans[jpeg["id"]]["view_position"] == "PA"
        assert scans[dicom["id"]]["body_part"] == "CHEST"
        jpeg_url = scans[jpeg["id"]]["file_url"]
        dicom_url = scans[dicom["id"]]["file_url"]
        (document_body,) = body["documents"]
        pdf_url = document_body["file_url"]
        assert jpeg_url.startswith("https://res.cloudinary.com/cloud/image/upload/v")
        assert dicom_url.startswith("https://res.cloudinary.com/cloud/raw/upload/v")
        assert pdf_url.startswith("https://res.cloudinary.com/cloud/raw/upload/v")
        assert cloudinary_storage.fetch(jpeg_url) == (200, chest_jpeg)
        assert cloudinary_storage.fetch(dicom_url) == (200, chest_dicom)
        assert cloudinary_storage.fetch(pdf_url) == (200, report_pdf)
        for text in ("Quinn", "Thorpe", CHEST_MRN, "chest_pa", "blood_work", "RG1"):
            assert cloudinary_storage.mentions(text) == []

        assert api.delete(f"/scans/{jpeg['id']}").status_code == 200
        assert len(cloudinary_storage.resources) == 4
        assert api.delete(f"/documents/{document['id']}").status_code == 200
        assert len(cloudinary_storage.resources) == 3
        assert api.delete(f"/patients/{patient_id}").status_code == 200

        assert not Patient.objects.exists()
        assert not Scan.objects.exists()
        assert not PatientDocument.objects.exists()
        assert not PendingFileDeletion.objects.exists()
        assert cloudinary_storage.resources == []
        assert cloudinary_storage.fetch(jpeg_url)[0] == 404
        assert cloudinary_storage.fetch(dicom_url)[0] == 404
        assert cloudinary_storage.fetch(pdf_url)[0] == 404


@pytest.mark.django_db
class TestDeletePatient:
    @pytest.fixture
    def files(self, api, chest_patient, chest_jpeg, chest_dicom, report_pdf):
        return upload_files(api, chest_patient.pk, chest_jpeg, chest_dicom, report_pdf)

    def test_it_destroys_the_files_of_the_cascade(
        self,
        api,
        chest_patient,
        files,
        cloudinary_storage,
        django_capture_on_commit_callbacks,
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = api.delete(f"/patients/{chest_patient.pk}")

        assert response.status_code == 200
        assert cloudinary_storage.resources == []
        assert cloudinary_storage.count("destroy") == 7
        assert not PendingFileDeletion.objects.exists()

    def test_it_keeps_pending_deletions_on_failure(
        self,
        api,
        chest_patient,
        files,
        cloudinary_storage,
        django_capture_on_commit_callbacks,
    ):
        cloudinary_storage.fail_next(2, "5xx", "destroy")

        with django_capture_on_commit_callbacks(execute=True):
            response = api.delete(f"/patients/{chest_patient.pk}")

        assert response.status_code == 200
        assert not Scan.objects.exists()
        assert len(cloudinary_storage.resources) == 2
        rows = PendingFileDeletion.objects.all()
        assert len(rows) == 2
        assert {row.attempts for row in rows} == {1}
        remaining = {
            f"upload/v{resource.version}/{resource.public_id}"
            + (f".{resource.format}" if resource.resource_type == "image" else "")
            for resource in cloudinary_storage.resources
        }
        assert {row.name for row in rows} == remaining

    def test_admin_deletes_the_patient_and_files(
        self,
        admin_client,
        chest_patient,
        files,
        cloudinary_storage,
        django_capture_on_commit_callbacks,
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                f"/admin/patients/patient/{chest_patient.pk}/delete/", {"post": "yes"}
            )

        assert response.status_code == 302
        assert not Patient.objects.exists()
        assert cloudinary_storage.resources == []
