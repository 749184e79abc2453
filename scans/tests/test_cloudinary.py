"""Scan uploads and deletes with Cloudinary storage, a failure injected at each step.

The SDK talks over HTTP to the CloudinaryServer of the `cloudinary_storage`
fixture; failures are planned on that server, never patched into the SDK.
"""

import pytest
from django.db import DatabaseError

from conftest import CHEST_MRN, UPLOAD_FAILURES, upload
from copilot.models import PendingFileDeletion
from scans import services
from scans.models import Scan

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cloudinary_storage")]


def post_scan(api, patient, file, **fields):
    return api.post(f"/patients/{patient.pk}/upload/scan", {"file": file, **fields})


def fail_upload_of(monkeypatch, server, folder, mode):
    """Make the upload into `folder` fail, once the storage name for it is drawn."""
    random_name = services.random_name

    def arm_then_name(name_folder, extension):
        if name_folder == folder:
            server.fail_next(1, mode, "upload")
        return random_name(name_folder, extension)

    monkeypatch.setattr(services, "random_name", arm_then_name)


def destroyed(server):
    return [
        (entry["path"].split("/")[3], entry["params"]["public_id"])
        for entry in server.request_log
        if entry["operation"] == "destroy" and entry["status"] == 200
    ]


class TestUploadScan:
    def test_it_stores_jpeg_preview_and_thumbnail_as_images(
        self, api, patient, chest_jpeg, cloudinary_storage
    ):
        response = post_scan(
            api, patient, upload("chest.jpg", chest_jpeg), body_part="CHEST"
        )

        assert response.status_code == 201
        scan = Scan.objects.get()
        original, preview, thumbnail = cloudinary_storage.resources
        assert original.public_id == scan.file.name.split("/", 2)[2].removesuffix(
            ".jpg"
        )
        assert original.resource_type == "image"
        assert original.data == chest_jpeg
        assert preview.public_id.startswith("xrays/previews/")
        assert preview.resource_type == "image"
        assert thumbnail.public_id.startswith("xrays/thumbnails/")
        assert thumbnail.resource_type == "image"
        body = response.json()["scan"]
        assert body["file_url"] == (
            "https://res.cloudinary.com/cloud/image/upload/"
            f"v{original.version}/{original.public_id}.jpg"
        )
        assert cloudinary_storage.fetch(body["file_url"]) == (200, chest_jpeg)
        assert cloudinary_storage.fetch(body["preview_url"]) == (200, preview.data)
        assert cloudinary_storage.fetch(body["thumbnail_url"]) == (
            200,
            thumbnail.data,
        )

    def test_it_stores_dicom_as_raw_byte_for_byte(
        self, api, chest_patient, chest_dicom, cloudinary_storage
    ):
        response = post_scan(api, chest_patient, upload("chest.dcm", chest_dicom))

        assert response.status_code == 201
        original = cloudinary_storage.resources[0]
        assert original.resource_type == "raw"
        assert original.public_id.startswith("xrays/")
        assert original.public_id.endswith(".dcm")
        assert original.data == chest_dicom
        url = response.json()["scan"]["file_url"]
        assert url.startswith("https://res.cloudinary.com/cloud/raw/upload/v")
        assert url.endswith(f"/{original.public_id}")
        assert cloudinary_storage.fetch(url) == (200, chest_dicom)

    def test_it_sends_no_patient_data(
        self, api, chest_patient, chest_dicom, cloudinary_storage
    ):
        response = post_scan(
            api, chest_patient, upload("Chest_Patient_9RG1_scan.dcm", chest_dicom)
        )

        assert response.status_code == 201
        assert len(cloudinary_storage.resources) == 3
        for text in ("Chest Patient", "Chest_Patient", CHEST_MRN, "scan.dcm"):
            assert cloudinary_storage.mentions(text) == []
        for resource in cloudinary_storage.resources:
            assert resource.tags == []
            assert resource.context == {}
        assert CHEST_MRN not in response.json()["scan"]["file_url"]

    def test_it_signs_urls_of_authenticated_files(
        self, api, patient, chest_png, settings, cloudinary_storage
    ):
        settings.CLOUDINARY_DELIVERY_TYPE = "authenticated"

        response = post_scan(api, patient, upload("a.png", chest_png), body_part="C")

        assert response.status_code == 201
        assert {r.type for r in cloudinary_storage.resources} == {"authenticated"}
        body = response.json()["scan"]
        for key in ("file_url", "preview_url", "thumbnail_url"):
            assert "/image/authenticated/s--" in body[key]
        assert cloudinary_storage.fetch(body["file_url"]) == (200, chest_png)

    @pytest.mark.parametrize("mode,status,message", UPLOAD_FAILURES)
    def test_it_handles_failure_of_original(
        self, api, patient, chest_png, cloudinary_storage, mode, status, message
    ):
        cloudinary_storage.fail_next(1, mode, "upload")

        response = post_scan(api, patient, upload("a.png", chest_png), body_part="C")

        assert response.status_code == status
        assert response.json()["detail"].startswith(message)
        assert not Scan.objects.exists()
        assert cloudinary_storage.resources == []
        assert cloudinary_storage.count("upload") == 1
        assert not PendingFileDeletion.objects.exists()

    def test_it_destroys_after_upload_timeout(
        self, api, patient, chest_png, cloudinary_storage
    ):
        cloudinary_storage.fail_next(1, "timeout", "upload")

        post_scan(api, patient, upload("a.png", chest_png), body_part="C")

        (destroy,) = [
            entry
            for entry in cloudinary_storage.request_log
            if entry["operation"] == "destroy"
        ]
        assert destroy["params"]["public_id"].startswith("xrays/")
        assert destroy["params"]["invalidate"] == "1"

    @pytest.mark.parametrize("mode,status,message", UPLOAD_FAILURES)
    def test_it_handles_failure_of_preview(
        self,
        api,
        chest_patient,
        chest_dicom,
        cloudinary_storage,
        monkeypatch,
        mode,
        status,
        message,
    ):
        fail_upload_of(monkeypatch, cloudinary_storage, "xrays/previews", mode)

        response = post_scan(api, chest_patient, upload("a.dcm", chest_dicom))

        assert response.status_code == status
        assert response.json()["detail"].startswith(message)
        assert not Scan.objects.exists()
        assert cloudinary_storage.resources == []
        assert ("raw", destroyed(cloudinary_storage)[0][1]) in destroyed(
            cloudinary_storage
        )
        assert destroyed(cloudinary_storage)[0][1].endswith(".dcm")
        assert not PendingFileDeletion.objects.exists()

    @pytest.mark.parametrize("mode,status,message", UPLOAD_FAILURES)
    def test_it_handles_failure_of_thumbnail(
        self,
        api,
        patient,
        chest_jpeg,
        cloudinary_storage,
        monkeypatch,
        mode,
        status,
        message,
    ):
        fail_upload_of(monkeypatch, cloudinary_storage, "xrays/thumbnails", mode)

        response = post_scan(api, patient, upload("a.jpg", chest_jpeg), body_part="C")

        assert response.status_code == status
        assert response.json()["detail"].startswith(message)
        assert not Scan.objects.exists()
        assert cloudinary_storage.resources == []
        assert not PendingFileDeletion.objects.exists()

    def test_it_destroys_files_on_database_failure(
        self, api, patient, chest_png, cloudinary_storage, monkeypatch
    ):
        def fail(*args, **kwargs):
            raise DatabaseError("disk full")

        monkeypatch.setattr(Scan, "save", fail)
        api.raise_request_exception = False

        response = post_scan(api, patient, upload("a.png", chest_png), body_part="C")

        assert response.status_code == 500
        assert not Scan.objects.exists()
        assert cloudinary_storage.resources == []
        assert len(destroyed(cloudinary_storage)) == 3

    def test_it_records_an_undo_that_failed(
        self, api, patient, chest_png, cloudinary_storage, monkeypatch
    ):
        fail_upload_of(monkeypatch, cloudinary_storage, "xrays/thumbnails", "5xx")
        cloudinary_storage.fail_next(1, "5xx", "destroy")

        response = post_scan(api, patient, upload("a.png", chest_png), body_part="C")

        assert response.status_code == 502
        assert not Scan.objects.exists()
        (left,) = cloudinary_storage.resources
        row = PendingFileDeletion.objects.get()
        assert row.storage_alias == "scans"
        assert row.name == f"upload/v{left.version}/{left.public_id}.png"
        assert row.attempts == 1
        assert row.last_error.startswith("Storage delete failed")


