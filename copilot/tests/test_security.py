import io
import logging
import os
import secrets
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import upload
from copilot.authentication import permission_cache
from copilot.models import AuditEntry, PermissionsVersion
from copilot.requestid import RequestIDFilter

BASE_DIR = Path(__file__).resolve().parents[2]
NAME = "Zebediah Quillfeather"
MRN = "MRN-ZQ-7731"


@pytest.fixture
def rates(settings):
    """Set API rates for one test, on an empty rate-limit cache."""
    cache.clear()

    def set_rates(**rates):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                **rates,
            },
        }

    yield set_rates
    cache.clear()


@pytest.fixture
def log_output():
    """Capture every log line as the production handler writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIDFilter())
    handler.setFormatter(
        logging.Formatter(django_settings.LOGGING["formatters"]["plain"]["format"])
    )
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def token_login(client, username, password):
    return client.post(
        "/auth/token", {"username": username, "password": password}, format="json"
    )


@pytest.mark.django_db
class TestObtainToken:
    def test_it_returns_the_token(self, anonymous, radiologist):
        response = token_login(anonymous, "radiologist", "x-ray-pass-1")

        assert response.status_code == 200
        assert response.json() == {"token": Token.objects.get(user=radiologist).key}
        entry = AuditEntry.objects.get()
        assert (entry.action, entry.user_id, entry.route) == (
            "login",
            radiologist.pk,
            "POST /auth/token",
        )

    def test_it_rejects_a_wrong_password(self, anonymous, radiologist):
        response = token_login(anonymous, "radiologist", "wrong")

        assert response.status_code == 400
        assert not Token.objects.exists()
        entry = AuditEntry.objects.get()
        assert (entry.action, entry.outcome, entry.username) == (
            "login_failed",
            "failed",
            "radiologist",
        )

    def test_it_locks_out_after_repeated_failures(self, anonymous, radiologist):
        for _ in range(django_settings.AXES_FAILURE_LIMIT):
            token_login(anonymous, "radiologist", "wrong")

        response = token_login(anonymous, "radiologist", "x-ray-pass-1")

        assert response.status_code == 429
        assert response.json() == {"detail": "Too many failed logins. Try again later."}
        assert not Token.objects.exists()
        assert AuditEntry.objects.order_by("id").last().outcome == "locked_out"

    def test_it_throttles_requests_per_address(self, anonymous, radiologist, rates):
        rates(login="2/minute")
        token_login(anonymous, "radiologist", "x-ray-pass-1")
        token_login(anonymous, "radiologist", "x-ray-pass-1")

        response = token_login(anonymous, "radiologist", "x-ray-pass-1")

        assert response.status_code == 429


@pytest.mark.django_db
class TestAdminLogin:
    def test_it_locks_out_after_repeated_failures(self, client, admin_user):
        for _ in range(django_settings.AXES_FAILURE_LIMIT):
            client.post("/admin/login/", {"username": "admin", "password": "wrong"})

        response = client.post(
            "/admin/login/", {"username": "admin", "password": "password"}
        )

        assert response.status_code == 429
        assert "_auth_user_id" not in client.session


@pytest.mark.django_db
class TestApiThrottle:
    def test_it_limits_requests_per_user(self, api, rates):
        rates(user="2/minute")
        api.get("/patients")
        api.get("/patients")

        response = api.get("/patients")

        assert response.status_code == 429
        assert AuditEntry.objects.order_by("id").last().outcome == "throttled"

    def test_it_counts_users_apart(self, api, rates, django_user_model):
        rates(user="1/minute")
        other = APIClient()
        other.force_authenticate(django_user_model.objects.create_user("other"))
        api.get("/patients")

        assert other.get("/patients").status_code == 403

    def test_it_does_not_limit_health(self, anonymous, rates):
        rates(anon="1/minute")
        anonymous.get("/health")

        assert anonymous.get("/health").status_code == 200


@pytest.mark.django_db
class TestTokenPermissions:
    """Permission labels kept per token follow every change of permissions."""

    @pytest.fixture(autouse=True)
    def empty_cache(self):
        permission_cache.clear()
        yield
        permission_cache.clear()

    def group(self, user):
        return user.groups.get()

    @contextmanager
    def before_reload(self, action):
        """Run action() just before the query that reloads changed permissions."""
        queries = []

        def run_first(execute, sql, params, many, context):
            if "permissions_version" in sql:
                queries.append(sql)
                if len(queries) == 2:
                    action()
            return execute(sql, params, many, context)

        with connection.execute_wrapper(run_first):
            yield

    def test_it_applies_a_revoked_group_permission_at_once(self, api, radiologist):
        assert api.get("/patients").status_code == 200

        self.group(radiologist).permissions.remove(
            Permission.objects.get(codename="view_patient")
        )

        assert api.get("/patients").status_code == 403

    def test_it_applies_a_granted_permission_at_once(self, django_user_model):
        user = django_user_model.objects.create_user("desk", password="x-ray-pass-1")
        client = APIClient()
        client.credentials(
            HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}"
        )
        assert client.get("/patients").status_code == 403

        user.user_permissions.add(Permission.objects.get(codename="view_patient"))

        assert client.get("/patients").status_code == 200

    def test_it_applies_a_left_group_at_once(self, api, radiologist):
        assert api.get("/patients").status_code == 200

        radiologist.groups.clear()

        assert api.get("/patients").status_code == 403

    def test_it_applies_a_deleted_group_at_once(self, api, radiologist):
        assert api.get("/patients").status_code == 200

        self.group(radiologist).delete()

        assert api.get("/patients").status_code == 403

    def test_it_applies_a_deleted_membership_row_at_once(
        self, api, radiologist, django_user_model
    ):
        assert api.get("/patients").status_code == 200

        django_user_model.groups.through.objects.filter(user=radiologist).delete()

        assert api.get("/patients").status_code == 403

    def test_it_applies_a_deleted_permission_row(self, api):
        assert api.get("/patients").status_code == 200

        Group.permissions.through.objects.filter(
            permission__codename="view_patient"
        ).delete()

        assert api.get("/patients").status_code == 403

    def test_it_applies_an_sql_change(self, api, radiologist):
        assert api.get("/patients").status_code == 200

        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM auth_user_groups WHERE user_id = %s", [radiologist.pk]
            )

        assert api.get("/patients").status_code == 403

    def test_it_applies_a_renamed_permission_at_once(self, api):
        assert api.get("/patients").status_code == 200

        Permission.objects.filter(codename="view_patient").update(
            codename="view_patient_renamed"
        )

        assert api.get("/patients").status_code == 403

    def test_it_rejects_a_deleted_token(self, api, token):
        assert api.get("/patients").status_code == 200

        Token.objects.filter(key=token).delete()

        assert api.get("/patients").status_code == 401

    def test_it_rejects_a_deactivated_user(self, api, radiologist):
        assert api.get("/patients").status_code == 200

        radiologist.is_active = False
        radiologist.save()

        assert api.get("/patients").status_code == 401

    def test_it_reads_kept_permissions_in_the_token_query(self, api):
        api.get("/patients")

        with CaptureQueriesContext(connection) as queries:
            assert api.get("/patients").status_code == 200

        token_queries = [q["sql"] for q in queries if "authtoken_token" in q["sql"]]
        assert len(token_queries) == 1
        assert "auth_permission" not in token_queries[0]

    def test_it_rejects_a_user_deleted_during_a_reload(self, api, radiologist):
        assert api.get("/patients").status_code == 200
        radiologist.user_permissions.add(Permission.objects.get(codename="view_user"))

        with self.before_reload(radiologist.delete):
            response = api.get("/patients")

        assert response.status_code == 401

    def test_it_reloads_the_authenticated_users_permissions(
        self, api, token, radiologist, django_user_model
    ):
        assert api.get("/patients").status_code == 200
        radiologist.user_permissions.add(Permission.objects.get(codename="view_user"))
        desk = django_user_model.objects.create_user("desk", password="x-ray-pass-1")

        with self.before_reload(
            lambda: Token.objects.filter(key=token).update(user=desk)
        ):
            response = api.get("/patients")

        assert response.status_code == 200

    def test_it_reads_a_codename_with_a_comma(self, django_user_model):
        user = django_user_model.objects.create_user("desk", password="x-ray-pass-1")
        user.user_permissions.add(
            Permission.objects.create(
                content_type=ContentType.objects.get_for_model(django_user_model),
                codename="note,patients.view_patient",
                name="Can note",
            )
        )
        client = APIClient()
        client.credentials(
            HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}"
        )

        assert client.get("/patients").status_code == 403

    def test_it_keeps_nothing_without_a_version(self, api, token):
        PermissionsVersion.objects.all().delete()

        assert api.get("/patients").status_code == 200
        assert permission_cache.get(token) is None

    def test_it_keeps_no_token(self, api, token):
        api.get("/patients")

        assert permission_cache.get(token) is not None
        assert token not in repr(permission_cache._entries)


@pytest.mark.django_db
class TestRotateToken:
    def test_it_replaces_the_token(self, radiologist, token):
        out = io.StringIO()

        call_command("rotate_token", "radiologist", stdout=out)

        new = Token.objects.get(user=radiologist).key
        assert new != token
        assert out.getvalue().strip() == new
        entry = AuditEntry.objects.get(action="token_rotated")
        assert (entry.object_type, entry.object_id) == (
            "auth.user",
            str(radiologist.pk),
        )

    def test_it_revokes_the_token(self, radiologist, token):
        call_command("rotate_token", "radiologist", "--revoke", stdout=io.StringIO())

        assert not Token.objects.filter(user=radiologist).exists()
        assert AuditEntry.objects.filter(action="token_revoked").count() == 1

    def test_it_rejects_an_unknown_user(self, db):
        with pytest.raises(CommandError, match="No user named 'nobody'"):
            call_command("rotate_token", "nobody")


@pytest.mark.django_db
class TestRequestId:
    def test_it_sets_a_new_id(self, anonymous):
        response = anonymous.get("/health")

        assert len(response["X-Request-ID"]) == 32

    def test_it_keeps_a_sane_incoming_id(self, anonymous):
        response = anonymous.get("/health", HTTP_X_REQUEST_ID="lb-0123456789abcdef")

        assert response["X-Request-ID"] == "lb-0123456789abcdef"

    @pytest.mark.parametrize("incoming", ["short", "a b c d e f g h", "x" * 65, "a\nb"])
    def test_it_replaces_an_odd_incoming_id(self, anonymous, incoming):
        response = anonymous.get("/health", HTTP_X_REQUEST_ID=incoming)

        assert response["X-Request-ID"] != incoming
        assert len(response["X-Request-ID"]) == 32


@pytest.mark.django_db
class TestErrors:
    def test_it_hides_an_unexpected_error(self, anonymous, monkeypatch, log_output):
        def broken(alias):
            raise RuntimeError("disk on fire")

        monkeypatch.setattr("copilot.views.backend_name", broken)

        response = anonymous.get("/health")

        request_id = response["X-Request-ID"]
        assert response.status_code == 500
        assert response.json() == {
            "detail": "Internal server error.",
            "request_id": request_id,
        }
        assert "Traceback" not in response.content.decode()
        logged = log_output.getvalue()
        line = next(x for x in logged.splitlines() if "unexpected error" in x)
        assert f"request_id={request_id}" in line
        assert "Traceback" in logged
        assert "RuntimeError: disk on fire" in logged

    def test_it_answers_an_unknown_url_with_json(self, anonymous):
        response = anonymous.get("/no-such-page")

        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


@pytest.mark.django_db
class TestLogs:
    def test_they_carry_no_patient_name_or_mrn(
        self, api, log_output, chest_jpeg, report_pdf
    ):
        pid = api.post("/patients", {"mrn": MRN, "name": NAME}, format="json").json()[
            "id"
        ]
        scan = api.post(
            f"/patients/{pid}/upload/scan",
            {"file": upload("x.jpg", chest_jpeg, "image/jpeg"), "body_part": "CHEST"},
            format="multipart",
        ).json()["scan"]
        api.post(
            f"/patients/{pid}/upload/document",
            {"file": upload("r.pdf", report_pdf), "document_name": "Labs"},
            format="multipart",
        )
        api.get(f"/patients/{pid}")
        api.get(f"/patients?search={NAME.split()[0]}")
        api.patch(f"/patients/{pid}", {"age": 40}, format="json")
        api.delete(f"/scans/{scan['id']}")
        failed = api.post(
            f"/patients/{pid}/upload/scan",
            {"file": upload("x.exe", b"MZ"), "body_part": "CHEST"},
            format="multipart",
        )
        missing = api.get(f"/patients/999999?search={NAME.split()[0]}")

        assert (failed.status_code, missing.status_code) == (400, 404)
        logged = log_output.getvalue()
        assert f"stored scan scan_id={scan['id']} patient_id={pid}" in logged
        not_found = [x for x in logged.splitlines() if "Not Found: " in x]
        assert not_found
        assert all(x.endswith("Not Found: /patients/999999") for x in not_found)
        for secret in (NAME, *NAME.split(), MRN):
            assert secret.lower() not in logged.lower()


class TestCheckDeploy:
    def check(self, **overrides):
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SECURE_", "SESSION_", "CSRF_", "BEHIND_", "DJANGO"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="copilot.settings",
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            **overrides,
        )
        return subprocess.run(
            [
                sys.executable,
                "manage.py",
                "check",
                "--deploy",
                "--fail-level",
                "WARNING",
            ],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_it_reports_no_warnings(self):
        result = self.check()

        assert result.returncode == 0, result.stderr
        assert "System check identified no issues (0 silenced)." in result.stdout

    def test_it_reports_no_warnings_behind_a_redirecting_proxy(self):
        result = self.check(BEHIND_TLS_PROXY="true", SECURE_SSL_REDIRECT="false")

        assert result.returncode == 0, result.stderr

    def test_it_reports_a_weakened_setting(self):
        result = self.check(SECURE_HSTS_SECONDS="0")

        assert result.returncode != 0
        assert "security.W004" in result.stderr
