"""Malformed bodies, wrong media types, oversized fields and hostile file names.

Bodies are built byte by byte here, because Django's test client cleans file
names and always writes well-formed multipart.
"""

import json
import uuid
from pathlib import Path

import pytest
from django.test import override_settings

from conftest import sha256, stored_files
from documents.models import PatientDocument
from patients.models import Patient
from scans.models import Scan

pytestmark = pytest.mark.django_db

BOUNDARY = "copilot-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name, value, filename=None, content_type=None, raw_disposition=None):
    """Return one part of a multipart body. `value` is str or bytes."""
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


class TestUploadMediaTypes:
    def post(self, api, patient, body, content_type):
        url = f"/patients/{patient.pk}/upload/scan"
        return api.generic("POST", url, body, content_type=content_type)

    def test_it_rejects_text_plain(self, api, patient, local_storage, chest_png):
        response = self.post(api, patient, chest_png, "text/plain")

        assert_json_error(response, 415)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_xml(self, api, patient, local_storage):
        body = b"<scan><body_part>CHEST</body_part><file>iVBORw0K</file></scan>"

        response = self.post(api, patient, body, "application/xml")

        assert_json_error(response, 415)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_json(self, api, patient, local_storage):
        body = json.dumps({"file": "iVBORw0KGgo=", "body_part": "CHEST"})

        response = self.post(api, patient, body, "application/json")

        assert_json_error(response, 415)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_a_missing_content_type(self, api, patient, local_storage):
        response = self.post(api, patient, b"file=x", "")

        assert_json_error(response, 415)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_multipart_without_boundary(
        self, api, patient, local_storage, chest_png
    ):
        response = self.post(api, patient, scan_body(chest_png), "multipart/form-data")

        assert_json_error(response, 400)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_missing_boundary(self, api, patient, local_storage, chest_png):
        content_type = "multipart/form-data; boundary=other-boundary"

        response = self.post(api, patient, scan_body(chest_png), content_type)

        assert response.status_code == 400
        assert response.json() == {"file": ["No file was submitted."]}
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_an_invalid_boundary(
        self, api, patient, local_storage, chest_png
    ):
        content_type = 'multipart/form-data; boundary="bad\x7fboundary"'

        response = self.post(api, patient, scan_body(chest_png), content_type)

        assert_json_error(response, 400)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_a_body_cut_short(self, api, patient, local_storage, chest_png):
        body = scan_body(chest_png)[: len(chest_png) // 2]

        response = self.post(api, patient, body, MULTIPART)

        assert response.status_code == 400
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_a_part_without_disposition(
        self, api, patient, local_storage, chest_png
    ):
        body = multipart(
            f"--{BOUNDARY}\r\nContent-Type: image/png\r\n\r\n".encode()
            + chest_png
            + b"\r\n"
        )

        response = self.post(api, patient, body, MULTIPART)

        assert response.status_code == 400
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_a_file_sent_as_a_string(self, api, patient, local_storage):
        body = multipart(part("file", "chest.png"), part("body_part", "CHEST"))

        response = self.post(api, patient, body, MULTIPART)

        assert response.status_code == 400
        assert "file" in response.json()
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_a_urlencoded_form(self, api, patient, local_storage):
        body = "file=chest.png&body_part=CHEST"
        content_type = "application/x-www-form-urlencoded"

        response = self.post(api, patient, body, content_type)

        assert_json_error(response, 415)
        assert_nothing_stored(patient, local_storage)

    def test_document_upload_rejects_json(self, api, patient, local_storage):
        body = json.dumps({"file": "JVBERi0=", "document_name": "Labs"})
        url = f"/patients/{patient.pk}/upload/document"

        response = api.generic("POST", url, body, content_type="application/json")

        assert_json_error(response, 415)
        assert_nothing_stored(patient, local_storage)


class TestFormLimits:
    def test_it_rejects_huge_form_field(
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
    def test_it_rejects_huge_json_body(self, api, settings):
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


HOSTILE_NAMES = {
    "parent folders": ("../../etc/passwd.png", "passwd.png"),
    "windows folders": ("..\\..\\x.png", "x.png"),
    "absolute path": ("/etc/cron.d/x.png", "x.png"),
    "nul": ("scan\x00.exe.png", "scan.exe.png"),
    "right-to-left override": ("scan\u202egnp.exe.png", "scangnp.exe.png"),
    "line break": ("scan\r\nX-Evil: 1.png", "scanX-Evil: 1.png"),
    "unicode": ("Röntgen 胸部 ✓.png", "Röntgen 胸部 ✓.png"),
    "long name": ("a" * 300 + ".png", "a" * 251 + ".png"),
}


class TestUploadFileNames:
    def post(self, api, patient, body):
        url = f"/patients/{patient.pk}/upload/scan"
        return api.generic("POST", url, body, content_type=MULTIPART)

    def disposition(self, filename):
        # RFC 5987 form, so that every character reaches the parser as sent.
        quoted = "".join(
            char if char.isalnum() and char.isascii() else f"%{byte:02X}"
            for char in filename
            for byte in (char.encode(),)
            for byte in byte
        )
        return f"form-data; name=\"file\"; filename*=UTF-8''{quoted}"

    def assert_stored_inside(self, media_root):
        # Nothing under the test's folder but the storage's own folders.
        outside = [
            path
            for path in media_root.parent.rglob("*")
            if path.is_file() and media_root not in path.parents
        ]
        assert outside == []
        for name in stored_files(media_root):
            assert Path(name).parts[0] == "xrays", name

    @pytest.mark.parametrize("case", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
    def test_it_stores_a_clean_name(self, api, patient, local_storage, chest_png, case):
        filename, expected = case
        body = multipart(
            part(
                "file",
                chest_png,
                content_type="image/png",
                raw_disposition=self.disposition(filename),
            ),
            part("body_part", "CHEST"),
        )

        response = self.post(api, patient, body)

        assert response.status_code == 201, response.content
        scan = Scan.objects.get()
        assert scan.original_filename == expected
        assert response.json()["scan"]["original_filename"] == expected
        assert Path(scan.file.name).parent.as_posix() == "xrays"
        uuid.UUID(Path(scan.file.name).stem)
        stored = stored_files(local_storage)
        assert sha256(stored[scan.file.name]) == scan.sha256
        self.assert_stored_inside(local_storage)

    def test_it_cleans_a_quoted_traversal_name(
        self, api, patient, local_storage, chest_png
    ):
        body = scan_body(chest_png, filename="../../../../tmp/evil.png")

        response = self.post(api, patient, body)

        assert response.status_code == 201, response.content
        assert Scan.objects.get().original_filename == "evil.png"
        self.assert_stored_inside(local_storage)

    def test_it_rejects_extension_only_name(
        self, api, patient, local_storage, chest_png
    ):
        response = self.post(api, patient, scan_body(chest_png, filename=".png"))

        assert response.status_code == 400
        assert "no extension" in response.json()["file"][0]
        assert_nothing_stored(patient, local_storage)

    @pytest.mark.parametrize("filename", ["..", ".", "../", ""])
    def test_it_rejects_a_name_without_a_file(
        self, api, patient, local_storage, chest_png, filename
    ):
        response = self.post(api, patient, scan_body(chest_png, filename=filename))

        assert response.status_code == 400
        assert isinstance(response.json(), dict)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_overlong_part_name(
        self, api, patient, local_storage, chest_png
    ):
        body = scan_body(chest_png, filename="a" * 1100 + ".png")

        response = self.post(api, patient, body)

        assert_json_error(response, 400)
        assert_nothing_stored(patient, local_storage)

    def test_it_rejects_a_name_with_a_hidden_extension(
        self, api, patient, local_storage, chest_png
    ):
        response = self.post(api, patient, scan_body(chest_png, filename="x.png.exe"))

        assert response.status_code == 400
        assert "'exe'" in response.json()["file"][0]
        assert_nothing_stored(patient, local_storage)


class TestCleanFilename:
    def test_it_keeps_the_extension_of_a_long_name(self):
        from copilot.files import clean_filename

        name = clean_filename("b" * 300 + ".dicom")

        assert len(name) == 255
        assert name.endswith("b.dicom")

    def test_it_drops_a_windows_drive_folder(self):
        from copilot.files import clean_filename

        assert clean_filename("C:\\scans\\chest.png") == "chest.png"

    def test_it_drops_a_parent_folder_name(self):
        from copilot.files import clean_filename

        assert clean_filename("x/..") == ""


class TestUnroutedRequests:
    def test_it_answers_an_unknown_path_with_json(self, api):
        response = api.get("/scans/0.5/")

        assert_json_error(response, 404)
        assert response.json() == {"detail": "Not found."}

    def test_non_numeric_patient_gets_json(self, api, chest_png):
        response = api.generic(
            "POST", "/patients/%C2%84/upload/scan", scan_body(chest_png), MULTIPART
        )

        assert_json_error(response, 404)

    def test_it_rejects_a_nul_in_a_file_path(self, api):
        response = api.get("/media/xrays/a%00b.png")

        assert_json_error(response, 404)

    def test_it_answers_a_disallowed_host_with_json(self, api):
        response = api.get("/patients/", HTTP_HOST="copilot.invalid")

        assert_json_error(response, 400)

    def test_schema_answers_an_unknown_format_with_json(self, api):
        response = api.get("/schema/?format=xml")

        assert_json_error(response, 404)


class TestErrorBodies:
    def test_it_wraps_message_lists(self, api):
        response = api.get("/patients/?search=a%00b")

        assert response.status_code == 400
        assert response.json() == {"detail": "Null characters are not allowed."}