class TestDeleteScan:
    @pytest.fixture
    def scan(self, api, chest_patient, chest_dicom, cloudinary_storage):
        response = post_scan(api, chest_patient, upload("a.dcm", chest_dicom))
        assert response.status_code == 201
        return Scan.objects.get()

    def test_it_destroys_every_resource(
        self, api, scan, cloudinary_storage, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = api.delete(f"/scans/{scan.pk}")

        assert response.status_code == 200
        assert not Scan.objects.exists()
        assert cloudinary_storage.resources == []
        assert not PendingFileDeletion.objects.exists()
        original = scan.file.name.split("/", 2)[2]
        assert sorted(destroyed(cloudinary_storage)) == sorted(
            [
                ("raw", original),
                ("image", scan.preview.name.split("/", 2)[2].removesuffix(".png")),
                ("image", scan.thumbnail.name.split("/", 2)[2].removesuffix(".png")),
            ]
        )
        for entry in cloudinary_storage.request_log:
            if entry["operation"] == "destroy":
                assert entry["params"]["invalidate"] == "1"
                assert entry["params"]["type"] == "upload"

    @pytest.mark.parametrize("mode", ["timeout", "5xx", "420", "401"])
    def test_it_keeps_a_pending_deletion_on_failure(
        self, api, scan, cloudinary_storage, django_capture_on_commit_callbacks, mode
    ):
        cloudinary_storage.fail_next(1, mode, "destroy")

        with django_capture_on_commit_callbacks(execute=True):
            response = api.delete(f"/scans/{scan.pk}")

        assert response.status_code == 200
        assert not Scan.objects.exists()
        (left,) = cloudinary_storage.resources
        assert left.resource_type == "raw"
        row = PendingFileDeletion.objects.get()
        assert row.name == scan.file.name
        assert row.attempts == 1
        assert row.last_error.startswith("Storage delete")

    def test_admin_deletes_one_scan(
        self, admin_client, scan, cloudinary_storage, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                f"/admin/scans/scan/{scan.pk}/delete/", {"post": "yes"}
            )

        assert response.status_code == 302
        assert not Scan.objects.exists()
        assert cloudinary_storage.resources == []

    def test_admin_deletes_scans_in_bulk(
        self,
        admin_client,
        api,
        scan,
        patient,
        chest_png,
        cloudinary_storage,
        django_capture_on_commit_callbacks,
    ):
        post_scan(api, patient, upload("b.png", chest_png), body_part="C")
        assert len(cloudinary_storage.resources) == 6

        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                "/admin/scans/scan/",
                {
                    "action": "delete_selected",
                    "_selected_action": list(Scan.objects.values_list("pk", flat=True)),
                    "post": "yes",
                },
            )

        assert response.status_code == 302
        assert not Scan.objects.exists()
        assert cloudinary_storage.resources == []
        assert len(destroyed(cloudinary_storage)) == 6
