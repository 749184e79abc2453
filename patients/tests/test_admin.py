import datetime as dt

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conftest import CHEST_MRN, stored_files, upload
from documents.models import PatientDocument
from documents.services import create_document
from patients.models import Patient
from scans.models import Scan
from scans.services import create_scan

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/patients/patient/"
ADD_URL = "/admin/patients/patient/add/"


def change_url(patient):
    return f"/admin/patients/patient/{patient.pk}/change/"


def page_data(patient=None, *, scans=(), documents=(), delete=(), **fields):
    """Return the POST data of the patient page.

    `scans` and `documents` are dicts of upload form fields, one per new row;
    `delete` lists stored scans and documents whose delete box is ticked.
    """
    data = {"mrn": "", "name": "", "age": "", "gender": ""}
    if patient is not None:
        data.update(
            mrn=patient.mrn,
            name=patient.name,
            age=patient.age or "",
            gender=patient.gender,
        )
    data.update(fields)

    stored = {"scans": [], "documents": []}
    if patient is not None:
        stored = {
            "scans": list(patient.scans.all()),
            "documents": list(patient.documents.all()),
        }
    for prefix, rows in stored.items():
        data[f"{prefix}-TOTAL_FORMS"] = len(rows)
        data[f"{prefix}-INITIAL_FORMS"] = len(rows)
        for index, row in enumerate(rows):
            data[f"{prefix}-{index}-id"] = row.pk
            data[f"{prefix}-{index}-patient"] = patient.pk
            if row in delete:
                data[f"{prefix}-{index}-DELETE"] = "on"

    for prefix, forms in (("scans-2", scans), ("documents-2", documents)):
        data[f"{prefix}-TOTAL_FORMS"] = len(forms)
        data[f"{prefix}-INITIAL_FORMS"] = 0
        for index, form in enumerate(forms):
            for name, value in form.items():
                data[f"{prefix}-{index}-{name}"] = value
    return data


def form_errors(response, prefix):
    """Return the errors of each form of the inline formset with this prefix."""
    for inline in response.context["inline_admin_formsets"]:
        if inline.formset.prefix == prefix:
            return [form.errors for form in inline.formset.forms]
    raise AssertionError(f"No inline formset with prefix {prefix!r}.")


def make_scan(patient, image, name="chest.jpg", **fields):
    return create_scan(patient, upload(name, image), body_part="CHEST", **fields)


def make_document(patient, pdf, name="Blood work"):
    return create_document(patient, upload("lab.pdf", pdf), document_name=name)


