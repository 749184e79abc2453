import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from conftest import dicom_test_file, make_pdf, sha256, stored_files
from patients.models import Patient
from scans.models import Scan

pytestmark = pytest.mark.django_db


@pytest.fixture
def export(tmp_path):
    """A folder like a PACS export: valid DICOM files, and files that are not."""
    folder = tmp_path / "export"
    (folder / "study1" / "series1").mkdir(parents=True)
    (folder / "study2").mkdir()
    shutil.copy(
        dicom_test_file("RG1_UNCR.dcm"), folder / "study1" / "series1" / "a.dcm"
    )
    # A file without extension, as DICOMDIR trees store them.
    shutil.copy(
        dicom_test_file("RG3_UNCR.dcm"), folder / "study1" / "series1" / "IM0001"
    )
    shutil.copy(dicom_test_file("CT_small.dcm"), folder / "study2" / "ct.dcm")
    shutil.copy(dicom_test_file("MR_truncated.dcm"), folder / "study2" / "mr.dcm")
    shutil.copy(dicom_test_file("rtplan.dcm"), folder / "study2" / "plan.dcm")
    shutil.copy(dicom_test_file("DICOMDIR"), folder / "DICOMDIR")
    (folder / "study2" / "report.pdf").write_bytes(make_pdf())
    (folder / "notes.txt").write_text("Exported by the PACS.\n")
    return folder


def run(folder, *args):
    output = StringIO()
    call_command("import_dicom", str(folder), *args, stdout=output)
    return output.getvalue()


class TestImportDicom:
    def test_it_imports_for_known_patients(self, export, local_storage):
        Patient.objects.create(mrn="9RG1", name="Chest Patient")

        output = run(export)

        scan = Scan.objects.get()
        assert scan.patient.mrn == "9RG1"
        assert scan.body_part == "CHEST"
        assert scan.modality == "CR"
        assert scan.sha256 == sha256(dicom_test_file("RG1_UNCR.dcm").read_bytes())
        assert stored_files(local_storage)[scan.file.name] == (
            dicom_test_file("RG1_UNCR.dcm").read_bytes()
        )
        assert scan.preview.name in stored_files(local_storage)
        assert "Imported 1, skipped 0, failed 6 of 7 files." in output
        assert "failed study1/series1/IM0001: No patient has the file's PatientID" in (
            output
        )

    def test_it_creates_patients(self, export):
        output = run(export, "--create-patients", "--body-part", "head")

        assert "Imported 3, skipped 0, failed 4 of 7 files." in output
        assert set(Patient.objects.values_list("mrn", flat=True)) == {
            "9RG1",
            "11RG3",
            "1CT1",
        }
        patient = Patient.objects.get(mrn="9RG1")
        assert patient.name == "RG1 CompressedSamples"
        assert patient.gender == "Female"
        assert Patient.objects.get(mrn="1CT1").age == 0
        assert Patient.objects.get(mrn="1CT1").gender == "Other"
        assert Scan.objects.count() == 3
        assert Scan.objects.get(patient__mrn="1CT1").body_part == "HEAD"
        assert Scan.objects.get(patient__mrn="9RG1").body_part == "CHEST"

    def test_it_requires_a_body_part(self, export):
        output = run(export, "--create-patients")

        assert "Imported 2, skipped 0, failed 5 of 7 files." in output
        assert "failed study2/ct.dcm: body_part: This field is required because" in (
            output
        )

    def test_it_reports_each_failure(self, export):
        output = run(export, "--create-patients")

        assert "failed study2/mr.dcm: The DICOM file is truncated" in output
        assert "failed study2/plan.dcm: The DICOM file has no pixel data" in output
        assert "failed study2/report.pdf: The file is not a DICOM data set." in output
        assert "failed notes.txt: The file is not a DICOM data set." in output
        assert "DICOMDIR" not in output

    def test_second_run_skips_imported_files(self, export, local_storage):
        run(export, "--create-patients", "--body-part", "HEAD")
        files_after_first_run = stored_files(local_storage)

        output = run(export, "--create-patients", "--body-part", "HEAD")

        assert "Imported 0, skipped 3, failed 4 of 7 files." in output
        assert "already imported" in output
        assert Scan.objects.count() == 3
        assert Patient.objects.count() == 3
        assert stored_files(local_storage) == files_after_first_run

    def test_it_records_the_user(self, export, radiologist):
        run(export, "--create-patients", "--user", "radiologist")

        assert set(Scan.objects.values_list("uploaded_by", flat=True)) == {
            radiologist.pk
        }

    def test_it_rejects_unknown_user(self, export):
        with pytest.raises(CommandError, match="User 'nobody' not found"):
            run(export, "--user", "nobody")

    def test_it_rejects_long_body_part(self, export):
        with pytest.raises(CommandError, match="--body-part is 101 characters"):
            run(export, "--body-part", "X" * 101)

        assert not Scan.objects.exists()

    def test_it_rejects_missing_folder(self, tmp_path):
        with pytest.raises(CommandError, match="is not a folder"):
            run(tmp_path / "missing")

    def test_output_hides_patient_names(self, export):
        output = run(export, "--create-patients")

        assert "CompressedSamples" not in output
