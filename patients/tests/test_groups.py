import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

RADIOLOGISTS = {
    "patients.view_patient",
    "scans.view_scan",
    "scans.add_scan",
    "scans.delete_scan",
    "documents.view_patientdocument",
    "documents.add_patientdocument",
    "documents.delete_patientdocument",
}
FRONT_DESK = {
    "patients.view_patient",
    "patients.add_patient",
    "patients.change_patient",
    "scans.view_scan",
    "documents.view_patientdocument",
}


def group_permissions(name):
    rows = Group.objects.get(name=name).permissions.values_list(
        "content_type__app_label", "codename"
    )
    return {f"{app_label}.{codename}" for app_label, codename in rows}


@pytest.mark.django_db
class TestGroups:
    def test_radiologists_view_everything_and_upload(self):
        assert group_permissions("Radiologists") == RADIOLOGISTS

    def test_front_desk_edits_patients_and_views_files(self):
        assert group_permissions("Front desk") == FRONT_DESK


@pytest.mark.django_db(transaction=True)
class TestGroupsMigration:
    migration = "0002_radiologists_and_front_desk_groups"

    def test_it_runs_backward_and_forward(self):
        call_command("migrate", "patients", "0001", verbosity=0)
        assert not Group.objects.filter(name__in=["Radiologists", "Front desk"])

        call_command("migrate", "patients", self.migration, verbosity=0)
        assert group_permissions("Radiologists") == RADIOLOGISTS
        assert group_permissions("Front desk") == FRONT_DESK

    def test_it_creates_missing_permissions(self):
        call_command("migrate", "patients", "0001", verbosity=0)
        Permission.objects.filter(
            content_type__app_label__in=["patients", "scans", "documents"]
        ).delete()

        call_command("migrate", "patients", self.migration, verbosity=0)

        assert group_permissions("Radiologists") == RADIOLOGISTS
        assert group_permissions("Front desk") == FRONT_DESK

    def test_it_keeps_other_groups(self):
        Group.objects.create(name="Auditors")

        call_command("migrate", "patients", "0001", verbosity=0)

        assert list(Group.objects.values_list("name", flat=True)) == ["Auditors"]
