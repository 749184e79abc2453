import io
from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from conftest import upload
from copilot.models import AppendOnlyError, AuditEntry
from patients.models import Patient

NAME = "Ada Quillfeather"
MRN = "MRN-QF-2024"


def rows(**filters):
    """Return the audit trail as (action, type, object id, patient id, outcome)."""
    return [
        (e.action, e.object_type, e.object_id, e.patient_id, e.outcome)
        for e in AuditEntry.objects.filter(**filters).order_by("id")
    ]


def last_id():
    """Return the id of the newest entry, to look only at those after it."""
    return AuditEntry.objects.aggregate(last=Max("id"))["last"] or 0


def entry_text(entry):
    return " ".join(str(value) for value in entry.__dict__.values())


def upload_scan(api, patient_id, data):
    return api.post(
        f"/patients/{patient_id}/upload/scan",
        {"file": upload("chest.jpg", data, "image/jpeg"), "body_part": "CHEST"},
        format="multipart",
    )


def upload_document(api, patient_id, data):
    return api.post(
        f"/patients/{patient_id}/upload/document",
        {"file": upload("labs.pdf", data, "application/pdf"), "document_name": "Labs"},
        format="multipart",
    )


@pytest.mark.django_db
class TestAuditSession:
    def test_it_records_every_read_and_change(
        self, api, radiologist, chest_jpeg, report_pdf
    ):
        created = api.post(
            "/patients", {"mrn": MRN, "name": NAME, "age": 36}, format="json"
        )
        pid = created.json()["id"]
        scan = upload_scan(api, pid, chest_jpeg).json()["scan"]
        document = upload_document(api, pid, report_pdf).json()["document"]
        sid, did = str(scan["id"]), str(document["id"])

        api.get("/patients")
        api.get(f"/patients/{pid}")
        api.get(f"/scans?patient={pid}")
        api.get(f"/scans/{sid}")
        api.get(f"/documents/{did}")
        assert api.get(urlsplit(scan["file_url"]).path).status_code == 200
        api.patch(f"/patients/{pid}", {"age": 37}, format="json")
        api.delete(f"/scans/{sid}")

        patient, scans, documents = (
            "patients.patient",
            "scans.scan",
            "documents.patientdocument",
        )
        assert rows() == [
            ("create", patient, str(pid), pid, "success"),
            ("create", scans, sid, pid, "success"),
            ("create", documents, did, pid, "success"),
            ("list", patient, str(pid), pid, "success"),
            ("read", patient, str(pid), pid, "success"),
            ("list", scans, sid, pid, "success"),
            ("read", scans, sid, pid, "success"),
            ("read", documents, did, pid, "success"),
            ("read", scans, sid, pid, "success"),
            ("update", patient, str(pid), pid, "success"),
            ("delete", scans, sid, pid, "success"),
        ]
        entries = list(AuditEntry.objects.order_by("id"))
        assert {e.user_id for e in entries} == {radiologist.pk}
        assert {e.username for e in entries} == {"radiologist"}
        assert {e.client_address for e in entries} == {"127.0.0.1"}
        assert entries[0].route == "POST /patients"
        assert entries[1].route == f"POST /patients/{pid}/upload/scan"
        assert entries[3].route == "GET /patients"
        assert entries[5].route == "GET /scans"
        assert entries[8].route.startswith("GET /media/xrays/")
        assert entries[9].route == f"PATCH /patients/{pid}"
        assert entries[10].route == f"DELETE /scans/{sid}"
        assert all(len(e.request_id) == 32 for e in entries)
        for entry in entries:
            assert NAME.lower() not in entry_text(entry).lower()
            assert MRN.lower() not in entry_text(entry).lower()


