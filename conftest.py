"""Fixtures shared by every app's tests: users, API clients, real files, storage.

Input files are real: pydicom-data's chest radiograph RG1_UNCR.dcm, PNG and JPEG
images made from its pixels with Pillow, and PDFs written with fpdf2. Cloudinary
tests reach copilot.testing.cloudinary_server over HTTP through the real SDK.
"""

import hashlib
import io
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.contrib.auth.models import Group, Permission
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from fpdf import FPDF
from PIL import Image
from pydicom.data import get_testdata_file
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from copilot.testing.cloudinary_server import CloudinaryServer

CHEST_DICOM = "RG1_UNCR.dcm"  # chest PA, CR, MONOCHROME1, PatientID 9RG1
CHEST_MRN = "9RG1"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def dicom_test_file(name):
    """Return the path of a pydicom or pydicom-data test file."""
    return Path(get_testdata_file(name))


def _chest_pixels():
    dataset = pydicom.dcmread(dicom_test_file(CHEST_DICOM))
    pixels = dataset.pixel_array.astype(np.float32)
    low, high = np.percentile(pixels, [1, 99])
    scaled = np.clip((pixels - low) / (high - low), 0, 1)
    # MONOCHROME1 stores air bright; invert so air is black as on a film.
    scaled = 1.0 - scaled
    image = Image.fromarray((scaled * 255).astype(np.uint8), mode="L")
    image.thumbnail((1200, 1200))
    return image


@pytest.fixture(scope="session")
def chest_image():
    return _chest_pixels()


@pytest.fixture(scope="session")
def chest_jpeg(chest_image):
    buffer = io.BytesIO()
    chest_image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def chest_png(chest_image):
    buffer = io.BytesIO()
    chest_image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def chest_dicom():
    return dicom_test_file(CHEST_DICOM).read_bytes()


def make_pdf(text="Blood work: haemoglobin 13.5 g/dL."):
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


@pytest.fixture(scope="session")
def report_pdf():
    return make_pdf()


def upload(name, data, content_type="application/octet-stream"):
    """Return an uploaded file as Django's test client sends it."""
    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.fixture(autouse=True)
def local_storage(settings, tmp_path):
    """Store files under a fresh MEDIA_ROOT for each test."""
    media_root = tmp_path / "media"
    media_root.mkdir()
    local = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": media_root, "base_url": "/media/"},
    }
    settings.MEDIA_ROOT = media_root
    settings.STORAGES = {
        **settings.STORAGES,
        "default": local,
        "scans": local,
        "documents": local,
    }
    return media_root


# Short, so tests of timeouts stay fast; a held request lasts a little longer.
CLOUDINARY_TEST_TIMEOUT = 1.0
# Failure modes of the Cloudinary server, with the status and message of the API.
UPLOAD_FAILURES = [
    ("timeout", 503, "Storage upload timed out"),
    ("5xx", 502, "Storage upload failed: GeneralError: General Error"),
    ("420", 502, "Storage upload failed: RateLimited: Rate Limit Exceeded"),
    ("401", 502, "Storage upload failed: AuthorizationRequired: Invalid credentials"),
]


@pytest.fixture(scope="session")
def cloudinary_server():
    with CloudinaryServer(timeout_delay=CLOUDINARY_TEST_TIMEOUT + 0.5) as server:
        yield server


@pytest.fixture
def cloudinary_storage(settings, monkeypatch, cloudinary_server):
    """Store scans and documents in the test Cloudinary server for one test.

    Settings, the environment and the SDK configuration are restored afterwards,
    so the rest of the suite keeps the local storage. Delivery URLs that the
    storage downloads point at the server; file URLs stay HTTPS.
    """
    cloudinary_server.reset()
    # django-cloudinary-storage checks for credentials when first imported.
    monkeypatch.setenv("CLOUDINARY_URL", cloudinary_server.cloudinary_url)
    settings.CLOUDINARY_URL = cloudinary_server.cloudinary_url
    settings.CLOUDINARY_ENABLED = True
    settings.CLOUDINARY_DELIVERY_TYPE = "upload"
    settings.CLOUDINARY_TIMEOUT = CLOUDINARY_TEST_TIMEOUT
    backend = {"BACKEND": "copilot.cloudinary.CloudinaryStorage"}
    settings.STORAGES = {**settings.STORAGES, "scans": backend, "documents": backend}
    with cloudinary_server.configure_sdk(local_delivery=True):
        yield cloudinary_server
    cloudinary_server.reset()


def run_command(command, *args):
    """Run a management command and return what it wrote to stdout."""
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def store_file(alias, folder, extension, data):
    """Save bytes to a storage under a random name and return the stored name."""
    name = f"{folder}/{uuid.uuid4().hex}.{extension}"
    return storages[alias].save(name, ContentFile(data))


def stored_files(root):
    """Return {relative path: bytes} of every file under a storage folder."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(Path(root).rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def radiologist(django_user_model):
    """A user with every model permission of the three apps."""
    user = django_user_model.objects.create_user("radiologist", password="x-ray-pass-1")
    permissions = Permission.objects.filter(
        content_type__app_label__in=["patients", "scans", "documents"]
    )
    group = Group.objects.create(name="Test radiologists")
    group.permissions.set(permissions)
    user.groups.add(group)
    return user


@pytest.fixture
def token(radiologist):
    return Token.objects.create(user=radiologist).key


@pytest.fixture
def api(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def patient(db):
    from patients.models import Patient

    return Patient.objects.create(mrn="MRN001", name="John Doe", age=45, gender="Male")


@pytest.fixture
def chest_patient(db):
    from patients.models import Patient

    return Patient.objects.create(mrn=CHEST_MRN, name="Chest Patient", age=60)


@pytest.fixture
def staff_client(client, radiologist):
    """A test client logged into the admin as the radiologist."""
    radiologist.is_staff = True
    radiologist.save(update_fields=["is_staff"])
    client.force_login(radiologist)
    return client


@pytest.fixture
def group_client(client, django_user_model):
    """Return a function that logs the client in as a staff member of a group."""

    def log_in(group_name):
        user = django_user_model.objects.create_user(
            group_name.lower().replace(" ", "-"), is_staff=True
        )
        user.groups.add(Group.objects.get(name=group_name))
        client.force_login(user)
        return client

    return log_in
