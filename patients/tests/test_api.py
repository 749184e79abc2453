import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.exceptions import NotFound

from conftest import stored_files, upload
from copilot.models import AuditEntry
from documents.models import PatientDocument
from patients.models import Patient
from patients.services import delete_patient
from scans.models import Scan

pytestmark = pytest.mark.django_db


class TestCreatePatient:
    def post(self, api, data, format=None):
        return api.post("/patients", data, format=format)

    def test_it_accepts_form_fields(self, api):
        response = self.post(
            api, {"mrn": "MRN001", "name": "John Doe", "age": "45", "gender": "Male"}
        )

        assert response.status_code == 201
        body = response.json()
        assert body["mrn"] == "MRN001"
        assert body["name"] == "John Doe"
        assert body["age"] == 45
        assert body["gender"] == "Male"
        assert set(body) == {"id", "mrn", "name", "age", "gender", "created_at"}
        patient = Patient.objects.get()
        assert patient.pk == body["id"]
        assert patient.age == 45

    def test_it_accepts_json(self, api):
        response = self.post(api, {"mrn": "MRN002", "name": "Jane Roe"}, "json")

        assert response.status_code == 201
        assert Patient.objects.get().mrn == "MRN002"

    def test_it_accepts_trailing_slash(self, api):
        response = api.post("/patients/", {"mrn": "MRN003", "name": "A"})

        assert response.status_code == 201

    def test_it_rejects_duplicate_mrn(self, api, patient):
        response = self.post(api, {"mrn": patient.mrn, "name": "Someone Else"})

        assert response.status_code == 409
        assert "MRN001" in response.json()["detail"]
        assert Patient.objects.count() == 1

    def test_it_rejects_missing_mrn(self, api):
        response = self.post(api, {"name": "John Doe"})

        assert response.status_code == 400
        assert "mrn" in response.json()
        assert not Patient.objects.exists()

    def test_it_rejects_blank_name(self, api):
        response = self.post(api, {"mrn": "MRN004", "name": "   "})

        assert response.status_code == 400
        assert "name" in response.json()

    def test_it_rejects_non_integer_age(self, api):
        response = self.post(api, {"mrn": "MRN005", "name": "A", "age": "forty"})

        assert response.status_code == 400
        assert "age" in response.json()
        assert not Patient.objects.exists()

    @pytest.mark.parametrize("age", ["-1", "151"])
    def test_it_rejects_out_of_range_age(self, api, age):
        response = self.post(api, {"mrn": "MRN006", "name": "A", "age": age})

        assert response.status_code == 400
        assert "age" in response.json()
        assert not Patient.objects.exists()

    def test_it_rejects_long_mrn(self, api):
        response = self.post(api, {"mrn": "M" * 51, "name": "A"})

        assert response.status_code == 400
        assert "mrn" in response.json()

    def test_it_requires_authentication(self, anonymous):
        response = self.post(anonymous, {"mrn": "MRN007", "name": "A"})

        assert response.status_code == 401
        assert not Patient.objects.exists()

    def test_it_requires_add_permission(self, api, radiologist):
        radiologist.groups.clear()

        response = self.post(api, {"mrn": "MRN008", "name": "A"})

        assert response.status_code == 403
        assert not Patient.objects.exists()


class TestListPatients:
    def make_patients(self, count, start=0):
        return Patient.objects.bulk_create(
            Patient(mrn=f"MRN{i:04d}", name=f"Patient {i}")
            for i in range(start, start + count)
        )

    def test_it_paginates(self, api):
        self.make_patients(3)

        response = api.get("/patients?page_size=2")

        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 3
        assert len(body["results"]) == 2
        assert body["next"].startswith("http://testserver/patients")
        assert body["previous"] is None

    def test_it_counts_scans_and_documents(self, api, patient):
        Scan.objects.create(patient=patient, file="xrays/a.png", body_part="CHEST")
        Scan.objects.create(patient=patient, file="xrays/b.png", body_part="HAND")
        PatientDocument.objects.create(
            patient=patient, document_name="Lab", file="reports/c.pdf"
        )

        response = api.get("/patients")

        result = response.json()["results"][0]
        assert result["scans_count"] == 2
        assert result["documents_count"] == 1

    def test_it_uses_the_same_queries_for_more_patients(self, api):
        self.make_patients(2)
        with CaptureQueriesContext(connection) as few:
            api.get("/patients")
        self.make_patients(40, start=2)
        with CaptureQueriesContext(connection) as many:
            api.get("/patients")

        assert len(many) == len(few)

    def test_it_searches_mrn(self, api, patient):
        Patient.objects.create(mrn="OTHER9", name="Mary Major")

        response = api.get("/patients?search=mrn001")

        results = response.json()["results"]
        assert [result["mrn"] for result in results] == ["MRN001"]

    def test_it_searches_name(self, api, patient):
        Patient.objects.create(mrn="OTHER9", name="Mary Major")

        response = api.get("/patients?search=major")

        results = response.json()["results"]
        assert [result["name"] for result in results] == ["Mary Major"]

    def test_it_requires_authentication(self, anonymous, patient):
        response = anonymous.get("/patients")

        assert response.status_code == 401
        assert "John" not in response.content.decode()

    def test_it_requires_view_permission(self, api, radiologist, patient):
        radiologist.groups.clear()

        response = api.get("/patients")

        assert response.status_code == 403


