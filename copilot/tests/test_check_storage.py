"""The command check_storage, on Cloudinary and on the local disk."""

import os
import time

import pytest
from django.core.files.storage import storages
from django.core.management.base import CommandError

from conftest import run_command as run
from conftest import store_file as store
from documents.models import PatientDocument
from scans.models import Scan

pytestmark = pytest.mark.django_db


def make_old(server):
    """Age every stored resource, as if uploaded two hours ago."""
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200))
    for resource in server.resources:
        resource.created_at = old


@pytest.mark.usefixtures("cloudinary_storage")
class TestCheckStorage:
    @pytest.fixture
    def files(self, cloudinary_storage, settings, patient, chest_png, report_pdf):
        """A referenced scan and document, and one orphan of each kind."""
        scan = Scan.objects.create(
            patient=patient,
            body_part="CHEST",
            file=store("scans", "xrays", "png", chest_png),
            preview=store("scans", "xrays/previews", "png", chest_png),
        )
        document = PatientDocument.objects.create(
            patient=patient,
            document_name="Lab",
            file=store("documents", "reports", "pdf", report_pdf),
        )
        orphans = [
            store("scans", "xrays", "dcm", b"DICM"),
            store("documents", "reports", "pdf", report_pdf),
        ]
        settings.CLOUDINARY_DELIVERY_TYPE = "authenticated"
        orphans.append(store("scans", "xrays/thumbnails", "png", chest_png))
        make_old(cloudinary_storage)
        return scan, document, orphans

    def test_it_reports_orphans_and_missing_files(self, cloudinary_storage, files):
        scan, document, orphans = files
        missing = "upload/v1/reports/missing.pdf"
        PatientDocument.objects.filter(pk=document.pk).update(file=missing)

        output = run("check_storage", "--no-progress")

        assert f"Orphan: scans {orphans[0]}\n" in output
        assert f"Orphan: documents {orphans[1]}\n" in output
        assert f"Orphan: scans {orphans[2]}\n" in output
        assert f"Orphan: documents {document.file.name}\n" in output
        assert (
            f"Missing: documents documents.patientdocument {document.pk} file "
            f"{missing}\n" in output
        )
        assert output.endswith("4 orphans, 1 rows with a missing file.\n")
        assert len(cloudinary_storage.resources) == 6
        assert cloudinary_storage.count("destroy") == 0

    def test_it_reports_nothing_when_consistent(self, cloudinary_storage, files):
        for name in files[2]:
            storages["scans"].delete(name)

        output = run("check_storage", "--no-progress")

        assert output == "0 orphans, 0 rows with a missing file.\n"

    def test_it_deletes_orphans(self, cloudinary_storage, files):
        scan, document, orphans = files

        output = run("check_storage", "--delete", "--no-progress")

        assert output.endswith("3 orphans deleted, 0 rows with a missing file.\n")
        remaining = {
            storages["scans"].stored_name(resource)
            for resource in cloudinary_storage.resources
        }
        assert remaining == {scan.file.name, scan.preview.name, document.file.name}

    def test_it_leaves_recent_files(self, cloudinary_storage, files, chest_png):
        recent = store("scans", "xrays", "png", chest_png)

        output = run("check_storage", "--delete", "--no-progress")

        assert f"Recent, not checked: scans {recent}\n" in output
        assert storages["scans"].exists(recent)

    def test_it_lists_every_type(self, cloudinary_storage, patient, report_pdf):
        names = [store("documents", "reports", "pdf", report_pdf) for _ in range(2)]
        make_old(cloudinary_storage)
        PatientDocument.objects.create(
            patient=patient, document_name="L", file=names[0]
        )

        output = run("check_storage", "--no-progress")

        assert output == (
            f"Orphan: documents {names[1]}\n1 orphans, 0 rows with a missing file.\n"
        )
        listed = {
            (entry["path"], entry["query"]["prefix"])
            for entry in cloudinary_storage.request_log
            if entry["operation"] == "list"
        }
        assert listed == {
            (f"/v1_1/cloud/resources/{resource_type}/{delivery_type}", prefix)
            for resource_type in ("image", "raw")
            for delivery_type in ("upload", "authenticated")
            for prefix in ("xrays/", "reports/")
        }

    def test_it_reports_listing_failure(self, cloudinary_storage):
        cloudinary_storage.fail_next(1, "5xx", "list")

        with pytest.raises(CommandError, match="Storage list failed"):
            run("check_storage", "--no-progress")


class TestCheckStorageLocally:
    def test_it_walks_media_root(self, local_storage, patient, chest_png):
        referenced = store("scans", "xrays", "png", chest_png)
        orphan = store("scans", "xrays/previews", "png", chest_png)
        Scan.objects.create(patient=patient, body_part="CHEST", file=referenced)
        Scan.objects.create(patient=patient, body_part="CHEST", file="xrays/gone.png")
        two_hours_ago = time.time() - 7200
        os.utime(local_storage / orphan, (two_hours_ago, two_hours_ago))

        output = run("check_storage", "--delete", "--no-progress")

        assert f"Orphan: scans {orphan}\nDeleted: scans {orphan}\n" in output
        assert "Missing: scans scans.scan" in output
        assert "file xrays/gone.png\n" in output
        assert (local_storage / referenced).exists()
        assert not (local_storage / orphan).exists()
