"""Document uploads and deletes with Cloudinary storage, failures included.

The SDK talks over HTTP to the CloudinaryServer of the `cloudinary_storage`
fixture; failures are planned on that server, never patched into the SDK.
"""

import pytest
from django.db import DatabaseError

from conftest import UPLOAD_FAILURES, upload
from copilot.models import PendingFileDeletion
from documents.models import PatientDocument

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cloudinary_storage")]


def post_document(api, patient, file):
    return api.post(
        f"/patients/{patient.pk}/upload/document",
        {"file": file, "document_name": "Blood Work 2023"},
    )


def destroy_requests(server):
    return [entry for entry in server.request_log if entry["operation"] == "destroy"]


class TestUploadDocument:
    def test_it_stores_pdf_as_raw(self, api, patient, report_pdf, cloudinary_storage):
        response = post_document(
            api, patient, upload("John_Doe_MRN001.pdf", report_pdf)
        )

        assert response.status_code == 201
        (resource,) = cloudinary_storage.resources
        assert resource.resource_type == "raw"
        assert resource.type == "upload"
        assert resource.public_id.startswith("reports/")
        assert resource.public_id.endswith(".pdf")
        assert resource.data == report_pdf
        document = PatientDocument.objects.get()
        assert document.file.name == f"upload/v{resource.version}/{resource.public_id}"
        url = response.json()["document"]["file_url"]
        assert url == (
            "https://res.cloudinary.com/cloud/raw/upload/"
            f"v{resource.version}/{resource.public_id}"
        )
        assert cloudinary_storage.fetch(url) == (200, report_pdf)
        for text in ("John", "Doe", "MRN001"):
            assert cloudinary_storage.mentions(text) == []

    @pytest.mark.parametrize("mode,status,message", UPLOAD_FAILURES)
    def test_it_handles_upload_failure(
        self, api, patient, report_pdf, cloudinary_storage, mode, status, message
    ):
        cloudinary_storage.fail_next(1, mode, "upload")

        response = post_document(api, patient, upload("lab.pdf", report_pdf))

        assert response.status_code == status
        assert response.json()["detail"].startswith(message)
        assert not PatientDocument.objects.exists()
        assert cloudinary_storage.resources == []
        assert not PendingFileDeletion.objects.exists()

    def test_it_destroys_file_on_database_failure(
        self, api, patient, report_pdf, cloudinary_storage, monkeypatch
    ):
        def fail(*args, **kwargs):
            raise DatabaseError("disk full")

        monkeypatch.setattr(PatientDocument, "save", fail)
        api.raise_request_exception = False

        response = post_document(api, patient, upload("lab.pdf", report_pdf))

        assert response.status_code == 500
        assert not PatientDocument.objects.exists()
        assert cloudinary_storage.resources == []
        (destroy,) = destroy_requests(cloudinary_storage)
        assert destroy["path"] == "/v1_1/cloud/raw/destroy"
        assert destroy["params"]["public_id"].endswith(".pdf")


class TestDeleteDocument:
    @pytest.fixture
    def document(self, api, patient, report_pdf, cloudinary_storage):
        response = post_document(api, patient, upload("lab.pdf", report_pdf))
        assert response.status_code == 201
        return PatientDocument.objects.get()

    def test_it_destroys_the_raw_resource(
        self, api, document, cloudinary_storage, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = api.delete(f"/documents/{document.pk}")

        assert response.status_code == 200
        assert not PatientDocument.objects.exists()
        assert cloudinary_storage.resources == []
        (destroy,) = destroy_requests(cloudinary_storage)
        assert destroy["path"] == "/v1_1/cloud/raw/destroy"
        assert destroy["params"]["public_id"] == document.file.name.split("/", 2)[2]
        assert destroy["params"]["invalidate"] == "1"
        assert not PendingFileDeletion.objects.exists()

    @pytest.mark.parametrize("mode", ["timeout", "5xx", "420", "401"])
    def test_it_keeps_a_pending_deletion_on_failure(
        self,
        api,
        document,
        cloudinary_storage,
        django_capture_on_commit_callbacks,
        mode,
    ):
        cloudinary_storage.fail_next(1, mode, "destroy")

        with django_capture_on_commit_callbacks(execute=True):
            response = api.delete(f"/documents/{document.pk}")

        assert response.status_code == 200
        assert not PatientDocument.objects.exists()
        assert len(cloudinary_storage.resources) == 1
        row = PendingFileDeletion.objects.get()
        assert (row.storage_alias, row.name) == ("documents", document.file.name)
        assert row.attempts == 1

    def test_admin_deletes_documents_in_bulk(
        self,
        admin_client,
        document,
        cloudinary_storage,
        django_capture_on_commit_callbacks,
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                "/admin/documents/patientdocument/",
                {
                    "action": "delete_selected",
                    "_selected_action": [document.pk],
                    "post": "yes",
                },
            )

        assert response.status_code == 302
        assert not PatientDocument.objects.exists()
        assert cloudinary_storage.resources == []
