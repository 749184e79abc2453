"""Admin pages with files in Cloudinary, served by the Cloudinary-compatible server.

The pages must build every link locally: the server's request log shows whether
rendering a page sent any request (a download, a size or an existence check).
"""

import os
from unittest import mock

import pytest

from conftest import upload
from copilot.testing.cloudinary_server import CloudinaryServer
from documents.services import create_document
from scans.services import create_scan

pytestmark = pytest.mark.django_db


def import_cloudinary_storage(cloudinary_url):
    """Import django-cloudinary-storage, keeping the SDK's global configuration.

    On import the package raises ImproperlyConfigured unless it finds credentials,
    so CLOUDINARY_URL is set while it loads. It also sets the SDK's credentials
    and its `secure` option to True, which would change the SDK for every later
    test.
    """
    import cloudinary

    config = cloudinary.config()
    saved = dict(config.__dict__)
    try:
        with mock.patch.dict(os.environ, {"CLOUDINARY_URL": cloudinary_url}):
            import cloudinary_storage.storage  # noqa: F401
    finally:
        config.__dict__.clear()
        config.__dict__.update(saved)


@pytest.fixture(scope="module")
def server():
    with CloudinaryServer() as running:
        import_cloudinary_storage(running.cloudinary_url)
        yield running


@pytest.fixture
def cloudinary_storage(server, settings):
    server.reset()
    settings.STORAGES = {
        **settings.STORAGES,
        "scans": {"BACKEND": "cloudinary_storage.storage.MediaCloudinaryStorage"},
        "documents": {
            "BACKEND": "cloudinary_storage.storage.RawMediaCloudinaryStorage"
        },
    }
    with server.configure_sdk():
        yield server


@pytest.fixture
def stored(cloudinary_storage, patient, chest_jpeg, report_pdf):
    scan = create_scan(patient, upload("chest.jpg", chest_jpeg), body_part="CHEST")
    document = create_document(
        patient, upload("lab.pdf", report_pdf), document_name="Blood work"
    )
    return scan, document


class TestAdminWithCloudinary:
    def test_pages_send_no_storage_requests(
        self, staff_client, cloudinary_storage, stored, patient
    ):
        scan, document = stored
        uploads = len(cloudinary_storage.request_log)
        urls = [
            "/admin/patients/patient/",
            f"/admin/patients/patient/{patient.pk}/change/",
            "/admin/scans/scan/",
            f"/admin/scans/scan/{scan.pk}/change/",
            "/admin/documents/patientdocument/",
            f"/admin/documents/patientdocument/{document.pk}/change/",
            f"/admin/scans/scan/{scan.pk}/thumbnail/",
            f"/admin/documents/patientdocument/{document.pk}/file/",
        ]

        statuses = [staff_client.get(url).status_code for url in urls]

        assert uploads == 4
        assert statuses == [200] * 6 + [302] * 2
        assert cloudinary_storage.request_log[uploads:] == []

    def test_file_views_redirect_to_delivery_urls(
        self, staff_client, cloudinary_storage, stored, chest_jpeg, report_pdf
    ):
        scan, document = stored

        original = staff_client.get(f"/admin/scans/scan/{scan.pk}/file/")
        pdf = staff_client.get(f"/admin/documents/patientdocument/{document.pk}/file/")

        assert original.status_code == 302
        assert original["Location"] == scan.file.url
        assert cloudinary_storage.fetch(original["Location"]) == (200, chest_jpeg)
        assert pdf.status_code == 302
        assert pdf["Location"] == document.file.url
        assert cloudinary_storage.fetch(pdf["Location"]) == (200, report_pdf)
