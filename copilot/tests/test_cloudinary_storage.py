"""The Cloudinary storage, through the real SDK and django-cloudinary-storage.

Every test talks over HTTP to the CloudinaryServer of the `cloudinary_storage`
fixture; nothing in the SDK or the storage is patched.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from copilot.storage import StorageError, translate_storage_errors

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONED = re.compile(r"^(upload|authenticated)/v\d+/")


def random_path(folder, extension):
    return f"{folder}/{uuid.uuid4().hex}.{extension}"


def save(alias, name, data):
    with translate_storage_errors("upload"):
        return storages[alias].save(name, ContentFile(data))


def requests_of(server, operation):
    return [entry for entry in server.request_log if entry["operation"] == operation]


def run_python(code, env_overrides, cwd=REPO_ROOT):
    """Run Python code with Django set up, in a fresh process and environment."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CLOUDINARY_")
    }
    env.update(DJANGO_SETTINGS_MODULE="copilot.settings_test", **env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


SETTINGS_REPORT = """
import json, sys
from django.conf import settings
from django.core.files.storage import storages
storages["scans"]
print(json.dumps({
    "enabled": settings.CLOUDINARY_ENABLED,
    "scans": settings.STORAGES["scans"]["BACKEND"],
    "documents": settings.STORAGES["documents"]["BACKEND"],
    "staticfiles": settings.STORAGES["staticfiles"]["BACKEND"],
    "credentials": settings.CLOUDINARY_STORAGE,
    "apps": [app for app in settings.INSTALLED_APPS if "cloudinary" in app],
    "imported": sorted(m for m in sys.modules if m.startswith("cloudinary")),
}))
"""


class TestSettings:
    def test_it_keeps_local_storage_without_credentials(self):
        result = run_python(SETTINGS_REPORT, {})

        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["enabled"] is False
        assert report["scans"] == "django.core.files.storage.FileSystemStorage"
        assert report["documents"] == "django.core.files.storage.FileSystemStorage"
        assert report["credentials"] == {}
        assert report["imported"] == []

    def test_it_uses_cloudinary_with_url(self, cloudinary_server):
        result = run_python(
            SETTINGS_REPORT, {"CLOUDINARY_URL": cloudinary_server.cloudinary_url}
        )

        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["enabled"] is True
        assert report["scans"] == "copilot.cloudinary.CloudinaryStorage"
        assert report["documents"] == "copilot.cloudinary.CloudinaryStorage"
        assert (
            report["staticfiles"] == "whitenoise.storage.CompressedStaticFilesStorage"
        )
        # Empty credentials here would override the ones of CLOUDINARY_URL.
        assert report["credentials"] == {}
        assert report["apps"] == []

    def test_it_uses_cloudinary_with_three_variables(self):
        result = run_python(
            SETTINGS_REPORT,
            {
                "CLOUDINARY_CLOUD_NAME": "cloud",
                "CLOUDINARY_API_KEY": "key",
                "CLOUDINARY_API_SECRET": "secret",
            },
        )

        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["enabled"] is True
        assert report["scans"] == "copilot.cloudinary.CloudinaryStorage"
        assert report["credentials"] == {
            "CLOUD_NAME": "cloud",
            "API_KEY": "key",
            "API_SECRET": "secret",
        }

    def test_it_rejects_unknown_delivery_type(self, cloudinary_server):
        result = run_python(
            "",
            {
                "CLOUDINARY_URL": cloudinary_server.cloudinary_url,
                "CLOUDINARY_DELIVERY_TYPE": "public",
            },
        )

        assert result.returncode != 0
        assert "CLOUDINARY_DELIVERY_TYPE is 'public'" in result.stderr


class TestCollectstatic:
    def test_it_collects_locally_with_cloudinary_configured(
        self, cloudinary_server, tmp_path
    ):
        cloudinary_server.reset()
        static_root = tmp_path / "static"

        result = run_python(
            "from django.core.management import call_command\n"
            "call_command('collectstatic', interactive=False, verbosity=0)\n",
            {
                "CLOUDINARY_URL": cloudinary_server.cloudinary_url,
                "STATIC_ROOT": str(static_root),
            },
        )

        assert result.returncode == 0, result.stderr
        assert (static_root / "admin" / "css" / "base.css").is_file()
        assert (static_root / "staticfiles.json").is_file() is False
        assert cloudinary_server.request_log == []


@pytest.mark.usefixtures("cloudinary_storage")
class TestSave:
    def test_it_stores_png_as_image(self, cloudinary_storage, chest_png):
        path = random_path("xrays", "png")

        name = save("scans", path, chest_png)

        public_id = path.removesuffix(".png")
        resource = cloudinary_storage.get_resource(public_id, "image", "upload")
        assert name == f"upload/v{resource.version}/{path}"
        assert resource.data == chest_png
        assert resource.format == "png"
        assert resource.filename == path.split("/")[1]
        assert resource.tags == []
        assert resource.context == {}
        assert resource.folder is None
        assert resource.original_filename is None
        assert resource.params["overwrite"] == "0"
        assert resource.params["use_filename"] == "0"

    def test_it_names_jpeg_by_its_cloudinary_format(
        self, cloudinary_storage, chest_jpeg
    ):
        path = random_path("xrays", "jpeg")

        name = save("scans", path, chest_jpeg)

        resource = cloudinary_storage.get_resource(path.removesuffix(".jpeg"))
        assert name == f"upload/v{resource.version}/{path.removesuffix('.jpeg')}.jpg"
        assert resource.data == chest_jpeg

    def test_it_stores_dicom_as_raw_with_extension(
        self, cloudinary_storage, chest_dicom
    ):
        path = random_path("xrays", "dcm")

        name = save("scans", path, chest_dicom)

        resource = cloudinary_storage.get_resource(path, "raw", "upload")
        assert name == f"upload/v{resource.version}/{path}"
        assert resource.data == chest_dicom

    def test_it_stores_pdf_as_raw(self, cloudinary_storage, report_pdf):
        path = random_path("reports", "pdf")

        save("documents", path, report_pdf)

        assert cloudinary_storage.get_resource(path, "raw").data == report_pdf

    def test_it_makes_no_other_request(self, cloudinary_storage, chest_png):
        save("scans", random_path("xrays", "png"), chest_png)

        assert dict(cloudinary_storage.counts) == {"upload": 1}

    def test_it_sends_the_timeout(self, cloudinary_storage, chest_png):
        cloudinary_storage.fail_next(1, "timeout", "upload", delay=5)
        started = time.monotonic()

        with pytest.raises(StorageError) as raised:
            save("scans", random_path("xrays", "png"), chest_png)

        assert time.monotonic() - started < 3
        assert raised.value.timed_out
        assert "Read timed out" in str(raised.value)

    def test_it_uploads_authenticated(self, cloudinary_storage, settings, chest_png):
        settings.CLOUDINARY_DELIVERY_TYPE = "authenticated"
        path = random_path("xrays", "png")

        name = save("scans", path, chest_png)

        resource = cloudinary_storage.get_resource(
            path.removesuffix(".png"), "image", "authenticated"
        )
        assert resource.data == chest_png
        assert name.startswith(f"authenticated/v{resource.version}/")


@pytest.mark.usefixtures("cloudinary_storage")
class TestChunkedSave:
    @pytest.fixture(autouse=True)
    def small_chunks(self, settings, cloudinary_storage, monkeypatch):
        monkeypatch.setattr(cloudinary_storage, "min_chunk_size", 0)
        settings.CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD = 1_000_000
        settings.CLOUDINARY_CHUNK_SIZE = 256 * 1024

    def test_it_uploads_in_chunks_above_threshold(
        self, cloudinary_storage, chest_dicom
    ):
        assert len(chest_dicom) > 1_000_000
        path = random_path("xrays", "dcm")

        name = save("scans", path, chest_dicom)

        resource = cloudinary_storage.get_resource(path, "raw")
        assert resource.chunked
        assert resource.data == chest_dicom
        assert name == f"upload/v{resource.version}/{path}"
        ranges = [
            entry["content_range"]
            for entry in requests_of(cloudinary_storage, "upload")
        ]
        assert len(ranges) == -(-len(chest_dicom) // (256 * 1024))
        assert ranges[0] == f"bytes 0-{256 * 1024 - 1}/{len(chest_dicom)}"
        assert resource.params["public_id"] == path
        assert resource.filename == path.split("/")[1]

    def test_it_uploads_whole_at_threshold(self, cloudinary_storage, settings):
        data = b"%PDF-1.4\n" + bytes(1_000_000 - 9)
        path = random_path("reports", "pdf")

        save("documents", path, data)

        resource = cloudinary_storage.get_resource(path, "raw")
        assert not resource.chunked
        assert resource.data == data

    def test_it_sends_the_timeout_with_each_chunk(
        self, cloudinary_storage, chest_dicom
    ):
        cloudinary_storage.fail_next(1, "timeout", "upload", delay=5)
        started = time.monotonic()

        with pytest.raises(StorageError) as raised:
            save("scans", random_path("xrays", "dcm"), chest_dicom)

        assert time.monotonic() - started < 3
        assert raised.value.timed_out
        assert cloudinary_storage.resources == []


@pytest.mark.usefixtures("cloudinary_storage")
class TestUrl:
    def test_it_builds_versioned_image_url(self, cloudinary_storage, chest_png):
        path = random_path("xrays", "png")
        name = save("scans", path, chest_png)
        before = sum(cloudinary_storage.counts.values())

        url = storages["scans"].url(name)

        version = cloudinary_storage.get_resource(path.removesuffix(".png")).version
        assert url == f"https://res.cloudinary.com/cloud/image/upload/v{version}/{path}"
        assert sum(cloudinary_storage.counts.values()) == before
        assert cloudinary_storage.fetch(url) == (200, chest_png)

    def test_it_keeps_the_extension_of_raw_files(self, cloudinary_storage, report_pdf):
        path = random_path("reports", "pdf")
        name = save("documents", path, report_pdf)

        url = storages["documents"].url(name)

        version = cloudinary_storage.get_resource(path, "raw").version
        assert url == f"https://res.cloudinary.com/cloud/raw/upload/v{version}/{path}"
        assert cloudinary_storage.fetch(url) == (200, report_pdf)

    def test_it_signs_authenticated_urls(self, cloudinary_storage, settings, chest_png):
        settings.CLOUDINARY_DELIVERY_TYPE = "authenticated"
        path = random_path("xrays", "png")
        name = save("scans", path, chest_png)

        url = storages["scans"].url(name)

        assert re.match(
            r"^https://res\.cloudinary\.com/cloud/image/authenticated/s--[\w-]{8}--/v\d+/",
            url,
        )
        assert cloudinary_storage.fetch(url) == (200, chest_png)
        unsigned = re.sub(r"/s--[\w-]{8}--", "", url)
        assert cloudinary_storage.fetch(unsigned)[0] == 401

    def test_it_signs_authenticated_raw_urls(
        self, cloudinary_storage, settings, chest_dicom
    ):
        settings.CLOUDINARY_DELIVERY_TYPE = "authenticated"
        name = save("scans", random_path("xrays", "dcm"), chest_dicom)

        url = storages["scans"].url(name)

        assert "/raw/authenticated/s--" in url
        assert cloudinary_storage.fetch(url) == (200, chest_dicom)

    def test_it_keeps_the_stored_delivery_type(
        self, cloudinary_storage, settings, chest_png
    ):
        name = save("scans", random_path("xrays", "png"), chest_png)
        settings.CLOUDINARY_DELIVERY_TYPE = "authenticated"

        url = storages["scans"].url(name)

        assert "/image/upload/v" in url
        assert cloudinary_storage.fetch(url) == (200, chest_png)


@pytest.mark.usefixtures("cloudinary_storage")
class TestDelete:
    def test_it_destroys_image_with_invalidation(self, cloudinary_storage, chest_png):
        path = random_path("xrays", "png")
        name = save("scans", path, chest_png)

        storages["scans"].delete(name)

        assert cloudinary_storage.resources == []
        (destroy,) = requests_of(cloudinary_storage, "destroy")
        assert destroy["path"] == "/v1_1/cloud/image/destroy"
        assert destroy["params"]["public_id"] == path.removesuffix(".png")
        assert destroy["params"]["type"] == "upload"
        assert destroy["params"]["invalidate"] == "1"

    def test_it_destroys_raw_by_public_id_with_extension(
        self, cloudinary_storage, settings, chest_dicom
    ):
        settings.CLOUDINARY_DELIVERY_TYPE = "authenticated"
        path = random_path("xrays", "dcm")
        name = save("scans", path, chest_dicom)

        storages["scans"].delete(name)

        assert cloudinary_storage.resources == []
        (destroy,) = requests_of(cloudinary_storage, "destroy")
        assert destroy["path"] == "/v1_1/cloud/raw/destroy"
        assert destroy["params"]["public_id"] == path
        assert destroy["params"]["type"] == "authenticated"

    def test_it_counts_not_found_as_done(self, cloudinary_storage):
        storages["scans"].delete("upload/v1/xrays/gone.png")

        assert cloudinary_storage.count("destroy") == 1

    @pytest.mark.parametrize("mode", ["5xx", "420", "401"])
    def test_it_raises_on_failure(self, cloudinary_storage, chest_png, mode):
        name = save("scans", random_path("xrays", "png"), chest_png)
        cloudinary_storage.fail_next(1, mode, "destroy")

        with pytest.raises(StorageError) as raised:
            with translate_storage_errors("delete"):
                storages["scans"].delete(name)

        assert not raised.value.timed_out
        assert len(cloudinary_storage.resources) == 1

    def test_it_times_out(self, cloudinary_storage, chest_png):
        name = save("scans", random_path("xrays", "png"), chest_png)
        cloudinary_storage.fail_next(1, "timeout", "destroy", delay=5)
        started = time.monotonic()

        with pytest.raises(StorageError) as raised:
            with translate_storage_errors("delete"):
                storages["scans"].delete(name)

        assert time.monotonic() - started < 3
        assert raised.value.timed_out
        assert len(cloudinary_storage.resources) == 1


@pytest.mark.usefixtures("cloudinary_storage")
class TestReads:
    def test_open_downloads_the_bytes(self, cloudinary_storage, chest_dicom):
        name = save("scans", random_path("xrays", "dcm"), chest_dicom)

        with storages["scans"].open(name) as file:
            assert file.read() == chest_dicom

    def test_open_times_out(self, cloudinary_storage, chest_png):
        name = save("scans", random_path("xrays", "png"), chest_png)
        cloudinary_storage.fail_next(1, "timeout", "fetch", delay=5)
        started = time.monotonic()

        with pytest.raises(StorageError) as raised:
            with translate_storage_errors("read"):
                storages["scans"].open(name)

        assert time.monotonic() - started < 3
        assert raised.value.timed_out

    def test_open_reports_missing_file(self, cloudinary_storage):
        with pytest.raises(FileNotFoundError):
            storages["scans"].open("upload/v1/xrays/gone.png")

    def test_exists_and_size_use_the_admin_api(self, cloudinary_storage, report_pdf):
        name = save("documents", random_path("reports", "pdf"), report_pdf)

        assert storages["documents"].exists(name)
        assert storages["documents"].size(name) == len(report_pdf)
        assert not storages["documents"].exists("upload/v1/reports/gone.pdf")
        assert cloudinary_storage.count("resource") == 3
        assert cloudinary_storage.count("fetch") == 0

    def test_exists_times_out(self, cloudinary_storage, settings):
        settings.CLOUDINARY_TIMEOUT = 0.2
        # The SDK retries an Admin API read three times after a timeout.
        cloudinary_storage.fail_next(4, "timeout", "resource", delay=0.5)

        with pytest.raises(StorageError) as raised:
            with translate_storage_errors("read"):
                storages["scans"].exists("upload/v1/xrays/any.png")

        assert raised.value.timed_out


@pytest.mark.django_db
@pytest.mark.usefixtures("cloudinary_storage")
class TestListResources:
    def test_it_follows_every_page(self, cloudinary_storage, chest_png):
        names = {
            save("scans", random_path("xrays", "png"), chest_png) for _ in range(5)
        }
        storage = storages["scans"]

        pages = list(storage.list_resources("xrays/", "image", "upload", page_size=2))

        assert [len(page) for page in pages] == [2, 2, 1]
        listed = {storage.stored_name(r) for page in pages for r in page}
        assert listed == names
        cursors = [
            entry
            for entry in requests_of(cloudinary_storage, "list")
            if "next_cursor" in entry.get("query", {})
        ]
        assert len(cursors) == 2


class TestStoredFiles:
    def test_it_leaves_cloudinary_files_to_cloudinary(self, api, cloudinary_storage):
        response = api.get("/media/xrays/upload/v1/xrays/a.png")

        assert response.status_code == 404
        assert cloudinary_storage.request_log == []


@pytest.mark.django_db
@pytest.mark.usefixtures("cloudinary_storage")
class TestHealth:
    def test_it_reports_cloudinary_without_a_request(
        self, anonymous, cloudinary_storage
    ):
        response = anonymous.get("/health")

        assert response.status_code == 200
        assert response.json() == {
            "status": "healthy",
            "database": "connected",
            "cloudinary": "configured",
            "storage": "cloudinary",
        }
        assert cloudinary_storage.request_log == []

    def test_deep_check_pings_cloudinary(self, anonymous, cloudinary_storage):
        response = anonymous.get("/health?deep=1")

        assert response.status_code == 200
        assert response.json()["cloudinary"] == "configured"
        assert cloudinary_storage.count("ping") == 2

    @pytest.mark.parametrize("mode", ["5xx", "401"])
    def test_deep_check_reports_failure(self, anonymous, cloudinary_storage, mode):
        cloudinary_storage.fail_next(1, mode, "ping")

        response = anonymous.get("/health?deep=1")

        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy"
        assert body["cloudinary"] == "unreachable"
        assert body["storage_error"].startswith("Storage ping failed")

    def test_deep_check_reports_timeout(self, anonymous, cloudinary_storage, settings):
        settings.CLOUDINARY_TIMEOUT = 0.2
        # The SDK retries an Admin API read three times after a timeout.
        cloudinary_storage.fail_next(4, "timeout", "ping", delay=0.5)
        started = time.monotonic()

        response = anonymous.get("/health?deep=1")

        assert time.monotonic() - started < 2
        assert response.status_code == 503
        assert response.json()["cloudinary"] == "unreachable"
        assert response.json()["storage_error"].startswith("Storage ping timed out")
