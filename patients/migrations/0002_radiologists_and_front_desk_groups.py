"""Create the "Radiologists" and "Front desk" groups with their permissions.

The permissions are created first, because Django creates them only after the
last migration (post_migrate), and a fresh database has none of them yet.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

# Permission codenames per group, as (app label, codename).
GROUPS = {
    "Radiologists": [
        ("patients", "view_patient"),
        ("scans", "view_scan"),
        ("scans", "add_scan"),
        ("scans", "delete_scan"),
        ("documents", "view_patientdocument"),
        ("documents", "add_patientdocument"),
        ("documents", "delete_patientdocument"),
    ],
    "Front desk": [
        ("patients", "view_patient"),
        ("patients", "add_patient"),
        ("patients", "change_patient"),
        ("scans", "view_scan"),
        ("documents", "view_patientdocument"),
    ],
}


def create_groups(apps, schema_editor):
    database = schema_editor.connection.alias
    for app_label in ("patients", "scans", "documents"):
        create_permissions(
            global_apps.get_app_config(app_label),
            verbosity=0,
            using=database,
            apps=apps,
        )

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.using(database).get_or_create(name=name)
        permissions = [
            Permission.objects.using(database).get(
                content_type__app_label=app_label, codename=codename
            )
            for app_label, codename in codenames
        ]
        group.permissions.add(*permissions)


def delete_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    database = schema_editor.connection.alias
    Group.objects.using(database).filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("patients", "0001_initial"),
        ("scans", "0001_initial"),
        ("documents", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_groups, delete_groups),
    ]
