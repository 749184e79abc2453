import pytest
from django.contrib.auth.models import Permission
from django.db import DatabaseError

from conftest import store_file, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def unwritable_storage(settings, tmp_path):
    """Point both storages at a folder that cannot be created, and return it."""
    # A regular file where the storage folder's parent should be.
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    location = blocker / "media"
    broken = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": location},
    }
    settings.STORAGES = {**settings.STORAGES, "scans": broken, "documents": broken}
    return location


class TestRoot:
    def test_it_works_without_credentials(self, anonymous):
        response = anonymous.get("/")

        assert response.status_code == 200
        body = response.json()
        assert body["name"] == "Radiologist's Copilot API"
        assert body["version"]
        assert body["links"]["patients"] == "http://testserver/patients"
        assert body["links"]["health"] == "http://testserver/health"


class TestHealth:
    def test_it_works_without_credentials(self, anonymous):
        response = anonymous.get("/health")

        assert response.status_code == 200
        assert response.json() == {
            "status": "healthy",
            "database": "connected",
            "cloudinary": "not configured",
            "storage": "local",
        }

    def test_it_reports_database_failure(self, anonymous, monkeypatch):
        from django.db.backends.utils import CursorWrapper

        def fail(self, sql, params=None):
            raise DatabaseError("connection refused")

        monkeypatch.setattr(CursorWrapper, "execute", fail)

        response = anonymous.get("/health")

        assert response.status_code == 503
        assert response.json()["database"] == "unavailable"
        assert response.json()["status"] == "unhealthy"

    def test_deep_check_pings_storage(self, anonymous):
        response = anonymous.get("/health?deep=1")

        assert response.status_code == 200
        assert response.json()["status"] == "healthy"

    def test_deep_check_reports_storage_failure(self, anonymous, unwritable_storage):
        response = anonymous.get("/health?deep=1")

        assert response.status_code == 503
        assert response.json()["status"] == "unhealthy"
        assert "ping failed" in response.json()["storage_error"]

    def test_it_hides_the_storage_error_from_clients(
        self, anonymous, unwritable_storage, caplog
    ):
        response = anonymous.get("/health?deep=1")

        assert response.status_code == 503
        assert response.json()["storage_error"] == (
            "Storage ping failed. The server log has the error."
        )
        assert str(unwritable_storage) not in response.content.decode()
        assert str(unwritable_storage) in caplog.text


class TestStoredFiles:
    def test_it_requires_authentication(self, api, anonymous, patient, chest_png):
        created = api.post(
            f"/patients/{patient.pk}/upload/scan",
            {"file": upload("a.png", chest_png), "body_part": "CHEST"},
        )
        url = created.json()["scan"]["file_url"]

        response = anonymous.get(url)

        assert response.status_code == 401

    def test_it_requires_view_permission(self, api, radiologist, patient, chest_png):
        created = api.post(
            f"/patients/{patient.pk}/upload/scan",
            {"file": upload("a.png", chest_png), "body_part": "CHEST"},
        )
        radiologist.groups.clear()

        response = api.get(created.json()["scan"]["file_url"])

        assert response.status_code == 403

    def test_it_rejects_path_traversal(self, api, local_storage):
        (local_storage.parent / "secret.txt").write_text("secret")

        response = api.get("/media/xrays/../../secret.txt")

        assert response.status_code == 404

    def test_it_handles_missing_file(self, api):
        response = api.get("/media/reports/missing.pdf")

        assert response.status_code == 404

    def test_it_rejects_a_path_into_another_folder(
        self, api, radiologist, patient, report_pdf
    ):
        created = api.post(
            f"/patients/{patient.pk}/upload/document",
            {"file": upload("a.pdf", report_pdf), "document_name": "Report"},
        )
        name = created.json()["document"]["file_url"].split("/media/")[1]
        radiologist.groups.clear()
        radiologist.user_permissions.add(Permission.objects.get(codename="view_scan"))

        for path in (f"/media/xrays/../{name}", f"/media/xrays/%2e%2e/{name}"):
            response = api.get(path)

            assert response.status_code == 404, path
            assert response.json() == {"detail": f"File xrays/../{name} not found"}

    def test_it_rejects_an_altered_name(self, api, patient, chest_png):
        created = api.post(
            f"/patients/{patient.pk}/upload/scan",
            {"file": upload("a.png", chest_png), "body_part": "CHEST"},
        )
        base = created.json()["scan"]["file_url"].split("/media/xrays/")[1]

        for path in (f"/media/xrays/./{base}", f"/media/xrays//{base}"):
            response = api.get(path)

            assert response.status_code == 404, path
        assert api.get(f"/media/xrays/{base}").status_code == 200

    def test_it_rejects_a_file_without_a_row(self, api, local_storage, chest_png):
        name = store_file("scans", "xrays", "png", chest_png)

        response = api.get(f"/media/{name}")

        assert response.status_code == 404
        assert (local_storage / name).read_bytes() == chest_png


class TestSchema:
    def test_it_requires_authentication(self, anonymous):
        assert anonymous.get("/schema/").status_code == 401

    def test_it_describes_every_endpoint(self, api):
        response = api.get("/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

        assert response.status_code == 200
        paths = response.json()["paths"]
        for path in (
            "/patients",
            "/patients/{id}",
            "/patients/{patient_id}/upload/scan",
            "/patients/{patient_id}/upload/document",
            "/scans",
            "/scans/{id}",
            "/documents",
            "/documents/{id}",
            "/health",
        ):
            assert any(key.rstrip("/") == path for key in paths), path

    def test_swagger_ui_works_offline(self, client, radiologist):
        client.force_login(radiologist)

        response = client.get("/docs/")

        assert response.status_code == 200
        assert b"swagger-ui" in response.content
        assert b"cdn.jsdelivr" not in response.content

    def test_swagger_ui_sends_a_browser_to_login(self, client):
        response = client.get("/docs/", HTTP_ACCEPT="text/html,*/*;q=0.8")

        assert response.status_code == 302
        assert response["Location"] == "/admin/login/?next=/docs/"

    def test_swagger_ui_returns_401_when_html_has_q0(self, client):
        response = client.get("/docs/", HTTP_ACCEPT="application/json, text/html;q=0")

        assert response.status_code == 401

    def test_swagger_ui_login_redirect_varies_on_accept(self, client):
        response = client.get("/docs/", HTTP_ACCEPT="text/html")

        assert "Accept" in response["Vary"]

    def test_swagger_ui_401_varies_on_accept(self, client):
        response = client.get("/docs/")

        assert "Accept" in response["Vary"]

    def test_swagger_ui_returns_401_to_api_clients(self, client):
        response = client.get("/docs/")

        assert response.status_code == 401
        assert response.json()["detail"]


class TestStorageErrors:
    def test_message_hides_server_paths(
        self, api, patient, chest_png, settings, tmp_path
    ):
        # A regular file where the storage folder should be: saving fails.
        blocker = tmp_path / "not-a-folder"
        blocker.write_bytes(b"")
        broken = {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": blocker / "media"},
        }
        settings.STORAGES = {**settings.STORAGES, "scans": broken}

        response = api.post(
            f"/patients/{patient.pk}/upload/scan",
            {"file": upload("a.png", chest_png), "body_part": "CHEST"},
        )

        assert response.status_code == 502
        detail = response.json()["detail"]
        assert detail.startswith("Storage upload failed: ")
        assert str(tmp_path) not in detail
