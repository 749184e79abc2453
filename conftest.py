"""Fixtures shared by every app's tests: users, API clients, real files, storage.

Input files are real: pydicom-data's chest radiograph RG1_UNCR.dcm, PNG and JPEG
images made from its pixels with Pillow, and PDFs written with fpdf2.
"""

import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from fpdf import FPDF
from PIL import Image
from pydicom.data import get_testdata_file
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

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
