"""Malformed bodies, wrong media types, oversized fields and hostile file names.

Bodies are built byte by byte here, because Django's test client cleans file
names and always writes well-formed multipart.
"""

import json

import pytest
from django.test import override_settings

from conftest import stored_files
from documents.models import PatientDocument
from patients.models import Patient
from scans.models import Scan

pytestmark = pytest.mark.django_db

BOUNDARY = "copilot-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name, value, filename=None, content_type=None, raw_disposition=None):
    """Return one multipart part; `value` is str or bytes."""
    disposition = raw_disposition or f'form-data; name="{name}"'
    if filename is not None and raw_disposition is None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    data = value.encode() if isinstance(value, str) else value
    return head.encode() + b"\r\n" + data + b"\r\n"


def multipart(*parts):
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def scan_body(png, filename="chest.png", **fields):
    fields.setdefault("body_part", "CHEST")
    return multipart(
        part("file", png, filename=filename, content_type="image/png"),
        *(part(name, value) for name, value in fields.items()),
    )


def assert_nothing_stored(patient, media_root):
    assert not Scan.objects.filter(patient=patient).exists()
    assert not PatientDocument.objects.filter(patient=patient).exists()
    assert stored_files(media_root) == {}


def assert_json_error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]


class TestFormLimits:
    def test_it_rejects_a_form_field_over_the_memory_limit(
        self, api, patient, local_storage, chest_png, settings
    ):
        huge = "A" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
        body = scan_body(chest_png, view_position=huge)
        url = f"/patients/{patient.pk}/upload/scan"

        response = api.generic("POST", url, body, content_type=MULTIPART)

        assert_json_error(response, 413)
        assert "form fields" in response.json()["detail"]
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_too_many_fields(self, api, patient, local_storage, chest_png):
        fields = {f"field{number}": "x" for number in range(20)}
        url = f"/patients/{patient.pk}/upload/scan"

        with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10):
            body = scan_body(chest_png, **fields)
            response = api.generic("POST", url, body, content_type=MULTIPART)

        assert_json_error(response, 400)
        assert_nothing_stored(patient, local_storage)


class TestBodyLimit:
    def test_it_rejects_a_json_body_over_the_memory_limit(self, api, settings):
        name = "A" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
        body = json.dumps({"mrn": "HUGE-1", "name": name})

        response = api.generic(
            "POST", "/patients/", body, content_type="application/json"
        )

        assert_json_error(response, 413)
        assert not Patient.objects.filter(mrn="HUGE-1").exists()

    def test_it_rejects_a_declared_upload_size_before_reading(
        self, api, patient, local_storage, chest_png, settings
    ):
        # The test client's input raises if more than the real body is read, so
        # a 413 here means the declared length alone decided.
        declared = settings.MAX_UPLOAD_SIZE + settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
        url = f"/patients/{patient.pk}/upload/scan"

        response = api.generic(
            "POST",
            url,
            scan_body(chest_png),
            content_type=MULTIPART,
            CONTENT_LENGTH=str(declared),
        )

        assert_json_error(response, 413)
        assert str(declared) in response.json()["detail"]
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_a_declared_json_size_before_reading(self, api, settings):
        declared = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1

        response = api.generic(
            "POST",
            "/patients/",
            b'{"mrn": "M", "name": "N"}',
            content_type="application/json",
            CONTENT_LENGTH=str(declared),
        )

        assert_json_error(response, 413)
        assert not Patient.objects.exists()

    def test_it_accepts_a_file_within_the_limits(
        self, api, patient, local_storage, chest_png
    ):
        url = f"/patients/{patient.pk}/upload/scan"

        with override_settings(MAX_UPLOAD_SIZE=len(chest_png)):
            response = api.generic(
                "POST", url, scan_body(chest_png), content_type=MULTIPART
            )

        assert response.status_code == 201, response.content
        assert Scan.objects.get().size == len(chest_png)

    def test_it_rejects_an_invalid_content_length(self, api):
        response = api.generic(
            "POST",
            "/patients/",
            b"{}",
            content_type="application/json",
            CONTENT_LENGTH="12abc",
        )

        assert_json_error(response, 400)
        assert "12abc" in response.json()["detail"]


class TestUnroutedRequests:
    def test_it_answers_an_unknown_path_with_json(self, api):
        response = api.get("/scans/0.5/")

        assert_json_error(response, 404)
        assert response.json() == {"detail": "No endpoint matches /scans/0.5/."}

    def test_it_answers_a_non_numeric_patient_upload_with_json(self, api, chest_png):
        response = api.generic(
            "POST", "/patients/%C2%84/upload/scan", scan_body(chest_png), MULTIPART
        )

        assert_json_error(response, 404)

    def test_it_answers_a_disallowed_host_with_json(self, api):
        response = api.get("/patients/", HTTP_HOST="copilot.invalid")

        assert_json_error(response, 400)

    def test_it_answers_a_server_error_with_json(self, rf):
        from copilot.views import server_error

        response = server_error(rf.get("/patients/"))

        assert response.status_code == 500
        assert json.loads(response.content) == {
            "detail": "The server failed to answer the request."
        }

    def test_it_keeps_html_pages_in_the_admin(self, admin_client):
        response = admin_client.get("/admin/no-such-app/")

        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")

    def test_schema_answers_an_unknown_format_with_json(self, api):
        response = api.get("/schema/?format=xml")

        assert_json_error(response, 404)


class TestErrorBodies:
    def test_it_wraps_a_list_of_messages_in_an_object(self, api):
        response = api.get("/patients/?search=a%00b")

        assert response.status_code == 400
        assert response.json() == {"detail": "Null characters are not allowed."}
