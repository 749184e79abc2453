"""The command retry_file_deletions, on Cloudinary and on the local disk."""

import threading
from datetime import timedelta

import pytest
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from conftest import run_command as run
from conftest import store_file as store
from copilot.models import PendingFileDeletion

pytestmark = pytest.mark.django_db


def pending(alias, name, age=timedelta(minutes=5)):
    return PendingFileDeletion.objects.create(
        storage_alias=alias, name=name, created_at=timezone.now() - age
    )


@pytest.mark.usefixtures("cloudinary_storage")
class TestRetryFileDeletions:
    def test_it_deletes_pending_files(self, cloudinary_storage, chest_png, report_pdf):
        pending("scans", store("scans", "xrays", "png", chest_png))
        pending("documents", store("documents", "reports", "pdf", report_pdf))

        output = run("retry_file_deletions")

        assert output == "Deleted 2 stored files.\n"
        assert not PendingFileDeletion.objects.exists()
        assert cloudinary_storage.resources == []

    def test_it_counts_not_found_as_done(self, cloudinary_storage):
        pending("scans", "upload/v1/xrays/gone.dcm")

        run("retry_file_deletions")

        assert not PendingFileDeletion.objects.exists()
        assert cloudinary_storage.count("destroy") == 1

    @pytest.mark.parametrize("mode", ["5xx", "420", "401"])
    def test_it_keeps_failed_rows(self, cloudinary_storage, chest_png, mode):
        name = store("scans", "xrays", "png", chest_png)
        row = pending("scans", name)
        cloudinary_storage.fail_next(1, mode, "destroy")

        with pytest.raises(CommandError, match="1 deletes failed"):
            run("retry_file_deletions")

        row.refresh_from_db()
        assert row.attempts == 1
        assert row.last_error.startswith("Storage delete failed")
        assert row.last_attempt_at is not None
        assert len(cloudinary_storage.resources) == 1

    def test_it_keeps_timed_out_rows(self, cloudinary_storage, chest_png):
        row = pending("scans", store("scans", "xrays", "png", chest_png))
        cloudinary_storage.fail_next(1, "timeout", "destroy")

        with pytest.raises(CommandError):
            run("retry_file_deletions")

        row.refresh_from_db()
        assert row.attempts == 1
        assert row.last_error.startswith("Storage delete timed out")

    def test_it_retries_the_next_run(self, cloudinary_storage, chest_png):
        row = pending("scans", store("scans", "xrays", "png", chest_png))
        cloudinary_storage.fail_next(1, "5xx", "destroy")
        with pytest.raises(CommandError):
            run("retry_file_deletions")

        run("retry_file_deletions")

        assert not PendingFileDeletion.objects.filter(pk=row.pk).exists()
        assert cloudinary_storage.resources == []

    def test_it_is_idempotent(self, cloudinary_storage, chest_png):
        pending("scans", store("scans", "xrays", "png", chest_png))
        run("retry_file_deletions")

        output = run("retry_file_deletions")

        assert output == "Deleted 0 stored files.\n"
        assert cloudinary_storage.count("destroy") == 1

    def test_it_leaves_recent_rows(self, cloudinary_storage, chest_png):
        row = pending("scans", store("scans", "xrays", "png", chest_png), timedelta())

        run("retry_file_deletions")

        assert PendingFileDeletion.objects.filter(pk=row.pk).exists()
        assert cloudinary_storage.count("destroy") == 0

    def test_it_respects_the_limit(self, cloudinary_storage):
        pending("scans", "upload/v1/xrays/a.png")
        pending("scans", "upload/v1/xrays/b.png")

        run("retry_file_deletions", "--limit", "1")

        assert PendingFileDeletion.objects.get().name == "upload/v1/xrays/b.png"


class TestRetryFileDeletionsLocally:
    def test_it_deletes_local_files(self, local_storage):
        name = store("scans", "xrays", "png", b"\x89PNG\r\n\x1a\n")
        pending("scans", name)

        run("retry_file_deletions")

        assert not PendingFileDeletion.objects.exists()
        assert not (local_storage / name).exists()


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs row locks (PostgreSQL)"
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("cloudinary_storage")
class TestRetryFileDeletionsConcurrently:
    def test_it_skips_rows_another_run_holds(self, cloudinary_storage):
        locked_row = pending("scans", "upload/v1/xrays/held.png")
        free_row = pending("scans", "upload/v1/xrays/free.png")
        locked, release = threading.Event(), threading.Event()

        def other_run():
            with transaction.atomic():
                PendingFileDeletion.objects.select_for_update().get(pk=locked_row.pk)
                locked.set()
                release.wait(10)
            connection.close()

        thread = threading.Thread(target=other_run)
        thread.start()
        try:
            assert locked.wait(10)
            output = run("retry_file_deletions")
        finally:
            release.set()
            thread.join()

        assert output == "Deleted 1 stored files.\n"
        assert list(PendingFileDeletion.objects.values_list("pk", flat=True)) == [
            locked_row.pk
        ]
        assert not PendingFileDeletion.objects.filter(pk=free_row.pk).exists()
        (destroy,) = [
            entry
            for entry in cloudinary_storage.request_log
            if entry["operation"] == "destroy"
        ]
        assert destroy["params"]["public_id"] == "xrays/free"
