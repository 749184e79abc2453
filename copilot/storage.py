"""Storage access shared by scans and documents: errors, names and safe deletes.

Models pick a storage by its alias in the STORAGES setting ("scans" or
"documents"), so which backend stores the files is decided by settings alone.
"""

import contextlib
import logging
import os
import uuid

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.db import transaction

logger = logging.getLogger(__name__)


class StorageError(Exception):
    """A failure of a storage backend; `timed_out` is True for a timeout.

    The message is for API clients. `log_detail` adds what only the logs may
    show, such as the server path that an OSError names.
    """

    def __init__(self, message, *, timed_out=False, log_detail=""):
        super().__init__(message)
        self.timed_out = timed_out
        self.log_detail = log_detail or message


def _is_timeout(error):
    text = f"{type(error).__name__} {error}".lower()
    return isinstance(error, TimeoutError) or "timeout" in text or "timed out" in text


@contextlib.contextmanager
def translate_storage_errors(operation):
    """Raise StorageError for any failure of the storage backend inside the block.

    `operation` names the step in the message, for example "upload".
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        if not _is_storage_error(error):
            raise
        timed_out = _is_timeout(error)
        reason = "timed out" if timed_out else "failed"
        prefix = f"Storage {operation} {reason}: {type(error).__name__}: "
        raise StorageError(
            prefix + _describe(error),
            timed_out=timed_out,
            log_detail=prefix + str(error),
        ) from error


def _describe(error):
    """Return the error's text without the server paths that OSError names."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _is_storage_error(error):
    if isinstance(error, OSError):
        return True
    try:
        import cloudinary.exceptions
        import urllib3.exceptions
    except ImportError:  # pragma: no cover - both are in requirements.txt
        return False
    return isinstance(
        error, (cloudinary.exceptions.Error, urllib3.exceptions.HTTPError)
    )


def random_name(folder, extension):
    """Return a storage name that carries no patient data: folder/UUID.extension."""
    return f"{folder}/{uuid.uuid4().hex}.{extension}"


def backend_name(alias):
    """Return "cloudinary" or "local" for the storage behind `alias`."""
    backend = settings.STORAGES[alias]["BACKEND"]
    return "cloudinary" if "cloudinary" in backend.lower() else "local"


def save_file(alias, name, content):
    """Store `content` under `name` and return the name the storage used."""
    with translate_storage_errors("upload"):
        return storages[alias].save(name, content)


def delete_files_now(alias, names):
    """Delete stored files while handling a failure: used to undo a failed upload.

    A storage failure here is logged and recorded for a retry instead of raised,
    because the caller is already reporting the error that made it undo the upload.
    """
    from copilot.models import PendingFileDeletion

    for name in names:
        if not name:
            continue
        try:
            with translate_storage_errors("delete"):
                storages[alias].delete(name)
            logger.info("deleted stored file alias=%s name=%s", alias, name)
        except StorageError as error:
            logger.error(
                "delete of stored file failed alias=%s name=%s error=%s",
                alias,
                name,
                error.log_detail,
            )
            PendingFileDeletion.objects.create(
                storage_alias=alias, name=name, attempts=1, last_error=error.log_detail
            )


def delete_files_on_commit(alias, names):
    """Delete stored files once the current transaction commits.

    A pending-deletion row is written inside the transaction first, so the intent
    to delete survives a crash or a storage failure. After the commit each file is
    deleted and its row removed; a failed delete keeps the row for
    `manage.py retry_file_deletions`.
    """
    from copilot.models import PendingFileDeletion

    pending = [
        PendingFileDeletion.objects.create(storage_alias=alias, name=name)
        for name in names
        if name
    ]
    if pending:
        transaction.on_commit(lambda: retry_deletions(pending))


def retry_deletions(pending):
    """Try each pending deletion once; return the number that succeeded."""
    deleted = 0
    for row in pending:
        if row.attempt():
            deleted += 1
    return deleted


class StoredFiles:
    """Save files to one storage, and delete them all if the block raises.

    Used around "store the files, then save the row", so a failed database write
    or a later failed step leaves no file behind:

        with StoredFiles("scans") as stored:
            scan.file = stored.save(random_name("xrays", "png"), content)
            scan.save()
    """

    def __init__(self, alias):
        self.alias = alias
        self.names = []

    def save(self, name, content):
        try:
            stored_name = save_file(self.alias, name, content)
        except StorageError as error:
            # After a timeout the storage may have kept the file although the
            # call failed, so the undo deletes it by the name it was given.
            if error.timed_out:
                self.names.append(name)
            raise
        self.names.append(stored_name)
        return stored_name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None and self.names:
            logger.warning(
                "undoing upload after %s alias=%s names=%s",
                exc_type.__name__,
                self.alias,
                self.names,
            )
            delete_files_now(self.alias, self.names)
        return False


def file_url(request, field_file):
    """Return the absolute URL of a stored file, or None when there is none.

    Builds the URL from the storage name alone, without a request to the storage.
    """
    if not field_file:
        return None
    url = field_file.storage.url(field_file.name)
    if request is not None and url.startswith("/"):
        url = request.build_absolute_uri(url)
    return url


def ping_storage(alias):
    """Check that the storage behind `alias` responds, or raise StorageError.

    A storage class may define `ping()`. For the local file system the check is
    that its folder exists and is writable.
    """
    storage = storages[alias]
    with translate_storage_errors("ping"):
        if hasattr(storage, "ping"):
            storage.ping()
            return
        location = getattr(storage, "location", None)
        if location is None:
            return
        os.makedirs(location, exist_ok=True)
        if not os.access(location, os.W_OK):
            raise PermissionError(f"{location} is not writable")


class StorageAlias(Storage):
    """The storage named `alias` in STORAGES, looked up on every use.

    Django evaluates a FileField's storage callable once, when the model class is
    created. Delegating each attribute to `storages[alias]` lets a change of the
    STORAGES setting (in tests, for one) take effect without a restart.
    """

    _own_attributes = frozenset({"alias", "deconstruct", "__class__", "__dict__"})

    def __init__(self, alias):
        object.__setattr__(self, "alias", alias)

    def __getattribute__(self, name):
        if name in StorageAlias._own_attributes:
            return object.__getattribute__(self, name)
        alias = object.__getattribute__(self, "alias")
        return getattr(storages[alias], name)

    def __eq__(self, other):
        return isinstance(other, StorageAlias) and other.alias == self.alias

    def __hash__(self):
        return hash(self.alias)