class TestPatientList:
    def test_it_shows_counts_and_last_scan_date(self, staff_client, patient):
        last = dt.datetime(2024, 3, 9, 10, 30, tzinfo=dt.UTC)
        Scan.objects.create(
            patient=patient, file="xrays/a.png", body_part="CHEST", scan_date=last
        )
        Scan.objects.create(
            patient=patient,
            file="xrays/b.png",
            body_part="HAND",
            scan_date=last - dt.timedelta(days=40),
        )
        PatientDocument.objects.create(
            patient=patient, document_name="Lab", file="reports/c.pdf"
        )
        Patient.objects.create(mrn="EMPTY1", name="No Files")

        response = staff_client.get(LIST_URL)

        assert response.status_code == 200
        rows = {row.mrn: row for row in response.context["cl"].result_list}
        assert rows["MRN001"].scans_count == 2
        assert rows["MRN001"].documents_count == 1
        assert rows["MRN001"].last_scan_date == last
        assert rows["EMPTY1"].scans_count == 0
        assert rows["EMPTY1"].last_scan_date is None
        html = response.content.decode()
        assert '<td class="field-scans_count">2</td>' in html
        assert '<td class="field-documents_count">1</td>' in html
        assert "March 9, 2024" in html

    def test_it_uses_the_same_queries_for_more_patients(self, staff_client):
        def make_patients(start, count):
            for index in range(start, start + count):
                patient = Patient.objects.create(mrn=f"M{index}", name=f"P {index}")
                Scan.objects.create(
                    patient=patient, file=f"xrays/{index}.png", body_part="CHEST"
                )
                PatientDocument.objects.create(
                    patient=patient, document_name="Lab", file=f"reports/{index}.pdf"
                )

        make_patients(0, 1)
        with CaptureQueriesContext(connection) as one:
            staff_client.get(LIST_URL)
        make_patients(1, 30)
        with CaptureQueriesContext(connection) as many:
            staff_client.get(LIST_URL)

        # The count must not grow with the number of patients listed.
        assert len(many) == len(one)
        assert len(one) <= 8

    def test_it_searches_mrn(self, staff_client, patient):
        Patient.objects.create(mrn="OTHER9", name="Mary Major")

        response = staff_client.get(LIST_URL, {"q": "mrn001"})

        mrns = [row.mrn for row in response.context["cl"].result_list]
        assert mrns == ["MRN001"]

    def test_it_searches_name(self, staff_client, patient):
        Patient.objects.create(mrn="OTHER9", name="Mary Major")

        response = staff_client.get(LIST_URL, {"q": "major"})

        mrns = [row.mrn for row in response.context["cl"].result_list]
        assert mrns == ["OTHER9"]

    def test_it_filters_by_gender(self, staff_client, patient):
        Patient.objects.create(mrn="OTHER9", name="Mary Major", gender="Female")

        response = staff_client.get(LIST_URL, {"gender": "Female"})

        mrns = [row.mrn for row in response.context["cl"].result_list]
        assert mrns == ["OTHER9"]

    def test_it_filters_patients_with_scans(self, staff_client, patient):
        Patient.objects.create(mrn="OTHER9", name="Mary Major")
        Scan.objects.create(patient=patient, file="xrays/a.png", body_part="CHEST")

        with_scans = staff_client.get(LIST_URL, {"has_scans": "yes"})
        without_scans = staff_client.get(LIST_URL, {"has_scans": "no"})

        assert [row.mrn for row in with_scans.context["cl"].result_list] == ["MRN001"]
        assert [row.mrn for row in without_scans.context["cl"].result_list] == [
            "OTHER9"
        ]

    def test_it_filters_by_created_date(self, staff_client, patient):
        old = Patient.objects.create(mrn="OLD1", name="Old Patient")
        Patient.objects.filter(pk=old.pk).update(
            created_at=timezone.now() - dt.timedelta(days=400)
        )
        midnight = timezone.localtime().replace(hour=0, minute=0, second=0)

        # The parameters of the filter's "Today" link.
        response = staff_client.get(
            LIST_URL,
            {
                "created_at__gte": str(midnight.replace(microsecond=0)),
                "created_at__lt": str(
                    (midnight + dt.timedelta(days=1)).replace(microsecond=0)
                ),
            },
        )

        mrns = [row.mrn for row in response.context["cl"].result_list]
        assert mrns == ["MRN001"]

    def test_it_requires_login(self, client, patient):
        response = client.get(LIST_URL)

        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    def test_it_requires_view_permission(self, staff_client, radiologist, patient):
        radiologist.groups.clear()

        response = staff_client.get(LIST_URL)

        assert response.status_code == 403


class TestPatientPage:
    def test_it_shows_scans_with_thumbnail_and_links(
        self, staff_client, patient, chest_jpeg
    ):
        scan = make_scan(patient, chest_jpeg, view_position="AP")

        response = staff_client.get(change_url(patient))

        assert response.status_code == 200
        html = response.content.decode()
        assert f'<img src="/admin/scans/scan/{scan.pk}/thumbnail/"' in html
        assert f'href="/admin/scans/scan/{scan.pk}/preview/"' in html
        assert f'href="/admin/scans/scan/{scan.pk}/file/"' in html
        assert "<p>CHEST</p>" in html
        assert "<p>AP</p>" in html
        assert "<p>DX</p>" in html

    def test_it_shows_documents_with_open_link(self, staff_client, patient, report_pdf):
        document = make_document(patient, report_pdf)

        response = staff_client.get(change_url(patient))

        html = response.content.decode()
        assert "<p>Blood work</p>" in html
        assert f'href="/admin/documents/patientdocument/{document.pk}/file/"' in html

    def test_it_offers_upload_rows(self, staff_client, patient):
        response = staff_client.get(change_url(patient))

        html = response.content.decode()
        assert 'name="scans-2-0-file"' in html
        assert 'name="scans-2-0-confirm_patient_mismatch"' in html
        assert 'name="documents-2-0-file"' in html

    def test_it_hides_upload_rows_from_front_desk(self, group_client, patient):
        client = group_client("Front desk")

        response = client.get(change_url(patient))

        assert response.status_code == 200
        html = response.content.decode()
        assert 'name="scans-2-0-file"' not in html
        assert 'name="documents-2-0-file"' not in html
        assert 'name="name"' in html

    def test_it_deletes_a_scan_from_the_inline(
        self,
        staff_client,
        patient,
        chest_jpeg,
        local_storage,
        django_capture_on_commit_callbacks,
    ):
        scan = make_scan(patient, chest_jpeg)
        kept = make_scan(patient, chest_jpeg)

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                change_url(patient), page_data(patient, delete=[scan])
            )

        assert response.status_code == 302
        assert list(Scan.objects.all()) == [kept]
        assert sorted(stored_files(local_storage)) == sorted(kept.stored_names)


