import pytest
from django.test import override_settings
from rest_framework.exceptions import NotFound

from conftest import make_pdf, sha256, stored_files, upload
from documents.models import PatientDocument
from documents.services import create_document
from patients.models import Patient

pytestmark = pytest.mark.django_db


def fetch(api, url):
    response = api.get(url)
    return response.status_code, b"".join(response.streaming_content)


class TestUploadDocument:
    def post(self, api, patient, file, **fields):
        data = {"document_name": "Blood Work 2023", **fields}
        if file is not None:
            data["file"] = file
        return api.post(f"/patients/{patient.pk}/upload/document", data)

    def test_it_works(self, api, patient, report_pdf, local_storage):
        response = self.post(
            api, patient, upload("blood_test_2023.pdf", report_pdf), document_type="lab"
        )

        assert response.status_code == 201
        body = response.json()
        assert body["message"] == "Document uploaded successfully"
        document = body["document"]
        assert document["patient_id"] == patient.pk
        assert document["document_name"] == "Blood Work 2023"
        assert document["document_type"] == "LAB"
        assert document["file_url"].startswith("http://testserver/media/reports/")
        assert "uploaded_at" in document
        assert body["patient"] == {
            "id": patient.pk,
            "name": "John Doe",
            "mrn": "MRN001",
        }

        row = PatientDocument.objects.get()
        assert row.pk == document["id"]
        assert row.original_filename == "blood_test_2023.pdf"
        assert row.size == len(report_pdf)
        assert row.sha256 == sha256(report_pdf)
        assert stored_files(local_storage) == {row.file.name: report_pdf}

    def test_file_url_returns_the_bytes(self, api, patient, report_pdf):
        response = self.post(api, patient, upload("lab.pdf", report_pdf))

        status, content = fetch(api, response.json()["document"]["file_url"])

        assert status == 200
        assert content == report_pdf

    def test_it_defaults_document_type_to_pdf(self, api, patient, report_pdf):
        response = self.post(api, patient, upload("lab.pdf", report_pdf))

        assert response.json()["document"]["document_type"] == "PDF"

    def test_stored_name_hides_patient_and_filename(self, api, patient, report_pdf):
        response = self.post(api, patient, upload("John_Doe_MRN001.pdf", report_pdf))

        url = response.json()["document"]["file_url"]
        assert "John" not in url
        assert "MRN001" not in url
        assert "Doe" not in url
        assert PatientDocument.objects.get().original_filename == "John_Doe_MRN001.pdf"

    def test_it_accepts_pdf_marker_after_junk(self, api, patient, report_pdf):
        # Some scanners write a few bytes before the header; readers accept it.
        data = b"\n\n" + report_pdf

        response = self.post(api, patient, upload("lab.pdf", data))

        assert response.status_code == 201

    def test_it_rejects_other_extension(self, api, patient, report_pdf, local_storage):
        response = self.post(api, patient, upload("lab.docx", report_pdf))

        assert response.status_code == 400
        assert response.json()["file"] == ["Invalid file type 'docx'. Allowed: pdf."]
        assert not PatientDocument.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_missing_extension(self, api, patient, report_pdf):
        response = self.post(api, patient, upload("lab", report_pdf))

        assert response.status_code == 400
        assert "no extension" in response.json()["file"][0]
        assert not PatientDocument.objects.exists()

    def test_it_rejects_non_pdf_content(self, api, patient, chest_jpeg, local_storage):
        response = self.post(api, patient, upload("lab.pdf", chest_jpeg))

        assert response.status_code == 400
        assert "not PDF" in response.json()["file"][0]
        assert not PatientDocument.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_empty_file(self, api, patient, local_storage):
        response = self.post(api, patient, upload("lab.pdf", b""))

        assert response.status_code == 400
        assert "empty" in str(response.json()["file"])
        assert not PatientDocument.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_large_file(self, api, patient, report_pdf, local_storage):
        with override_settings(MAX_UPLOAD_SIZE=len(report_pdf) - 1):
            response = self.post(api, patient, upload("lab.pdf", report_pdf))

        assert response.status_code == 413
        assert str(len(report_pdf) - 1) in response.json()["detail"]
        assert not PatientDocument.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_missing_file(self, api, patient):
        response = self.post(api, patient, None)

        assert response.status_code == 400
        assert "file" in response.json()

    def test_it_rejects_missing_document_name(self, api, patient, report_pdf):
        response = api.post(
            f"/patients/{patient.pk}/upload/document",
            {"file": upload("lab.pdf", report_pdf)},
        )

        assert response.status_code == 400
        assert "document_name" in response.json()
        assert not PatientDocument.objects.exists()

    def test_it_rejects_unknown_patient(self, api, report_pdf, local_storage):
        response = api.post(
            "/patients/7/upload/document",
            {"file": upload("lab.pdf", report_pdf), "document_name": "Lab"},
        )

        assert response.status_code == 404
        assert response.json()["detail"] == "Patient 7 not found"
        assert stored_files(local_storage) == {}

    def test_it_requires_authentication(self, anonymous, patient, report_pdf):
        response = self.post(anonymous, patient, upload("lab.pdf", report_pdf))

        assert response.status_code == 401
        assert not PatientDocument.objects.exists()

    def test_it_streams_large_files_from_disk(self, api, patient, local_storage):
        # Larger than FILE_UPLOAD_MAX_MEMORY_SIZE, so Django spools it to disk.
        data = make_pdf("Report. " * 200) + b"%" + b"x" * (3 * 1024 * 1024)

        response = self.post(api, patient, upload("big.pdf", data))

        assert response.status_code == 201
        row = PatientDocument.objects.get()
        assert row.sha256 == sha256(data)
        assert stored_files(local_storage)[row.file.name] == data


