import datetime as dt
import io

import pydicom
import pytest
from django.test import override_settings
from PIL import Image
from rest_framework.exceptions import NotFound

from conftest import (
    CHEST_DICOM,
    CHEST_MRN,
    dicom_test_file,
    sha256,
    stored_files,
    upload,
)
from copilot.models import AuditEntry
from patients.models import Patient
from scans.models import Scan
from scans.services import create_scan
from scans.views import ScanViewSet

pytestmark = pytest.mark.django_db

SCAN_KEYS = {"id", "patient_id", "file_url", "body_part", "view_position"}


def fetch(api, url):
    response = api.get(url)
    content = (
        b"".join(response.streaming_content) if response.status_code == 200 else b""
    )
    return response.status_code, content


def post_scan(api, patient, file, **fields):
    data = dict(fields)
    if file is not None:
        data["file"] = file
    return api.post(f"/patients/{patient.pk}/upload/scan", data)


def chest_dicom_with(**values):
    """Return the chest DICOM file with some header values replaced."""
    dataset = pydicom.dcmread(dicom_test_file(CHEST_DICOM))
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def zone_of(offset):
    """Return the time zone of a TimezoneOffsetFromUTC value such as "-1200"."""
    delta = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:]))
    return dt.timezone(-delta if offset[0] == "-" else delta)