class TestUploadScanOnPatientPage:
    def post(self, client, patient, **scan_fields):
        return client.post(change_url(patient), page_data(patient, scans=[scan_fields]))

    def assert_nothing_stored(self, local_storage):
        assert Scan.objects.count() == 0
        assert stored_files(local_storage) == {}

    def test_it_uploads_a_dicom(
        self, staff_client, radiologist, chest_patient, chest_dicom, local_storage
    ):
        response = self.post(
            staff_client, chest_patient, file=upload("chest.dcm", chest_dicom)
        )

        assert response.status_code == 302
        scan = Scan.objects.get()
        assert scan.patient == chest_patient
        assert scan.body_part == "CHEST"
        assert scan.view_position == "PA"
        assert scan.modality == "CR"
        assert scan.dicom_patient_id == CHEST_MRN
        assert scan.sop_instance_uid
        assert scan.content_type == "application/dicom"
        assert scan.uploaded_by == radiologist
        assert not scan.patient_mismatch_confirmed
        files = stored_files(local_storage)
        assert sorted(files) == sorted(scan.stored_names)
        assert files[scan.file.name] == chest_dicom
        assert LogEntry.objects.get().change_message

    def test_it_uploads_a_jpeg(self, staff_client, patient, chest_jpeg, local_storage):
        response = self.post(
            staff_client,
            patient,
            file=upload("chest.jpg", chest_jpeg),
            body_part="chest",
            view_position="ap",
            modality="dx",
            scan_date="2024-03-09 10:30",
        )

        assert response.status_code == 302
        scan = Scan.objects.get()
        assert scan.body_part == "CHEST"
        assert scan.view_position == "AP"
        assert scan.scan_date == dt.datetime(2024, 3, 9, 10, 30, tzinfo=dt.UTC)
        assert stored_files(local_storage)[scan.file.name] == chest_jpeg

    def test_it_uploads_on_the_add_page(self, staff_client, chest_jpeg, local_storage):
        response = staff_client.post(
            ADD_URL,
            page_data(
                mrn="NEW1",
                name="New Patient",
                scans=[{"file": upload("c.jpg", chest_jpeg), "body_part": "CHEST"}],
            ),
        )

        assert response.status_code == 302
        scan = Scan.objects.get()
        assert scan.patient.mrn == "NEW1"
        assert sorted(stored_files(local_storage)) == sorted(scan.stored_names)

    def test_it_rejects_wrong_file_type(self, staff_client, patient, local_storage):
        response = self.post(
            staff_client,
            patient,
            file=upload("run.exe", b"MZ\x90\x00"),
            body_part="CHEST",
        )

        assert response.status_code == 200
        assert form_errors(response, "scans-2") == [
            {"file": ["Invalid file type 'exe'. Allowed: png, jpg, jpeg, dcm, dicom."]}
        ]
        self.assert_nothing_stored(local_storage)

    def test_it_rejects_content_mismatch(
        self, staff_client, patient, chest_jpeg, local_storage
    ):
        response = self.post(
            staff_client,
            patient,
            file=upload("chest.png", chest_jpeg),
            body_part="CHEST",
        )

        assert response.status_code == 200
        [errors] = form_errors(response, "scans-2")
        assert errors["file"] == [
            "The content of the file is not PNG, although its extension is 'png'. "
            "Allowed: png, jpg, jpeg, dcm, dicom."
        ]
        self.assert_nothing_stored(local_storage)

    def test_it_rejects_missing_body_part(
        self, staff_client, patient, chest_png, local_storage
    ):
        response = self.post(staff_client, patient, file=upload("chest.png", chest_png))

        assert response.status_code == 200
        [errors] = form_errors(response, "scans-2")
        assert errors["body_part"] == ["This field is required."]
        self.assert_nothing_stored(local_storage)

    def test_it_rejects_patient_mismatch_without_confirmation(
        self, staff_client, patient, chest_dicom, local_storage
    ):
        response = self.post(
            staff_client, patient, file=upload("chest.dcm", chest_dicom)
        )

        assert response.status_code == 200
        [errors] = form_errors(response, "scans-2")
        assert errors["confirm_patient_mismatch"] == [
            "The DICOM PatientID '9RG1' does not match the MRN 'MRN001'. Check "
            "that the file belongs to this patient, then tick this box to store it."
        ]
        self.assert_nothing_stored(local_storage)

    def test_it_stores_a_confirmed_patient_mismatch(
        self, staff_client, radiologist, patient, chest_dicom, local_storage
    ):
        response = self.post(
            staff_client,
            patient,
            file=upload("chest.dcm", chest_dicom),
            confirm_patient_mismatch="on",
        )

        assert response.status_code == 302
        scan = Scan.objects.get()
        assert scan.patient == patient
        assert scan.patient_mismatch_confirmed_by == radiologist
        assert scan.patient_mismatch_confirmed_at is not None
        assert sorted(stored_files(local_storage)) == sorted(scan.stored_names)

    def test_it_rejects_duplicate_sop_instance_uid(
        self, staff_client, chest_patient, chest_dicom, local_storage
    ):
        first = create_scan(chest_patient, upload("chest.dcm", chest_dicom))

        response = self.post(
            staff_client, chest_patient, file=upload("again.dcm", chest_dicom)
        )

        assert response.status_code == 200
        [errors] = form_errors(response, "scans-2")
        assert errors["file"] == [
            f"Scan {first.pk} of patient {chest_patient.pk} already has the SOP "
            f"Instance UID {first.sop_instance_uid}."
        ]
        assert list(Scan.objects.all()) == [first]
        assert sorted(stored_files(local_storage)) == sorted(first.stored_names)

    @override_settings(MAX_UPLOAD_SIZE=1000)
    def test_it_rejects_too_large_file(
        self, staff_client, patient, chest_jpeg, local_storage
    ):
        response = self.post(
            staff_client,
            patient,
            file=upload("chest.jpg", chest_jpeg),
            body_part="CHEST",
        )

        assert response.status_code == 200
        [errors] = form_errors(response, "scans-2")
        assert errors["file"] == [
            f"The file is {len(chest_jpeg)} bytes, larger than the maximum of "
            "1000 bytes."
        ]
        self.assert_nothing_stored(local_storage)

    def test_it_rolls_back_partial_uploads(
        self, staff_client, patient, chest_jpeg, local_storage
    ):
        response = staff_client.post(
            change_url(patient),
            page_data(
                patient,
                name="Changed Name",
                scans=[
                    {"file": upload("good.jpg", chest_jpeg), "body_part": "CHEST"},
                    {"file": upload("bad.exe", b"MZ"), "body_part": "CHEST"},
                ],
            ),
        )

        assert response.status_code == 200
        good, bad = form_errors(response, "scans-2")
        assert good == {}
        assert "file" in bad
        self.assert_nothing_stored(local_storage)
        patient.refresh_from_db()
        assert patient.name == "John Doe"
        assert LogEntry.objects.count() == 0

    def test_it_lets_radiologists_upload_without_changing_patients(
        self, group_client, patient, chest_jpeg, local_storage
    ):
        client = group_client("Radiologists")

        response = self.post(
            client,
            patient,
            file=upload("chest.jpg", chest_jpeg),
            body_part="CHEST",
        )
        changed = client.post(change_url(patient), page_data(patient, name="Other"))

        assert response.status_code == 302
        assert Scan.objects.get().patient == patient
        assert changed.status_code == 302
        patient.refresh_from_db()
        assert patient.name == "John Doe"

    def test_it_rejects_uploads_from_front_desk(
        self, group_client, patient, chest_jpeg, local_storage
    ):
        client = group_client("Front desk")

        response = self.post(
            client, patient, file=upload("chest.jpg", chest_jpeg), body_part="CHEST"
        )

        assert response.status_code == 302
        self.assert_nothing_stored(local_storage)


