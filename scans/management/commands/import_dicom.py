from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from scans.importer import find_files, import_folder
from scans.models import Scan


class Command(BaseCommand):
    help = (
        "Import every DICOM file below FOLDER (a PACS export or a DICOMDIR tree) "
        "as a scan of the patient whose MRN equals its PatientID. Files already "
        "imported (same SOP Instance UID) are skipped, so a second run resumes."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path, help="Folder to walk.")
        parser.add_argument(
            "--create-patients",
            action="store_true",
            help="Create missing patients from PatientID, PatientName, PatientAge "
            "or PatientBirthDate, and PatientSex.",
        )
        parser.add_argument(
            "--body-part",
            default="",
            help="Body part for files whose header has no BodyPartExamined; "
            "without it such files fail.",
        )
        parser.add_argument(
            "--user",
            help="Username recorded as the uploader of the imported scans.",
        )

    def handle(self, *args, folder, create_patients, body_part, user, **options):
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder.")
        max_length = Scan._meta.get_field("body_part").max_length
        if len(body_part) > max_length:
            raise CommandError(
                f"--body-part is {len(body_part)} characters long; the maximum "
                f"is {max_length}."
            )
        uploader = None
        if user:
            uploader = get_user_model().objects.filter(username=user).first()
            if uploader is None:
                raise CommandError(f"User '{user}' not found.")

        files = find_files(folder)
        with tqdm(
            total=len(files), unit="file", desc="Importing", disable=None
        ) as progress:
            report = import_folder(
                files,
                create_patients=create_patients,
                body_part=body_part,
                user=uploader,
                progress=progress,
            )

        self.stdout.write(
            f"Imported {len(report.imported)}, skipped {len(report.skipped)}, "
            f"failed {len(report.failed)} of {len(files)} files."
        )
        for path, reason in report.skipped:
            self.stdout.write(f"skipped {path.relative_to(folder)}: {reason}")
        for path, reason in report.failed:
            self.stdout.write(f"failed {path.relative_to(folder)}: {reason}")