class TestUploadScan:
    def test_it_works(self, api, patient, chest_jpeg, local_storage):
        response = post_scan(
            api,
            patient,
            upload("chest_xray.jpg", chest_jpeg),
            body_part="chest",
            view_position="pa",
        )

        assert response.status_code == 201
        body = response.json()
        assert body["message"] == "X-ray scan uploaded successfully"
        scan = body["scan"]
        assert SCAN_KEYS <= set(scan)
        assert scan["patient_id"] == patient.pk
        assert scan["body_part"] == "CHEST"
        assert scan["view_position"] == "PA"
        assert scan["modality"] == "DX"
        assert scan["scan_date"]
        assert scan["file_url"].startswith("http://testserver/media/xrays/")
        assert scan["file_url"].endswith(".jpg")
        assert body["patient"] == {
            "id": patient.pk,
            "name": "John Doe",
            "mrn": "MRN001",
        }

        row = Scan.objects.get()
        assert row.pk == scan["id"]
        assert row.original_filename == "chest_xray.jpg"
        assert row.content_type == "image/jpeg"
        assert row.size == len(chest_jpeg)
        assert row.sha256 == sha256(chest_jpeg)
        assert (scan["columns"], scan["rows"]) == Image.open(
            io.BytesIO(chest_jpeg)
        ).size
        assert stored_files(local_storage)[row.file.name] == chest_jpeg

    def test_file_url_returns_the_bytes(self, api, patient, chest_png):
        response = post_scan(
            api, patient, upload("chest.png", chest_png), body_part="CHEST"
        )

        status, content = fetch(api, response.json()["scan"]["file_url"])

        assert status == 200
        assert content == chest_png

    def test_it_makes_preview_and_thumbnail(self, api, patient, chest_jpeg):
        response = post_scan(
            api, patient, upload("c.jpg", chest_jpeg), body_part="CHEST"
        )
        scan = response.json()["scan"]

        _, preview = fetch(api, scan["preview_url"])
        _, thumbnail = fetch(api, scan["thumbnail_url"])

        assert max(Image.open(io.BytesIO(preview)).size) <= 1024
        assert max(Image.open(io.BytesIO(thumbnail)).size) <= 256
        assert max(Image.open(io.BytesIO(thumbnail)).size) >= 200

    def test_it_upper_cases_fields(self, api, patient, chest_png):
        response = post_scan(
            api,
            patient,
            upload("c.png", chest_png),
            body_part="hand",
            view_position="lat",
            modality="cr",
        )

        scan = response.json()["scan"]
        assert scan["body_part"] == "HAND"
        assert scan["view_position"] == "LAT"
        assert scan["modality"] == "CR"

    def test_stored_name_hides_patient_and_filename(self, api, patient, chest_png):
        response = post_scan(
            api, patient, upload("John_Doe_MRN001.png", chest_png), body_part="CHEST"
        )

        scan = response.json()["scan"]
        for url in (scan["file_url"], scan["preview_url"], scan["thumbnail_url"]):
            assert "John" not in url
            assert "Doe" not in url
            assert "MRN001" not in url

    def test_it_stores_dicom_byte_for_byte(self, api, chest_patient, chest_dicom):
        response = post_scan(api, chest_patient, upload("chest.dcm", chest_dicom))

        assert response.status_code == 201
        scan = response.json()["scan"]
        assert scan["file_url"].endswith(".dcm")
        status, content = fetch(api, scan["file_url"])
        assert status == 200
        assert sha256(content) == sha256(chest_dicom)
        assert Scan.objects.get().content_type == "application/dicom"

    def test_it_fills_fields_from_dicom_header(self, api, chest_patient, chest_dicom):
        response = post_scan(api, chest_patient, upload("chest.dcm", chest_dicom))

        scan = response.json()["scan"]
        assert scan["body_part"] == "CHEST"
        assert scan["view_position"] == "PA"
        assert scan["modality"] == "CR"
        assert scan["scan_date"].startswith("2004-08-26")
        assert scan["sop_instance_uid"]
        assert scan["study_instance_uid"]
        assert scan["series_instance_uid"]
        assert scan["rows"] > 0
        assert scan["columns"] > 0
        assert scan["photometric_interpretation"] == "MONOCHROME1"
        assert scan["dicom_patient_id"] == CHEST_MRN
        assert scan["patient_mismatch_confirmed_by"] is None

    def test_request_fields_win_over_header(self, api, chest_patient, chest_dicom):
        response = post_scan(
            api,
            chest_patient,
            upload("chest.dcm", chest_dicom),
            body_part="thorax",
            view_position="ap",
            modality="dx",
        )

        scan = response.json()["scan"]
        assert scan["body_part"] == "THORAX"
        assert scan["view_position"] == "AP"
        assert scan["modality"] == "DX"

    def test_it_accepts_dicom_without_preamble(self, api, patient):
        data = dicom_test_file("OT-PAL-8-face.dcm").read_bytes()
        assert data[128:132] != b"DICM"

        response = post_scan(
            api,
            patient,
            upload("slice.dcm", data),
            body_part="HEAD",
            confirm_patient_mismatch="true",
        )

        assert response.status_code == 201, response.json()

    def test_it_rejects_patient_mismatch(
        self, api, patient, chest_dicom, local_storage
    ):
        response = post_scan(api, patient, upload("chest.dcm", chest_dicom))

        assert response.status_code == 409
        detail = response.json()["detail"]
        assert CHEST_MRN in detail
        assert "MRN001" in detail
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_records_confirmed_mismatch(
        self, api, patient, radiologist, chest_dicom
    ):
        response = post_scan(
            api,
            patient,
            upload("chest.dcm", chest_dicom),
            confirm_patient_mismatch="true",
        )

        assert response.status_code == 201
        scan = response.json()["scan"]
        assert scan["patient_mismatch_confirmed_by"] == "radiologist"
        assert scan["patient_mismatch_confirmed_at"]
        assert Scan.objects.get().patient_mismatch_confirmed_by == radiologist

    def test_mrn_comparison_ignores_case_and_spaces(self, api, chest_dicom):
        from patients.models import Patient

        patient = Patient.objects.create(mrn=" 9rg1 ", name="Chest Patient")

        response = post_scan(api, patient, upload("chest.dcm", chest_dicom))

        assert response.status_code == 201

    def test_it_rejects_duplicate_sop_instance(self, api, chest_patient, chest_dicom):
        first = post_scan(api, chest_patient, upload("chest.dcm", chest_dicom))

        second = post_scan(api, chest_patient, upload("again.dcm", chest_dicom))

        assert second.status_code == 409
        assert f"Scan {first.json()['scan']['id']}" in second.json()["detail"]
        assert Scan.objects.count() == 1

    @pytest.mark.filterwarnings("ignore:The value length:UserWarning")
    def test_it_rejects_overlong_header_value(self, api, chest_patient, local_storage):
        data = chest_dicom_with(Modality="DIGITAL RADIOGRAPHY")

        response = post_scan(api, chest_patient, upload("chest.dcm", data))

        assert response.status_code == 400
        assert response.json() == {
            "modality": [
                "The DICOM Modality 'DIGITAL RADIOGRAPHY' is longer than 10 "
                "characters. Send modality to store the scan with another value."
            ]
        }
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    @pytest.mark.filterwarnings("ignore:The value length:UserWarning")
    def test_request_field_wins_over_a_long_header_value(self, api, chest_patient):
        data = chest_dicom_with(Modality="DIGITAL RADIOGRAPHY")

        response = post_scan(api, chest_patient, upload("c.dcm", data), modality="DX")

        assert response.status_code == 201
        assert Scan.objects.get().modality == "DX"

    @pytest.mark.parametrize(
        ("study_date", "study_time", "offset"),
        [("00010101", "000000", "+1400"), ("99991231", "235959", "-1200")],
    )
    def test_it_skips_an_out_of_range_study_date(
        self, api, chest_patient, study_date, study_time, offset
    ):
        data = chest_dicom_with(
            StudyDate=study_date, StudyTime=study_time, TimezoneOffsetFromUTC=offset
        )

        response = post_scan(api, chest_patient, upload("chest.dcm", data))

        # The series date and time of the file, in the same offset.
        series = dt.datetime(1995, 9, 26, 12, 51, 30, tzinfo=zone_of(offset))
        assert response.status_code == 201, response.json()
        assert Scan.objects.get().scan_date == series
        assert api.get("/scans").status_code == 200

    @pytest.mark.filterwarnings("ignore:The value length:UserWarning")
    @pytest.mark.parametrize(
        "keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    )
    def test_it_rejects_a_uid_longer_than_64_characters(
        self, api, chest_patient, local_storage, keyword
    ):
        data = chest_dicom_with(**{keyword: "1.2." + "3" * 70})

        response = post_scan(api, chest_patient, upload("chest.dcm", data))

        assert response.status_code == 400
        assert response.json() == {
            "file": [
                f"The DICOM {keyword} is longer than 64 characters, so the file "
                "is not valid DICOM."
            ]
        }
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    @pytest.mark.parametrize(
        "filename",
        ["chest.exe", "chest.gif", "chest.JPG.exe", "chest.pdf"],
    )
    def test_it_rejects_other_extensions(
        self, api, patient, chest_jpeg, local_storage, filename
    ):
        response = post_scan(
            api, patient, upload(filename, chest_jpeg), body_part="CHEST"
        )

        assert response.status_code == 400
        message = response.json()["file"][0]
        assert message.startswith("Invalid file type")
        assert "Allowed: png, jpg, jpeg, dcm, dicom." in message
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_missing_extension(self, api, patient, chest_jpeg):
        response = post_scan(
            api, patient, upload("chest", chest_jpeg), body_part="CHEST"
        )

        assert response.status_code == 400
        assert "no extension" in response.json()["file"][0]

    def test_it_rejects_jpeg_named_png(self, api, patient, chest_jpeg, local_storage):
        response = post_scan(
            api, patient, upload("chest.png", chest_jpeg), body_part="CHEST"
        )

        assert response.status_code == 400
        assert "not PNG" in response.json()["file"][0]
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_pdf_named_jpg(self, api, patient, report_pdf, local_storage):
        response = post_scan(
            api, patient, upload("chest.jpg", report_pdf), body_part="CHEST"
        )

        assert response.status_code == 400
        assert "not JPEG" in response.json()["file"][0]
        assert stored_files(local_storage) == {}

    def test_it_rejects_text_named_dcm(self, api, patient, local_storage):
        data = b"This is a text file, not a DICOM data set.\n" * 10

        response = post_scan(api, patient, upload("chest.dcm", data), body_part="CHEST")

        assert response.status_code == 400
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_truncated_dicom(
        self, api, chest_patient, chest_dicom, local_storage
    ):
        data = chest_dicom[: len(chest_dicom) // 2]

        response = post_scan(api, chest_patient, upload("chest.dcm", data))

        assert response.status_code == 400
        assert "truncated" in response.json()["file"][0]
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_dicom_without_pixel_data(self, api, patient, local_storage):
        data = dicom_test_file("rtplan.dcm").read_bytes()

        response = post_scan(api, patient, upload("plan.dcm", data), body_part="CHEST")

        assert response.status_code == 400
        assert "no pixel data" in response.json()["file"][0]
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_undecodable_dicom(self, api, patient, local_storage):
        data = bytearray(dicom_test_file("MR_small_jp2klossless.dcm").read_bytes())
        codestream = data.find(b"\xff\x4f\xff\x51")  # JPEG 2000 SOC and SIZ.
        data[codestream + 4 : codestream + 44] = b"\xa5" * 40

        response = post_scan(
            api,
            patient,
            upload("mr.dcm", bytes(data)),
            body_part="HEAD",
            confirm_patient_mismatch="true",
        )

        assert response.status_code == 400
        assert "cannot be decoded" in response.json()["file"][0]
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_empty_file(self, api, patient, local_storage):
        response = post_scan(api, patient, upload("chest.png", b""), body_part="CHEST")

        assert response.status_code == 400
        assert "empty" in str(response.json()["file"])
        assert stored_files(local_storage) == {}

    def test_it_rejects_large_file(self, api, patient, chest_jpeg, local_storage):
        with override_settings(MAX_UPLOAD_SIZE=1000):
            response = post_scan(
                api, patient, upload("c.jpg", chest_jpeg), body_part="CHEST"
            )

        assert response.status_code == 413
        assert "1000" in response.json()["detail"]
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_missing_body_part(
        self, api, patient, chest_jpeg, local_storage
    ):
        response = post_scan(api, patient, upload("c.jpg", chest_jpeg))

        assert response.status_code == 400
        assert response.json() == {"body_part": ["This field is required."]}
        assert stored_files(local_storage) == {}

    def test_it_rejects_missing_file(self, api, patient):
        response = post_scan(api, patient, None, body_part="CHEST")

        assert response.status_code == 400
        assert "file" in response.json()

    def test_it_rejects_unknown_patient(self, api, chest_jpeg, local_storage):
        response = api.post(
            "/patients/7/upload/scan",
            {"file": upload("c.jpg", chest_jpeg), "body_part": "CHEST"},
        )

        assert response.status_code == 404
        assert response.json()["detail"] == "Patient 7 not found"
        assert stored_files(local_storage) == {}

    def test_it_requires_authentication(self, anonymous, patient, chest_jpeg):
        response = post_scan(
            anonymous, patient, upload("c.jpg", chest_jpeg), body_part="X"
        )

        assert response.status_code == 401
        assert not Scan.objects.exists()

    def test_it_requires_add_permission(self, api, radiologist, patient, chest_jpeg):
        radiologist.groups.clear()

        response = post_scan(api, patient, upload("c.jpg", chest_jpeg), body_part="X")

        assert response.status_code == 403
        assert not Scan.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestCreateScan:
    def test_it_rejects_a_patient_deleted_meanwhile(
        self, patient, chest_png, local_storage
    ):
        # The row the caller looked up, deleted before the scan is saved.
        stale = Patient.objects.get(pk=patient.pk)
        Patient.objects.filter(pk=patient.pk).delete()

        with pytest.raises(NotFound) as raised:
            create_scan(stale, upload("c.png", chest_png), body_part="CHEST")

        assert str(raised.value.detail) == f"Patient {patient.pk} not found"
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}


class TestListScans:
    def test_it_filters_by_patient(self, api, patient, chest_patient, chest_png):
        post_scan(api, patient, upload("a.png", chest_png), body_part="CHEST")
        post_scan(api, chest_patient, upload("b.png", chest_png), body_part="HAND")

        response = api.get(f"/scans?patient={chest_patient.pk}")

        body = response.json()
        assert body["count"] == 1
        assert body["results"][0]["body_part"] == "HAND"

    def test_it_rejects_invalid_patient_filter(self, api):
        response = api.get("/scans?patient=abc")

        assert response.status_code == 400

    def test_it_rejects_a_patient_filter_beyond_any_id(self, api):
        response = api.get(f"/scans?patient={2**63}")

        assert response.status_code == 400
        assert response.json() == {"patient": [f"'{2**63}' is not a valid id."]}

    def test_it_requires_authentication(self, anonymous):
        assert anonymous.get("/scans").status_code == 401


class TestGetScan:
    def test_it_works(self, api, patient, chest_png):
        created = post_scan(api, patient, upload("a.png", chest_png), body_part="CHEST")

        response = api.get(f"/scans/{created.json()['scan']['id']}")

        assert response.status_code == 200
        assert response.json() == created.json()["scan"]

    def test_it_handles_unknown_scan(self, api):
        response = api.get("/scans/5")

        assert response.status_code == 404
        assert response.json()["detail"] == "Scan 5 not found"


class TestDeleteScan:
    # Files are deleted after the commit, so this test needs real transactions.
    @pytest.mark.django_db(transaction=True)
    def test_it_deletes_row_and_files(self, api, patient, chest_png, local_storage):
        created = post_scan(api, patient, upload("a.png", chest_png), body_part="CHEST")
        scan = created.json()["scan"]
        assert len(stored_files(local_storage)) == 3

        response = api.delete(f"/scans/{scan['id']}")

        assert response.status_code == 200
        assert response.json() == {"message": f"Scan {scan['id']} deleted successfully"}
        assert not Scan.objects.exists()
        assert stored_files(local_storage) == {}
        assert fetch(api, scan["file_url"])[0] == 404

    @pytest.mark.django_db(transaction=True)
    def test_it_rejects_a_scan_deleted_meanwhile(self, api, patient, chest_png):
        created = post_scan(api, patient, upload("a.png", chest_png), body_part="CHEST")
        # The row that a second request looked up before the first deleted it.
        stale = Scan.objects.get(pk=created.json()["scan"]["id"])
        api.delete(f"/scans/{stale.pk}")
        deletes = AuditEntry.objects.filter(action="delete").count()

        with pytest.raises(NotFound) as raised:
            ScanViewSet(object_label="Scan").perform_destroy(stale)

        assert str(raised.value.detail) == f"Scan {stale.pk} not found"
        assert AuditEntry.objects.filter(action="delete").count() == deletes

    def test_it_handles_unknown_scan(self, api):
        response = api.delete("/scans/5")

        assert response.status_code == 404
        assert response.json()["detail"] == "Scan 5 not found"

    def test_it_requires_delete_permission(self, api, radiologist, patient, chest_png):
        created = post_scan(api, patient, upload("a.png", chest_png), body_part="CHEST")
        radiologist.groups.clear()

        response = api.delete(f"/scans/{created.json()['scan']['id']}")

        assert response.status_code == 403
        assert Scan.objects.count() == 1