class TestUploadDocumentOnPatientPage:
    def post(self, client, patient, **document_fields):
        return client.post(
            change_url(patient), page_data(patient, documents=[document_fields])
        )

    def assert_nothing_stored(self, local_storage):
        assert PatientDocument.objects.count() == 0
        assert stored_files(local_storage) == {}

    def test_it_uploads_a_pdf(
        self, staff_client, radiologist, patient, report_pdf, local_storage
    ):
        response = self.post(
            staff_client,
            patient,
            file=upload("lab.pdf", report_pdf),
            document_name="Blood work",
            document_type="lab",
        )

        assert response.status_code == 302
        document = PatientDocument.objects.get()
        assert document.patient == patient
        assert document.document_name == "Blood work"
        assert document.document_type == "LAB"
        assert document.uploaded_by == radiologist
        assert stored_files(local_storage) == {document.file.name: report_pdf}

    def test_it_rejects_wrong_file_type(
        self, staff_client, patient, report_pdf, local_storage
    ):
        response = self.post(
            staff_client,
            patient,
            file=upload("lab.docx", report_pdf),
            document_name="Blood work",
        )

        assert response.status_code == 200
        [errors] = form_errors(response, "documents-2")
        assert errors["file"] == ["Invalid file type 'docx'. Allowed: pdf."]
        self.assert_nothing_stored(local_storage)

    def test_it_rejects_content_mismatch(
        self, staff_client, patient, chest_png, local_storage
    ):
        response = self.post(
            staff_client,
            patient,
            file=upload("lab.pdf", chest_png),
            document_name="Blood work",
        )

        assert response.status_code == 200
        [errors] = form_errors(response, "documents-2")
        assert errors["file"] == [
            "The content of the file is not PDF, although its extension is 'pdf'. "
            "Allowed: pdf."
        ]
        self.assert_nothing_stored(local_storage)

    @override_settings(MAX_UPLOAD_SIZE=100)
    def test_it_rejects_too_large_file(
        self, staff_client, patient, report_pdf, local_storage
    ):
        response = self.post(
            staff_client,
            patient,
            file=upload("lab.pdf", report_pdf),
            document_name="Blood work",
        )

        assert response.status_code == 200
        [errors] = form_errors(response, "documents-2")
        assert errors["file"] == [
            f"The file is {len(report_pdf)} bytes, larger than the maximum of "
            "100 bytes."
        ]
        self.assert_nothing_stored(local_storage)

    def test_it_requires_document_name(
        self, staff_client, patient, report_pdf, local_storage
    ):
        response = self.post(staff_client, patient, file=upload("lab.pdf", report_pdf))

        assert response.status_code == 200
        [errors] = form_errors(response, "documents-2")
        assert errors["document_name"] == ["This field is required."]
        self.assert_nothing_stored(local_storage)


