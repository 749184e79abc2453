"""Sixteen clients at once against a live server on PostgreSQL.

Each client is a thread with its own requests.Session. The runs are bounded in
both operations and seconds, and afterwards the rows and the stored files are
compared with the responses the clients received.
"""

import io
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.contrib import admin
from django.db import connection
from django.db.models.signals import pre_delete

from conftest import make_pdf, sha256, stored_files, upload
from copilot.models import AuditEntry, PendingFileDeletion
from documents.models import PatientDocument
from patients.admin import PatientAdmin
from patients.models import Patient
from scans.admin import ScanAdmin
from scans.models import Scan
from scans.services import create_scan

pytestmark = pytest.mark.live

CLIENTS = 16
SECONDS = 4
MAX_OPERATIONS = 30  # per client
TIMEOUT = 30  # seconds for one request


@pytest.fixture
def postgresql(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip(
            "Concurrent writes need PostgreSQL: SQLite allows one writer at a "
            "time. Set DATABASE_URL to a PostgreSQL database."
        )


@pytest.fixture
def small_png(chest_image):
    image = chest_image.copy()
    image.thumbnail((96, 96))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def session(token):
    client = requests.Session()
    client.headers["Authorization"] = f"Token {token}"
    return client


def run_clients(work):
    """Run work(number) in CLIENTS threads started together and return the results."""
    barrier = threading.Barrier(CLIENTS, timeout=TIMEOUT)

    def start(number):
        barrier.wait()
        return work(number)

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(start, range(CLIENTS)))


class TestConcurrentPatientCreate:
    def test_it_creates_one_patient_per_mrn(self, postgresql, live_server, token):
        def create(number):
            response = session(token).post(
                f"{live_server.url}/patients/",
                json={"mrn": "RACE-1", "name": f"Client {number}"},
                timeout=TIMEOUT,
            )
            return response.status_code, response.json()

        results = run_clients(create)

        codes = sorted(code for code, _ in results)
        assert codes == [201] + [409] * (CLIENTS - 1)
        assert Patient.objects.filter(mrn="RACE-1").count() == 1
        created = next(body for code, body in results if code == 201)
        assert Patient.objects.get(mrn="RACE-1").pk == created["id"]
        for code, body in results:
            if code == 409:
                assert body == {"detail": "A patient with MRN 'RACE-1' already exists."}


class Client:
    """One client's mixed workload, and the rows the server stored for it."""

    def __init__(self, base_url, token, number, png, pdf):
        self.base_url = base_url
        self.http = session(token)
        self.number = number
        self.png = png
        self.pdf = pdf
        self.random = random.Random(number)
        self.patients = []
        # id: (patient id, sha256) of the rows this client stored and kept.
        self.scans = {}
        self.documents = {}
        self.errors = []
        self.operations = 0

    def run(self, deadline):
        self.create_patient()
        while self.operations < MAX_OPERATIONS and time.monotonic() < deadline:
            choice = self.random.choice(
                [
                    self.create_patient,
                    self.upload_scan,
                    self.upload_document,
                    self.read,
                    self.read,
                    self.delete,
                ]
            )
            choice()
        return self

    def call(self, method, path, expected, **kwargs):
        self.operations += 1
        response = self.http.request(
            method, f"{self.base_url}{path}", timeout=TIMEOUT, **kwargs
        )
        if response.status_code not in expected:
            self.errors.append(
                f"{method} {path}: {response.status_code} {response.text[:200]}"
            )
            return None
        return response.json()

    def create_patient(self):
        mrn = f"C{self.number}-{len(self.patients)}"
        body = self.call("POST", "/patients/", {201}, json={"mrn": mrn, "name": mrn})
        if body:
            self.patients.append(body["id"])

    def upload_scan(self):
        patient = self.random.choice(self.patients)
        body = self.call(
            "POST",
            f"/patients/{patient}/upload/scan",
            {201},
            data={"body_part": "CHEST"},
            files={"file": ("chest.png", self.png, "image/png")},
        )
        if body:
            self.scans[body["scan"]["id"]] = (patient, body["scan"]["sha256"])

    def upload_document(self):
        patient = self.random.choice(self.patients)
        body = self.call(
            "POST",
            f"/patients/{patient}/upload/document",
            {201},
            data={"document_name": "Labs"},
            files={"file": ("labs.pdf", self.pdf, "application/pdf")},
        )
        if body:
            self.documents[body["document"]["id"]] = (
                patient,
                body["document"]["sha256"],
            )

    def read(self):
        patient = self.random.choice(self.patients)
        body = self.call("GET", f"/patients/{patient}/", {200})
        if body:
            # Only this client writes to its patients, so it can predict their rows.
            for kind, rows in (("scans", self.scans), ("documents", self.documents)):
                expected = {pk for pk, (owner, _) in rows.items() if owner == patient}
                listed = {row["id"] for row in body[kind]}
                if listed != expected:
                    self.errors.append(f"patient {patient} {kind} {listed}")
        self.call("GET", "/scans/?page_size=5", {200})

    def delete(self):
        kind, rows = self.random.choice(
            [("scans", self.scans), ("documents", self.documents)]
        )
        if rows:
            pk = self.random.choice(sorted(rows))
            if self.call("DELETE", f"/{kind}/{pk}/", {200}):
                del rows[pk]


