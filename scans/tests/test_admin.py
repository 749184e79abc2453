import datetime as dt

import pytest
from django.contrib import admin

from conftest import stored_files, upload
from copilot.models import AuditEntry
from patients.models import Patient
from scans.admin import ScanAdmin
from scans.models import Scan
from scans.services import create_scan

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/scans/scan/"


def make_scan(patient, image, **fields):
    fields.setdefault("body_part", "CHEST")
    return create_scan(patient, upload("chest.png", image), **fields)


def listed_ids(response):
    return [scan.pk for scan in response.context["cl"].result_list]


def fetch(client, url):
    response = client.get(url)
    content = b"".join(response.streaming_content) if response.streaming else b""
    return response.status_code, content


class TestScanList:
    @pytest.fixture
    def scans(self, patient):
        def row(body_part, view_position, modality, year):
            return Scan.objects.create(
                patient=patient,
                file=f"xrays/{body_part}.png",
                thumbnail=f"xrays/thumbnails/{body_part}.png",
                body_part=body_part,
                view_position=view_position,
                modality=modality,
                scan_date=dt.datetime(year, 5, 1, tzinfo=dt.UTC),
            )

        return [
            row("CHEST", "PA", "DX", 2023),
            row("HAND", "AP", "CR", 2024),
            row("KNEE", "LAT", "DX", 2024),
        ]

    def test_it_shows_thumbnails_and_columns(self, staff_client, scans):
        chest = scans[0]

        response = staff_client.get(LIST_URL)

        assert response.status_code == 200
        assert sorted(listed_ids(response)) == sorted(scan.pk for scan in scans)
        html = response.content.decode()
        assert f'<img src="/admin/scans/scan/{chest.pk}/thumbnail/"' in html
        assert "John Doe (MRN001)" in html
        assert '<td class="field-view_position">LAT</td>' in html
        assert '<td class="field-modality">CR</td>' in html

    def test_it_filters_by_body_part(self, staff_client, scans):
        response = staff_client.get(LIST_URL, {"body_part": "HAND"})

        assert listed_ids(response) == [scans[1].pk]

    def test_it_filters_by_modality(self, staff_client, scans):
        response = staff_client.get(LIST_URL, {"modality": "DX"})

        assert sorted(listed_ids(response)) == [scans[0].pk, scans[2].pk]

    def test_it_filters_by_view_position(self, staff_client, scans):
        response = staff_client.get(LIST_URL, {"view_position": "LAT"})

        assert listed_ids(response) == [scans[2].pk]

    def test_it_drills_down_by_scan_date(self, staff_client, scans):
        response = staff_client.get(LIST_URL, {"scan_date__year": "2024"})

        assert sorted(listed_ids(response)) == [scans[1].pk, scans[2].pk]
        assert "May 2024" in response.content.decode()

    def test_it_searches_mrn(self, staff_client, scans):
        other = Patient.objects.create(mrn="OTHER9", name="Mary Major")
        theirs = Scan.objects.create(
            patient=other, file="xrays/o.png", body_part="CHEST"
        )

        response = staff_client.get(LIST_URL, {"q": "other9"})

        assert listed_ids(response) == [theirs.pk]

    def test_it_has_no_add_page(self, staff_client):
        response = staff_client.get(f"{LIST_URL}add/")

        assert response.status_code == 403


class TestScanPage:
    def test_it_shows_preview_and_dicom_header(
        self, staff_client, chest_patient, chest_dicom
    ):
        scan = create_scan(chest_patient, upload("chest.dcm", chest_dicom))

        response = staff_client.get(f"{LIST_URL}{scan.pk}/change/")

        assert response.status_code == 200
        html = response.content.decode()
        assert f'<img src="/admin/scans/scan/{scan.pk}/preview/"' in html
        assert 'class="scan-preview"' in html
        assert f'href="/admin/scans/scan/{scan.pk}/file/"' in html
        for value in (
            scan.sop_instance_uid,
            scan.study_instance_uid,
            scan.series_instance_uid,
            scan.transfer_syntax_uid,
            "MONOCHROME1",
            "9RG1",
        ):
            assert value in html
        assert "DICOM header" in html
        assert 'name="body_part"' not in html
        assert "scan-mismatch" not in html

    def test_it_flags_a_confirmed_patient_mismatch(
        self, staff_client, radiologist, patient, chest_dicom
    ):
        scan = create_scan(
            patient,
            upload("chest.dcm", chest_dicom),
            confirm_patient_mismatch=True,
            user=radiologist,
        )

        response = staff_client.get(f"{LIST_URL}{scan.pk}/change/")

        html = response.content.decode()
        assert "scan-mismatch" in html
        assert "The DICOM PatientID “9RG1” is not the MRN “MRN001”." in html
        assert "Stored after confirmation by radiologist on" in html