@pytest.mark.django_db
class TestAuditReads:
    def test_it_records_each_listed_patient(self, api, patient):
        other = Patient.objects.create(mrn="MRN002", name="Jane Roe")
        since = last_id()

        api.get("/patients")

        assert rows(id__gt=since) == [
            ("list", "patients.patient", str(other.pk), other.pk, "success"),
            ("list", "patients.patient", str(patient.pk), patient.pk, "success"),
        ]

    def test_it_records_an_empty_list(self, api):
        since = last_id()
        api.get("/patients?search=nobody")

        assert rows(id__gt=since) == [("list", "patients.patient", "", None, "success")]
        assert AuditEntry.objects.get(id__gt=since).route == "GET /patients"

    def test_it_records_a_read_of_an_unknown_object(self, api):
        since = last_id()
        api.get("/scans/999")

        assert rows(id__gt=since) == [("read", "scans.scan", "999", None, "not_found")]

    def test_it_records_a_denied_read(self, api, radiologist, patient):
        since = last_id()
        radiologist.groups.clear()

        response = api.get(f"/patients/{patient.pk}")

        assert response.status_code == 403
        assert rows(id__gt=since) == [
            ("read", "patients.patient", str(patient.pk), patient.pk, "denied")
        ]

    def test_it_records_an_unauthenticated_read(self, anonymous, patient):
        since = last_id()
        anonymous.get(f"/patients/{patient.pk}")

        entry = AuditEntry.objects.get(id__gt=since)
        assert entry.outcome == "unauthenticated"
        assert entry.user_id is None

    def test_it_records_a_nul_in_the_path(self, anonymous):
        since = last_id()
        response = anonymous.get("/patients/1%00")

        assert response.status_code == 401
        assert rows(id__gt=since) == [
            ("read", "patients.patient", "1\ufffd", None, "unauthenticated")
        ]
        assert AuditEntry.objects.get(id__gt=since).route == "GET /patients/1\ufffd"

    def test_it_drops_an_ipv6_zone(self, api, patient):
        since = last_id()
        response = api.get("/patients", REMOTE_ADDR="fe80::1%eth0")

        assert response.status_code == 200
        assert AuditEntry.objects.get(id__gt=since).client_address == "fe80::1"

    def test_it_records_a_read_of_a_missing_file(self, api):
        since = last_id()
        response = api.get("/media/xrays/none.png")

        assert response.status_code == 404
        assert rows(id__gt=since) == [("read", "scans.scan", "", None, "not_found")]

    def test_it_ignores_requests_about_no_patient(self, api, anonymous):
        since = last_id()
        api.get("/")
        anonymous.get("/health")

        assert rows(id__gt=since) == []


@pytest.mark.django_db
class TestAuditFailedChanges:
    def test_it_records_a_failed_upload(self, api, patient):
        since = last_id()
        response = api.post(
            f"/patients/{patient.pk}/upload/scan",
            {"file": upload("virus.exe", b"MZ..."), "body_part": "CHEST"},
            format="multipart",
        )

        assert response.status_code == 400
        assert rows(id__gt=since) == [
            ("create", "scans.scan", "", patient.pk, "invalid")
        ]

    def test_it_records_an_upload_to_an_unknown_patient(self, api, report_pdf):
        since = last_id()
        upload_document(api, 999, report_pdf)

        assert rows(id__gt=since) == [
            ("create", "documents.patientdocument", "", 999, "not_found")
        ]

    def test_it_records_upload_to_huge_id(self, api, report_pdf):
        since = last_id()
        response = upload_document(api, 2**80, report_pdf)

        assert response.status_code == 404
        assert rows(id__gt=since) == [
            ("create", "documents.patientdocument", "", None, "not_found")
        ]

    def test_it_records_a_conflicting_change(self, api, patient):
        since = last_id()
        other = Patient.objects.create(mrn="MRN002", name="Jane Roe")

        api.patch(f"/patients/{other.pk}", {"mrn": "MRN001"}, format="json")

        assert rows(id__gt=since, action="update") == [
            ("update", "patients.patient", str(other.pk), other.pk, "conflict")
        ]

    def test_it_records_cascaded_deletes(self, api, patient, chest_jpeg):
        since = last_id()
        scan = upload_scan(api, patient.pk, chest_jpeg).json()["scan"]

        api.delete(f"/patients/{patient.pk}")

        assert sorted(rows(id__gt=since, action="delete")) == sorted(
            [
                ("delete", "scans.scan", str(scan["id"]), patient.pk, "success"),
                ("delete", "patients.patient", str(patient.pk), patient.pk, "success"),
            ]
        )

    def test_it_records_changes_outside_requests(self, patient):
        since = last_id()
        patient.age = 50
        patient.save()

        entry = AuditEntry.objects.get(id__gt=since, action="update")
        assert (entry.user_id, entry.route, entry.client_address) == (None, "", None)