@pytest.mark.django_db(transaction=True)
class TestCreateDocument:
    def test_it_rejects_a_patient_deleted_meanwhile(
        self, patient, report_pdf, local_storage
    ):
        # The row the caller looked up, deleted before the document is saved.
        stale = Patient.objects.get(pk=patient.pk)
        Patient.objects.filter(pk=patient.pk).delete()

        with pytest.raises(NotFound) as raised:
            create_document(stale, upload("lab.pdf", report_pdf), document_name="Lab")

        assert str(raised.value.detail) == f"Patient {patient.pk} not found"
        assert not PatientDocument.objects.exists()
        assert stored_files(local_storage) == {}


class TestListDocuments:
    def test_it_filters_by_patient(self, api, patient, report_pdf):
        from patients.models import Patient

        other = Patient.objects.create(mrn="MRN002", name="Jane Roe")
        for owner in (patient, other):
            api.post(
                f"/patients/{owner.pk}/upload/document",
                {"file": upload("lab.pdf", report_pdf), "document_name": "Lab"},
            )

        response = api.get(f"/documents?patient={other.pk}")

        body = response.json()
        assert body["count"] == 1
        assert body["results"][0]["patient_id"] == other.pk

    def test_it_rejects_invalid_patient_filter(self, api):
        response = api.get("/documents?patient=abc")

        assert response.status_code == 400
        assert "patient" in response.json()

    def test_it_rejects_a_patient_filter_beyond_any_id(self, api):
        response = api.get(f"/documents?patient={2**63}")

        assert response.status_code == 400
        assert response.json() == {"patient": [f"'{2**63}' is not a valid id."]}

    def test_it_requires_authentication(self, anonymous):
        assert anonymous.get("/documents").status_code == 401


class TestGetDocument:
    def test_it_works(self, api, patient, report_pdf):
        created = api.post(
            f"/patients/{patient.pk}/upload/document",
            {"file": upload("lab.pdf", report_pdf), "document_name": "Lab"},
        ).json()["document"]

        response = api.get(f"/documents/{created['id']}")

        assert response.status_code == 200
        assert response.json() == created

    def test_it_handles_unknown_document(self, api):
        response = api.get("/documents/9")

        assert response.status_code == 404
        assert response.json()["detail"] == "Document 9 not found"


class TestDeleteDocument:
    # Files are deleted after the commit, so this test needs real transactions.
    @pytest.mark.django_db(transaction=True)
    def test_it_deletes_row_and_file(self, api, patient, report_pdf, local_storage):
        created = api.post(
            f"/patients/{patient.pk}/upload/document",
            {"file": upload("lab.pdf", report_pdf), "document_name": "Lab"},
        ).json()["document"]
        file_url = created["file_url"]

        response = api.delete(f"/documents/{created['id']}")

        assert response.status_code == 200
        assert response.json() == {
            "message": f"Document {created['id']} deleted successfully"
        }
        assert not PatientDocument.objects.exists()
        assert stored_files(local_storage) == {}
        assert api.get(file_url).status_code == 404

    def test_it_handles_unknown_document(self, api):
        response = api.delete("/documents/9")

        assert response.status_code == 404
        assert response.json()["detail"] == "Document 9 not found"

    def test_it_requires_authentication(self, anonymous, patient):
        document = PatientDocument.objects.create(
            patient=patient, document_name="Lab", file="reports/x.pdf"
        )

        response = anonymous.delete(f"/documents/{document.pk}")

        assert response.status_code == 401
        assert PatientDocument.objects.filter(pk=document.pk).exists()