class TestConcurrentMixedLoad:
    def test_it_keeps_rows_and_files_consistent(
        self, postgresql, live_server, token, small_png, local_storage
    ):
        pdf = make_pdf()
        deadline = time.monotonic() + SECONDS

        clients = run_clients(
            lambda number: Client(live_server.url, token, number, small_png, pdf).run(
                deadline
            )
        )

        assert [error for client in clients for error in client.errors] == []
        patients = [pk for client in clients for pk in client.patients]
        scans = {pk: sha for client in clients for pk, (_, sha) in client.scans.items()}
        documents = {
            pk: sha for client in clients for pk, (_, sha) in client.documents.items()
        }
        assert sorted(Patient.objects.values_list("pk", flat=True)) == sorted(patients)
        assert dict(Scan.objects.values_list("pk", "sha256")) == scans
        assert dict(PatientDocument.objects.values_list("pk", "sha256")) == documents
        assert scans and documents, "the run was too short to upload anything"

        stored = stored_files(local_storage)
        for row in [*Scan.objects.all(), *PatientDocument.objects.all()]:
            data = stored[row.file.name]
            assert (sha256(data), len(data)) == (row.sha256, row.size)
        referenced = {
            name
            for row in [*Scan.objects.all(), *PatientDocument.objects.all()]
            for name in row.stored_names
        }
        assert set(stored) == referenced
        assert not PendingFileDeletion.objects.exists()


def race_deletes(first, second):
    """Run two deletes in two threads, the second while the first is held.

    The first delete is held when it sends pre_delete for a scan, after it has
    collected its rows, until the second delete has finished or 2 s have passed.
    """
    collected = threading.Event()
    second_done = threading.Event()

    def hold_first(sender, instance, **kwargs):
        if threading.current_thread().name == "first":
            collected.set()
            second_done.wait(timeout=2)

    def run(name, delete):
        try:
            if name == "second":
                collected.wait(timeout=TIMEOUT)
            delete()
        finally:
            if name == "second":
                second_done.set()
            connection.close()

    pre_delete.connect(hold_first, sender=Scan)
    try:
        threads = [
            threading.Thread(target=run, args=(name, delete), name=name)
            for name, delete in (("first", first), ("second", second))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
    finally:
        pre_delete.disconnect(hold_first, sender=Scan)


class TestConcurrentAdminDelete:
    """Two admins delete the same scans; the audit trail records each delete once."""

    def test_it_records_one_bulk_delete(self, postgresql, rf, patient, small_png):
        scan = create_scan(patient, upload("a.png", small_png), body_part="CHEST")

        def delete_scan():
            ScanAdmin(Scan, admin.site).delete_queryset(
                rf.post("/"), Scan.objects.filter(pk=scan.pk)
            )

        race_deletes(delete_scan, delete_scan)

        assert not Scan.objects.exists()
        deletes = AuditEntry.objects.filter(action="delete", object_id=str(scan.pk))
        assert deletes.count() == 1

    def test_it_records_one_delete_of_a_cascaded_scan(
        self, postgresql, rf, patient, small_png
    ):
        scan = create_scan(patient, upload("a.png", small_png), body_part="CHEST")

        def delete_patient():
            PatientAdmin(Patient, admin.site).delete_model(
                rf.post("/"), Patient.objects.get(pk=patient.pk)
            )

        def delete_scan():
            ScanAdmin(Scan, admin.site).delete_model(
                rf.post("/"), Scan.objects.get(pk=scan.pk)
            )

        # The patient's delete is held after it collected its scans.
        race_deletes(delete_patient, delete_scan)

        assert not Patient.objects.exists()
        deletes = AuditEntry.objects.filter(
            action="delete", object_type="scans.scan", object_id=str(scan.pk)
        )
        assert deletes.count() == 1