class TestScanFileViews:
    @pytest.fixture
    def scan(self, patient, chest_png):
        return make_scan(patient, chest_png)

    @pytest.mark.parametrize("field_name", ["file", "preview", "thumbnail"])
    def test_it_redirects_to_the_stored_file(
        self, staff_client, scan, local_storage, field_name
    ):
        name = getattr(scan, field_name).name

        response = staff_client.get(f"{LIST_URL}{scan.pk}/{field_name}/")

        assert response.status_code == 302
        assert response["Location"] == f"http://testserver/media/{name}"
        assert "no-store" in response["Cache-Control"]
        status, content = fetch(staff_client, response["Location"])
        assert status == 200
        assert content == stored_files(local_storage)[name]

    def test_it_requires_login(self, client, scan):
        response = client.get(f"{LIST_URL}{scan.pk}/file/")

        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    def test_it_requires_view_permission(self, staff_client, radiologist, scan):
        radiologist.groups.clear()

        response = staff_client.get(f"{LIST_URL}{scan.pk}/file/")

        assert response.status_code == 403

    def test_it_rejects_unknown_scan(self, staff_client, scan):
        response = staff_client.get(f"{LIST_URL}{scan.pk + 1}/preview/")

        assert response.status_code == 404

    def test_it_rejects_scan_without_thumbnail(self, staff_client, patient):
        scan = Scan.objects.create(patient=patient, file="xrays/a.png")

        response = staff_client.get(f"{LIST_URL}{scan.pk}/thumbnail/")

        assert response.status_code == 404


class TestDeleteScan:
    def test_it_deletes_stored_files(
        self,
        staff_client,
        patient,
        chest_png,
        local_storage,
        django_capture_on_commit_callbacks,
    ):
        scan = make_scan(patient, chest_png)
        kept = make_scan(patient, chest_png)

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                f"{LIST_URL}{scan.pk}/delete/", {"post": "yes"}
            )

        assert response.status_code == 302
        assert list(Scan.objects.all()) == [kept]
        assert sorted(stored_files(local_storage)) == sorted(kept.stored_names)

    def test_it_bulk_deletes_stored_files(
        self,
        staff_client,
        patient,
        chest_png,
        local_storage,
        django_capture_on_commit_callbacks,
    ):
        scans = [make_scan(patient, chest_png) for _ in range(3)]
        kept = scans.pop()

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                LIST_URL,
                {
                    "action": "delete_selected",
                    "_selected_action": [scan.pk for scan in scans],
                    "post": "yes",
                },
            )

        assert response.status_code == 302
        assert list(Scan.objects.all()) == [kept]
        assert sorted(stored_files(local_storage)) == sorted(kept.stored_names)

    def test_it_skips_a_scan_deleted_meanwhile(self, rf, patient, chest_png):
        # The row that a second request loaded before the first deleted it.
        stale = make_scan(patient, chest_png)
        Scan.objects.get(pk=stale.pk).delete()
        deletes = AuditEntry.objects.filter(action="delete").count()

        ScanAdmin(Scan, admin.site).delete_model(rf.post("/"), stale)

        assert AuditEntry.objects.filter(action="delete").count() == deletes
        assert not Scan.objects.exists()

    def test_it_requires_delete_permission(
        self, group_client, patient, chest_png, local_storage
    ):
        scan = make_scan(patient, chest_png)
        client = group_client("Front desk")

        response = client.post(f"{LIST_URL}{scan.pk}/delete/", {"post": "yes"})

        assert response.status_code == 403
        assert list(Scan.objects.all()) == [scan]
        assert sorted(stored_files(local_storage)) == sorted(scan.stored_names)
