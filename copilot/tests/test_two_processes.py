"""Two gunicorn processes on one PostgreSQL database and one storage.

Whatever one process stores, the other serves: rows, files and deletes. Both
spool large uploads to FILE_UPLOAD_TEMP_DIR, which must be empty after every
request, whether the upload was stored, rejected or cut off by the client.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from conftest import make_pdf, sha256, stored_files
from documents.models import PatientDocument
from patients.models import Patient
from scans.models import Scan

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
MAX_UPLOAD_SIZE = 4 * 1024 * 1024
TIMEOUT = 30


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url():
    database = settings.DATABASES["default"]
    user = database["USER"]
    if database["PASSWORD"]:
        user += f":{database['PASSWORD']}"
    host = database["HOST"] or "127.0.0.1"
    return f"postgres://{user}@{host}:{database['PORT'] or 5432}/{database['NAME']}"


class AppServer:
    """A gunicorn process serving copilot.wsgi on a free loopback port."""

    def __init__(self, environment, log):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "copilot.wsgi:application",
                f"--bind=127.0.0.1:{self.port}",
                "--worker-class=gthread",
                "--workers=1",
                "--threads=4",
                "--timeout=30",
            ],
            cwd=ROOT,
            env=environment,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_until_up(self, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/health", timeout=5).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer:\n{self.log.read_text()}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-processes")
    for name in ("media", "upload-tmp"):
        (root / name).mkdir()
    return root


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, folders):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip(
            "Two processes share one database only on PostgreSQL. Set "
            "DATABASE_URL to a PostgreSQL database."
        )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "copilot.settings_test",
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(folders / "media"),
        "FILE_UPLOAD_TEMP_DIR": str(folders / "upload-tmp"),
        "MAX_UPLOAD_SIZE": str(MAX_UPLOAD_SIZE),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
        "CLOUDINARY_URL": "",
    }
    started = [
        AppServer(environment, folders / f"gunicorn-{name}.log") for name in "ab"
    ]
    try:
        for server in started:
            server.wait_until_up()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def clients(servers, transactional_db, token):
    """Two sessions, one for each process, with the same committed token."""
    sessions = []
    for server in servers:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        sessions.append((server.url, session))
    yield sessions
    for _, session in sessions:
        session.close()


def padded_pdf(size):
    """A PDF of `size` bytes: a real PDF followed by a comment of filler."""
    pdf = make_pdf() + b"\n%"
    return pdf + os.urandom(size - len(pdf))


class TestTwoProcesses:
    def test_it_serves_a_patient_created_on_the_other(self, clients):
        (a, session_a), (b, session_b) = clients

        created = session_a.post(
            f"{a}/patients/", json={"mrn": "TWO-1", "name": "Ann"}, timeout=TIMEOUT
        )
        read = session_b.get(f"{b}/patients/{created.json()['id']}/", timeout=TIMEOUT)
        deleted = session_b.delete(
            f"{b}/patients/{created.json()['id']}/", timeout=TIMEOUT
        )
        gone = session_a.get(f"{a}/patients/{created.json()['id']}/", timeout=TIMEOUT)

        assert created.status_code == 201
        assert read.status_code == 200
        assert read.json()["mrn"] == "TWO-1"
        assert deleted.status_code == 200
        assert gone.status_code == 404
        assert not Patient.objects.exists()

    def test_it_serves_a_file_uploaded_to_the_other(self, clients, folders, chest_png):
        (a, session_a), (b, session_b) = clients
        patient = Patient.objects.create(mrn="TWO-2", name="Bob")

        uploaded = session_a.post(
            f"{a}/patients/{patient.pk}/upload/scan",
            data={"body_part": "CHEST"},
            files={"file": ("chest.png", chest_png, "image/png")},
            timeout=TIMEOUT,
        )
        scan = uploaded.json()["scan"]
        path = scan["file_url"].removeprefix(a)
        fetched = session_b.get(f"{b}{path}", timeout=TIMEOUT)
        deleted = session_b.delete(f"{b}/scans/{scan['id']}/", timeout=TIMEOUT)
        missing = session_a.get(f"{a}{path}", timeout=TIMEOUT)

        assert uploaded.status_code == 201, uploaded.text
        assert scan["file_url"].startswith(f"{a}/media/xrays/")
        assert fetched.status_code == 200
        assert fetched.content == chest_png
        assert sha256(fetched.content) == scan["sha256"]
        assert deleted.status_code == 200
        assert missing.status_code == 404
        assert not Scan.objects.exists()
        assert stored_files(folders / "media") == {}

    def test_it_removes_the_temporary_file_of_a_stored_upload(self, clients, folders):
        (a, session_a), (b, session_b) = clients
        patient = Patient.objects.create(mrn="TWO-3", name="Cy")
        pdf = padded_pdf(3 * 1024 * 1024)

        response = session_a.post(
            f"{a}/patients/{patient.pk}/upload/document",
            data={"document_name": "Scan report"},
            files={"file": ("report.pdf", pdf, "application/pdf")},
            timeout=TIMEOUT,
        )
        document = PatientDocument.objects.get()
        fetched = session_b.get(
            response.json()["document"]["file_url"].replace(a, b), timeout=TIMEOUT
        )
        stored = stored_files(folders / "media")
        deleted = session_b.delete(f"{b}/documents/{document.pk}/", timeout=TIMEOUT)

        assert response.status_code == 201, response.text
        assert (document.size, document.sha256) == (len(pdf), sha256(pdf))
        assert stored == {document.file.name: pdf}
        assert fetched.content == pdf
        assert_no_temporary_files(folders)
        assert deleted.status_code == 200
        assert stored_files(folders / "media") == {}

    def test_it_removes_the_temporary_file_of_a_file_too_large(self, clients, folders):
        (a, session_a), _ = clients
        patient = Patient.objects.create(mrn="TWO-4", name="Di")

        response = session_a.post(
            f"{a}/patients/{patient.pk}/upload/document",
            data={"document_name": "Too large"},
            files={"file": ("big.pdf", padded_pdf(MAX_UPLOAD_SIZE + 1), "x/y")},
            timeout=TIMEOUT,
        )

        assert response.status_code == 413
        assert not PatientDocument.objects.exists()
        assert stored_files(folders / "media") == {}
        assert_no_temporary_files(folders)

    def test_it_removes_the_temporary_file_of_a_wrong_file(self, clients, folders):
        _, (b, session_b) = clients
        patient = Patient.objects.create(mrn="TWO-5", name="Ed")

        response = session_b.post(
            f"{b}/patients/{patient.pk}/upload/document",
            data={"document_name": "Not a PDF"},
            files={"file": ("fake.pdf", os.urandom(3 * 1024 * 1024), "x/y")},
            timeout=TIMEOUT,
        )

        assert response.status_code == 400
        assert not PatientDocument.objects.exists()
        assert_no_temporary_files(folders)

    def test_it_removes_the_temporary_file_of_an_upload_cut_short(
        self, clients, servers, folders
    ):
        patient = Patient.objects.create(mrn="TWO-6", name="Flo")
        body = multipart_document(padded_pdf(3 * 1024 * 1024))

        with socket.create_connection(("127.0.0.1", servers[0].port)) as raw:
            raw.sendall(request_head(clients, patient, len(body)))
            raw.sendall(body[: len(body) - 1024 * 1024])
            # The part received so far is spooled to the temporary folder.
            spooled = wait_for(lambda: any((folders / "upload-tmp").iterdir()))

        assert spooled
        assert_no_temporary_files(folders)
        assert not PatientDocument.objects.exists()
        assert stored_files(folders / "media") == {}

    def test_it_rejects_a_declared_size_before_the_body(
        self, clients, servers, folders
    ):
        patient = Patient.objects.create(mrn="TWO-7", name="Gus")
        declared = 10 * 1024**3

        with socket.create_connection(("127.0.0.1", servers[1].port)) as raw:
            raw.settimeout(TIMEOUT)
            raw.sendall(request_head(clients, patient, declared))
            answer = read_answer(raw)

        assert answer.startswith(b"HTTP/1.1 413")
        assert str(declared).encode() in answer
        assert not PatientDocument.objects.exists()
        assert_no_temporary_files(folders)


BOUNDARY = "two-processes-boundary"


def multipart_document(pdf):
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="document_name"\r\n\r\nCut\r\n'
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="cut.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + pdf
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def request_head(clients, patient, length):
    _, session = clients[0]
    return (
        f"POST /patients/{patient.pk}/upload/document HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: {session.headers['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_answer(raw):
    """Read an HTTP answer up to the end of its JSON body."""
    answer = b""
    while not answer.endswith(b"}"):
        chunk = raw.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def assert_no_temporary_files(folders):
    # The server closes the request's files when it closes the response, which
    # may be just after the client has read it.
    folder = folders / "upload-tmp"
    assert wait_for(lambda: not any(folder.iterdir()), seconds=5), list(
        folder.iterdir()
    )


def wait_for(condition, seconds=10):
    """Return True once condition() is true, False after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