class TestDeletePatient:
    @pytest.fixture
    def files_of_two_patients(self, patient, chest_jpeg, report_pdf):
        other = Patient.objects.create(mrn="OTHER9", name="Mary Major")
        kept = Patient.objects.create(mrn="KEPT1", name="Kept Patient")
        for owner in (patient, other, kept):
            make_scan(owner, chest_jpeg)
            make_document(owner, report_pdf)
        return patient, other, kept

    def test_it_deletes_stored_files(
        self,
        staff_client,
        files_of_two_patients,
        local_storage,
        django_capture_on_commit_callbacks,
    ):
        patient, other, kept = files_of_two_patients

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                f"/admin/patients/patient/{patient.pk}/delete/", {"post": "yes"}
            )

        assert response.status_code == 302
        assert set(Patient.objects.values_list("mrn", flat=True)) == {
            "OTHER9",
            "KEPT1",
        }
        assert Scan.objects.filter(patient_id=patient.pk).count() == 0
        assert PatientDocument.objects.filter(patient_id=patient.pk).count() == 0
        remaining = [
            name
            for row in [*Scan.objects.all(), *PatientDocument.objects.all()]
            for name in row.stored_names
        ]
        assert sorted(stored_files(local_storage)) == sorted(remaining)

    def test_it_bulk_deletes_stored_files(
        self,
        staff_client,
        files_of_two_patients,
        local_storage,
        django_capture_on_commit_callbacks,
    ):
        patient, other, kept = files_of_two_patients

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                LIST_URL,
                {
                    "action": "delete_selected",
                    "_selected_action": [patient.pk, other.pk],
                    "post": "yes",
                },
            )

        assert response.status_code == 302
        assert list(Patient.objects.all()) == [kept]
        scan = Scan.objects.get()
        document = PatientDocument.objects.get()
        assert scan.patient == kept
        assert document.patient == kept
        assert sorted(stored_files(local_storage)) == sorted(
            scan.stored_names + document.stored_names
        )
