"""Compare the stored files with the rows that reference them."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.apps import apps
from django.core.files.storage import storages
from django.core.management.base import BaseCommand, CommandError
from django.db import models
from tqdm import tqdm

from copilot.storage import StorageAlias, StorageError, translate_storage_errors

# The folder of each storage alias that contains the files of its rows.
FOLDERS = {"scans": "xrays", "documents": "reports"}
# The resource types and delivery types in use, each listed separately.
RESOURCE_TYPES = ("image", "raw")
DELIVERY_TYPES = ("upload", "authenticated")


class Command(BaseCommand):
    help = (
        "Report stored files that no row references (orphans) and rows whose "
        "file is missing. Orphans are deleted only with --delete."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--delete", action="store_true", help="Delete the orphans found."
        )
        parser.add_argument(
            "--min-age",
            type=int,
            default=3600,
            help=(
                "Count a file as an orphan only when it is older than this many "
                "seconds, so uploads in progress are left alone (default 3600)."
            ),
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Show no progress bars."
        )

    def handle(self, *args, **options):
        try:
            self.compare(**options)
        except StorageError as error:
            raise CommandError(str(error)) from error

    def compare(self, *, delete, min_age, no_progress, **options):
        self.progress = not no_progress
        cutoff = datetime.now(UTC) - timedelta(seconds=min_age)
        references = referenced_names()
        orphan_count = missing_count = 0

        for alias, folder in FOLDERS.items():
            storage = storages[alias]
            stored = self.list_stored(storage, folder)
            referenced = {
                key_of(storage, name): where
                for name, where in references.get(alias, {}).items()
            }

            orphans = [
                (name, created)
                for key, (name, created) in sorted(stored.items())
                if key not in referenced
            ]
            for name, created in orphans:
                if created is not None and created > cutoff:
                    self.stdout.write(f"Recent, not checked: {alias} {name}")
                    continue
                orphan_count += 1
                self.stdout.write(f"Orphan: {alias} {name}")
                if delete:
                    with translate_storage_errors("delete"):
                        storage.delete(name)
                    self.stdout.write(f"Deleted: {alias} {name}")

            for key, where in sorted(referenced.items(), key=lambda item: item[1]):
                if key not in stored:
                    missing_count += 1
                    self.stdout.write(f"Missing: {alias} {where}")

        self.stdout.write(
            f"{orphan_count} orphans{' deleted' if delete else ''}, "
            f"{missing_count} rows with a missing file."
        )

    def list_stored(self, storage, folder):
        """Return {key: (name, created)} of every file stored under `folder`."""
        if hasattr(storage, "list_resources"):
            return self.list_cloudinary(storage, folder)
        return self.list_local(storage, folder)

    def list_cloudinary(self, storage, folder):
        stored = {}
        for resource_type in RESOURCE_TYPES:
            for delivery_type in DELIVERY_TYPES:
                bar = tqdm(
                    desc=f"{folder}/ {resource_type}/{delivery_type}",
                    unit=" resources",
                    disable=not self.progress,
                    leave=False,
                )
                with bar, translate_storage_errors("list"):
                    pages = storage.list_resources(
                        f"{folder}/", resource_type, delivery_type
                    )
                    for page in pages:
                        for resource in page:
                            created = datetime.fromisoformat(resource.created_at)
                            name = storage.stored_name(resource)
                            stored[resource.key] = (name, created)
                        bar.update(len(page))
        return stored

    def list_local(self, storage, folder):
        root = Path(storage.location)
        stored = {}
        paths = (root / folder).rglob("*")
        for path in tqdm(
            paths, desc=f"{folder}/", unit=" files", disable=not self.progress
        ):
            if path.is_file():
                created = datetime.fromtimestamp(os.path.getmtime(path), UTC)
                name = path.relative_to(root).as_posix()
                stored[name] = (name, created)
        return stored


def key_of(storage, name):
    """Return the key of a stored file: its resource in Cloudinary, else its name."""
    if hasattr(storage, "resource"):
        return storage.resource(name).key
    return name


def referenced_names():
    """Return {alias: {name: "app.model id field name"}} of every file field."""
    references = {}
    for model in apps.get_models():
        fields = [
            field
            for field in model._meta.get_fields()
            if isinstance(field, models.FileField)
            and isinstance(field.storage, StorageAlias)
        ]
        for field in fields:
            rows = model._default_manager.exclude(**{field.name: ""}).values_list(
                "pk", field.name
            )
            for pk, name in rows.iterator():
                where = f"{model._meta.label_lower} {pk} {field.name} {name}"
                references.setdefault(field.storage.alias, {})[name] = where
    return references
