"""Two gunicorn processes on one PostgreSQL database and one storage.

Whatever one process stores, the other serves: rows, files and deletes. Both
spool large uploads to FILE_UPLOAD_TEMP_DIR, which must be empty after every
request, whether the upload was stored, rejected or cut off by the client.

Every test runs twice: with the local storage in a shared MEDIA_ROOT, and with
Cloudinary (the test server of copilot.testing), where MEDIA_ROOT names a
folder that must never be created.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

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
        raise RuntimeError(
            f"gunicorn did not respond within {seconds} s:\n{self.log.read_text()}"
        )

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class Deployment:
    """Two app processes, their folders, and a view of the shared storage."""

    def __init__(self, backend, folders, cloudinary=None):
        self.backend = backend
        self.folders = folders
        self.media = folders / "media"
        self.cloudinary = cloudinary
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CLOUDINARY_")
        }
        environment.update(
            DJANGO_SETTINGS_MODULE="copilot.settings_test",
            DATABASE_URL=database_url(),
            MEDIA_ROOT=str(self.media),
            FILE_UPLOAD_TEMP_DIR=str(folders / "upload-tmp"),
            MAX_UPLOAD_SIZE=str(MAX_UPLOAD_SIZE),
            ALLOWED_HOSTS="127.0.0.1",
            DEBUG="false",
        )
        if cloudinary is not None:
            environment["CLOUDINARY_URL"] = cloudinary.cloudinary_url
        else:
            self.media.mkdir()
        self.servers = [
            AppServer(environment, folders / f"gunicorn-{name}.log") for name in "ab"
        ]

    def stored(self):
        """Return {name: bytes} of every file in the shared storage."""
        if self.cloudinary is not None:
            assert not self.media.exists(), "a process wrote to the local disk"
            return {item.public_id: item.data for item in self.cloudinary.resources}
        return stored_files(self.media)

    def download(self, session, file_url, base_url):
        """Download a file URL: through the process at base_url when it is local."""
        if self.cloudinary is not None:
            return self.cloudinary.fetch(file_url)
        response = session.get(base_url + urlsplit(file_url).path, timeout=TIMEOUT)
        return response.status_code, response.content


@pytest.fixture(scope="module", params=["local", "cloudinary"])
def deployment(request, django_db_setup, tmp_path_factory):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip(
            "Two processes share one database only on PostgreSQL. Set "
            "DATABASE_URL to a PostgreSQL database."
        )
    folders = tmp_path_factory.mktemp(f"two-processes-{request.param}")
    (folders / "upload-tmp").mkdir()
    cloudinary = None
    if request.param == "cloudinary":
        cloudinary = request.getfixturevalue("cloudinary_server")
    started = Deployment(request.param, folders, cloudinary)
    try:
        for server in started.servers:
            server.wait_until_up()
        yield started
    finally:
        for server in started.servers:
            server.stop()


@pytest.fixture
def clients(deployment, transactional_db, token):
    """Two sessions, one for each process, with the same committed token."""
    if deployment.cloudinary is not None:
        deployment.cloudinary.reset()
    sessions = []
    for server in deployment.servers:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        sessions.append((server.url, session))
    yield sessions
    for _, session in sessions:
        session.close()


@pytest.fixture
def folders(deployment):
    return deployment.folders


@pytest.fixture
def servers(deployment):
    return deployment.servers


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
        after_delete = session_a.get(
            f"{a}/patients/{created.json()['id']}/", timeout=TIMEOUT
        )

        assert created.status_code == 201
        assert read.status_code == 200
        assert read.json()["mrn"] == "TWO-1"
        assert deleted.status_code == 200
        assert after_delete.status_code == 404
        assert not Patient.objects.exists()

    def test_it_serves_a_file_uploaded_to_the_other(
        self, clients, deployment, chest_png
    ):
        (a, session_a), (b, session_b) = clients
        patient = Patient.objects.create(mrn="TWO-2", name="Bob")

        uploaded = session_a.post(
            f"{a}/patients/{patient.pk}/upload/scan",
            data={"body_part": "CHEST"},
            files={"file": ("chest.png", chest_png, "image/png")},
            timeout=TIMEOUT,
        )
        read = session_b.get(
            f"{b}/scans/{uploaded.json()['scan']['id']}/", timeout=TIMEOUT
        )
        scan = read.json()
        fetched = deployment.download(session_b, scan["file_url"], b)
        stored = deployment.stored()
        deleted = session_b.delete(f"{b}/scans/{scan['id']}/", timeout=TIMEOUT)
        missing = deployment.download(session_a, scan["file_url"], a)

        assert uploaded.status_code == 201, uploaded.text
        assert read.status_code == 200
        assert fetched == (200, chest_png)
        assert sha256(chest_png) == scan["sha256"]
        assert len(stored) == 3  # the scan, its preview and its thumbnail
        assert deleted.status_code == 200
        assert missing[0] == 404
        assert not Scan.objects.exists()
        assert deployment.stored() == {}

    def test_it_cleans_stored_upload(self, clients, deployment, folders):
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
        fetched = deployment.download(
            session_b, response.json()["document"]["file_url"], b
        )
        stored = deployment.stored()
        deleted = session_b.delete(f"{b}/documents/{document.pk}/", timeout=TIMEOUT)

        assert response.status_code == 201, response.text
        assert (document.size, document.sha256) == (len(pdf), sha256(pdf))
        assert list(stored.values()) == [pdf]
        assert fetched == (200, pdf)
        assert_no_temporary_files(folders)
        assert deleted.status_code == 200
        assert deployment.stored() == {}

    def test_it_cleans_oversized_upload(self, clients, deployment, folders):
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
        assert deployment.stored() == {}
        assert_no_temporary_files(folders)

    def test_it_cleans_rejected_upload(self, clients, deployment, folders):
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
        assert deployment.stored() == {}
        assert_no_temporary_files(folders)

    def test_it_cleans_interrupted_upload(self, clients, deployment, servers, folders):
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
        assert deployment.stored() == {}

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
    """Read an HTTP response up to the end of its JSON body, chunked or not."""
    answer = b""
    while b"}" not in answer:
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