@pytest.mark.django_db
class TestAuditAdmin:
    def test_it_records_each_patient_of_a_change_list(self, admin_client, patient):
        since = last_id()
        response = admin_client.get("/admin/patients/patient/")

        assert response.status_code == 200
        assert rows(id__gt=since) == [
            ("list", "patients.patient", str(patient.pk), patient.pk, "success")
        ]
        assert AuditEntry.objects.get(id__gt=since).username == "admin"

    def test_it_records_a_change_page_as_a_read(self, admin_client, patient):
        since = last_id()
        admin_client.get(f"/admin/patients/patient/{patient.pk}/change/")

        assert rows(id__gt=since) == [
            ("read", "patients.patient", str(patient.pk), patient.pk, "success")
        ]

    def test_it_records_an_unknown_object_as_not_found(self, admin_client, patient):
        since = last_id()
        response = admin_client.get(f"/admin/patients/patient/{patient.pk + 1}/change/")

        assert response.status_code == 302
        assert rows(id__gt=since) == [
            (
                "read",
                "patients.patient",
                str(patient.pk + 1),
                patient.pk + 1,
                "not_found",
            )
        ]

    def test_it_records_a_delete(self, admin_client, patient):
        since = last_id()
        admin_client.post(
            f"/admin/patients/patient/{patient.pk}/delete/", {"post": "yes"}
        )

        assert rows(id__gt=since) == [
            ("delete", "patients.patient", str(patient.pk), patient.pk, "success")
        ]
        assert AuditEntry.objects.get(id__gt=since).route == (
            f"POST /admin/patients/patient/{patient.pk}/delete/"
        )

    def test_it_records_a_failed_login(self, client, admin_user):
        since = last_id()
        client.post("/admin/login/", {"username": "admin", "password": "wrong"})

        entry = AuditEntry.objects.get(id__gt=since)
        assert (entry.action, entry.outcome, entry.username) == (
            "login_failed",
            "failed",
            "admin",
        )
        assert entry.route == "POST /admin/login/"

    def test_it_records_a_login(self, client, admin_user):
        since = last_id()
        client.post("/admin/login/", {"username": "admin", "password": "password"})

        entry = AuditEntry.objects.get(id__gt=since)
        assert (entry.action, entry.user_id) == ("login", admin_user.pk)