class TestGetPatient:
    def test_it_returns_scans_and_documents(self, api, patient):
        scan = Scan.objects.create(
            patient=patient, file="xrays/a.png", body_part="CHEST"
        )
        document = PatientDocument.objects.create(
            patient=patient,
            document_name="Blood Work 2023",
            document_type="LAB",
            file="reports/c.pdf",
        )

        response = api.get(f"/patients/{patient.pk}")

        assert response.status_code == 200
        body = response.json()
        assert body["id"] == patient.pk
        assert body["mrn"] == "MRN001"
        assert body["name"] == "John Doe"
        assert body["age"] == 45
        assert body["gender"] == "Male"
        assert "created_at" in body
        assert body["scans"][0]["id"] == scan.pk
        assert body["scans"][0]["file_url"] == "http://testserver/media/xrays/a.png"
        assert body["scans"][0]["body_part"] == "CHEST"
        assert body["scans"][0]["view_position"] == "PA"
        assert body["scans"][0]["modality"] == "DX"
        assert body["documents"][0]["id"] == document.pk
        assert body["documents"][0]["document_name"] == "Blood Work 2023"
        assert body["documents"][0]["document_type"] == "LAB"
        assert (
            body["documents"][0]["file_url"] == "http://testserver/media/reports/c.pdf"
        )

    def test_it_uses_few_queries(self, api, patient):
        for index in range(5):
            Scan.objects.create(
                patient=patient, file=f"xrays/{index}.png", body_part="CHEST"
            )

        with CaptureQueriesContext(connection) as queries:
            api.get(f"/patients/{patient.pk}")

        # Token with user and permissions, the patient, its scans, its
        # documents, and the audit entry of the read.
        assert len(queries) <= 5

    def test_it_hides_records_without_view_permission(self, api, radiologist, patient):
        Scan.objects.create(patient=patient, file="xrays/a.png", body_part="CHEST")
        PatientDocument.objects.create(
            patient=patient, document_name="Lab", file="reports/c.pdf"
        )
        radiologist.groups.clear()
        radiologist.user_permissions.add(
            Permission.objects.get(codename="view_patient")
        )

        response = api.get(f"/patients/{patient.pk}")

        assert response.status_code == 200
        assert response.json()["scans"] == []
        assert response.json()["documents"] == []

    def test_it_handles_unknown_patient(self, api):
        response = api.get("/patients/7")

        assert response.status_code == 404
        assert response.json()["detail"] == "Patient 7 not found"


class TestUpdatePatient:
    def test_it_updates_fields(self, api, patient):
        response = api.patch(f"/patients/{patient.pk}", {"age": 46}, format="json")

        assert response.status_code == 200
        assert response.json()["age"] == 46
        patient.refresh_from_db()
        assert patient.age == 46

    def test_it_rejects_taken_mrn(self, api, patient):
        other = Patient.objects.create(mrn="MRN002", name="Jane Roe")

        response = api.patch(f"/patients/{other.pk}", {"mrn": "MRN001"}, format="json")

        assert response.status_code == 409
        other.refresh_from_db()
        assert other.mrn == "MRN002"

    def test_it_rejects_invalid_age(self, api, patient):
        response = api.patch(f"/patients/{patient.pk}", {"age": 200}, format="json")

        assert response.status_code == 400
        patient.refresh_from_db()
        assert patient.age == 45

    def test_it_rejects_put(self, api, patient):
        response = api.put(f"/patients/{patient.pk}", {"name": "X"}, format="json")

        assert response.status_code == 405


class TestDeletePatient:
    # Files are deleted after the commit, so these tests need real transactions.
    @pytest.mark.django_db(transaction=True)
    def test_it_deletes_patient_with_files(
        self, api, patient, chest_jpeg, report_pdf, local_storage
    ):
        scan_response = api.post(
            f"/patients/{patient.pk}/upload/scan",
            {"file": upload("chest.jpg", chest_jpeg), "body_part": "CHEST"},
        )
        document_response = api.post(
            f"/patients/{patient.pk}/upload/document",
            {"file": upload("lab.pdf", report_pdf), "document_name": "Lab"},
        )
        assert scan_response.status_code == 201
        assert document_response.status_code == 201
        assert stored_files(local_storage)

        response = api.delete(f"/patients/{patient.pk}")

        assert response.status_code == 200
        assert response.json() == {
            "message": f"Patient {patient.pk} deleted successfully"
        }
        assert not Patient.objects.exists()
        assert not Scan.objects.exists()
        assert not PatientDocument.objects.exists()
        assert stored_files(local_storage) == {}

    def test_it_rejects_a_patient_deleted_meanwhile(self, radiologist, patient):
        # The row that a second request looked up before the first deleted it.
        stale = Patient.objects.get(pk=patient.pk)
        Patient.objects.filter(pk=patient.pk).delete()
        deletes = AuditEntry.objects.filter(action="delete").count()

        with pytest.raises(NotFound) as raised:
            delete_patient(stale, radiologist)

        assert str(raised.value.detail) == f"Patient {patient.pk} not found"
        assert AuditEntry.objects.filter(action="delete").count() == deletes

    def test_it_handles_unknown_patient(self, api):
        response = api.delete("/patients/7")

        assert response.status_code == 404
        assert response.json()["detail"] == "Patient 7 not found"

    def test_it_requires_delete_permission(self, api, radiologist, patient):
        radiologist.groups.clear()

        response = api.delete(f"/patients/{patient.pk}")

        assert response.status_code == 403
        assert Patient.objects.filter(pk=patient.pk).exists()

    def test_it_requires_delete_permission_for_scans(
        self, api, radiologist, patient, chest_jpeg, report_pdf, local_storage
    ):
        api.post(
            f"/patients/{patient.pk}/upload/scan",
            {"file": upload("chest.jpg", chest_jpeg), "body_part": "CHEST"},
        )
        api.post(
            f"/patients/{patient.pk}/upload/document",
            {"file": upload("lab.pdf", report_pdf), "document_name": "Lab"},
        )
        files = stored_files(local_storage)
        radiologist.groups.clear()
        radiologist.user_permissions.add(
            Permission.objects.get(codename="delete_patient"),
            Permission.objects.get(codename="delete_patientdocument"),
        )

        response = api.delete(f"/patients/{patient.pk}")

        assert response.status_code == 403
        assert response.json() == {
            "detail": f"Deleting patient {patient.pk} deletes its scans, which "
            "you do not have permission to delete."
        }
        assert Patient.objects.filter(pk=patient.pk).exists()
        assert Scan.objects.count() == 1
        assert PatientDocument.objects.count() == 1
        assert stored_files(local_storage) == files

    def test_it_requires_delete_permission_for_documents(
        self, api, radiologist, patient, report_pdf
    ):
        api.post(
            f"/patients/{patient.pk}/upload/document",
            {"file": upload("lab.pdf", report_pdf), "document_name": "Lab"},
        )
        radiologist.groups.clear()
        radiologist.user_permissions.add(
            Permission.objects.get(codename="delete_patient")
        )

        response = api.delete(f"/patients/{patient.pk}")

        assert response.status_code == 403
        assert response.json() == {
            "detail": f"Deleting patient {patient.pk} deletes its documents, which "
            "you do not have permission to delete."
        }
        assert PatientDocument.objects.count() == 1

    def test_it_deletes_a_patient_without_files(self, api, radiologist, patient):
        radiologist.groups.clear()
        radiologist.user_permissions.add(
            Permission.objects.get(codename="delete_patient")
        )

        response = api.delete(f"/patients/{patient.pk}")

        assert response.status_code == 200
        assert not Patient.objects.exists()