@pytest.mark.django_db
class TestAuditEntryAdmin:
    def test_it_lists_entries(self, admin_client, patient):
        patient.save()

        response = admin_client.get("/admin/copilot/auditentry/")

        assert response.status_code == 200
        newest = response.context["cl"].result_list[0]
        assert (newest.action, newest.patient_id) == ("update", patient.pk)

    def test_it_filters_by_patient(self, admin_client, patient):
        other = Patient.objects.create(mrn="MRN002", name="Jane Roe")

        response = admin_client.get(f"/admin/copilot/auditentry/?patient_id={other.pk}")

        listed = response.context["cl"].result_list
        assert [e.patient_id for e in listed] == [other.pk]

    def test_it_filters_by_user_action_and_date(self, admin_client, admin_user):
        # The admin's date filter sends an aware start of the day.
        today = quote(timezone.now().replace(hour=0, minute=0, second=0).isoformat())
        AuditEntry.objects.create(action="read", outcome="success", user_id=1)
        AuditEntry.objects.create(action="list", outcome="success", user_id=2)

        response = admin_client.get(
            f"/admin/copilot/auditentry/?user_id=1&action=read&created_at__gte={today}"
        )

        listed = response.context["cl"].result_list
        assert [(e.user_id, e.action) for e in listed] == [(1, "read")]

    def test_it_refuses_adding(self, admin_client):
        assert admin_client.get("/admin/copilot/auditentry/add/").status_code == 403

    def test_it_refuses_deleting(self, admin_client):
        entry = AuditEntry.objects.create(action="read", outcome="success")

        response = admin_client.post(
            f"/admin/copilot/auditentry/{entry.pk}/delete/", {"post": "yes"}
        )

        assert response.status_code == 403
        assert AuditEntry.objects.filter(pk=entry.pk).exists()

    def test_it_shows_entries_read_only(self, admin_client):
        entry = AuditEntry.objects.create(action="read", outcome="success")

        response = admin_client.post(
            f"/admin/copilot/auditentry/{entry.pk}/change/", {"action": "delete"}
        )

        assert response.status_code == 403
        entry = AuditEntry.objects.get(pk=entry.pk)
        assert entry.action == "read"


@pytest.mark.django_db
class TestAuditEntry:
    def make(self):
        return AuditEntry.objects.create(action="read", outcome="success")

    def test_it_refuses_a_change(self):
        entry = self.make()
        entry.outcome = "denied"

        with pytest.raises(AppendOnlyError):
            entry.save()

    def test_it_refuses_a_delete(self):
        with pytest.raises(AppendOnlyError):
            self.make().delete()

    def test_it_refuses_a_queryset_update(self):
        self.make()

        with pytest.raises(AppendOnlyError):
            AuditEntry.objects.update(outcome="denied")

    def test_it_refuses_a_queryset_delete(self):
        self.make()

        with pytest.raises(AppendOnlyError):
            AuditEntry.objects.all().delete()

        assert AuditEntry.objects.count() == 1

    @pytest.mark.parametrize(
        "sql",
        ["UPDATE audit_entries SET outcome = 'denied'", "DELETE FROM audit_entries"],
    )
    def test_it_rejects_sql_changes_on_postgresql(self, sql):
        if connection.vendor != "postgresql":
            pytest.skip("the trigger exists on PostgreSQL only")
        self.make()

        with pytest.raises(DatabaseError, match="append-only"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql)

        assert rows() == [("read", "", "", None, "success")]


@pytest.mark.django_db
class TestPruneAudit:
    def make(self, days_ago):
        created_at = timezone.now() - timedelta(days=days_ago)
        return AuditEntry.objects.create(
            action="read", outcome="success", created_at=created_at
        )

    def test_it_deletes_entries_older_than_the_retention(self, settings):
        settings.AUDIT_RETENTION_DAYS = 30
        self.make(40)
        kept = self.make(10)

        call_command("prune_audit", stdout=io.StringIO())

        assert list(AuditEntry.objects.values_list("pk", flat=True)) == [kept.pk]

    def test_it_takes_days(self):
        self.make(5)
        kept = self.make(1)

        call_command("prune_audit", "--days", "3", stdout=io.StringIO())

        assert list(AuditEntry.objects.values_list("pk", flat=True)) == [kept.pk]

    def test_it_keeps_everything_with_zero_days(self, settings):
        settings.AUDIT_RETENTION_DAYS = 0
        self.make(4000)

        call_command("prune_audit", stdout=io.StringIO())

        assert AuditEntry.objects.count() == 1

    def test_it_rejects_negative_days(self):
        with pytest.raises(CommandError, match="--days must be 0 or more"):
            call_command("prune_audit", "--days", "-1")
