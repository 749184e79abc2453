"""Cloudinary storage for scans and documents, built on django-cloudinary-storage.

Import this module only when Cloudinary is configured: django-cloudinary-storage
raises ImproperlyConfigured at import when no credentials are set.
"""

import dataclasses
import logging
import posixpath
import re

import cloudinary
import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader
import cloudinary.utils
import requests
from cloudinary_storage.storage import MediaCloudinaryStorage
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.utils.deconstruct import deconstructible

logger = logging.getLogger(__name__)

RAW_EXTENSIONS = frozenset({"dcm", "dicom", "pdf"})
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg"})
DELIVERY_TYPES = ("upload", "authenticated")
SIGNED_DELIVERY_TYPES = frozenset({"authenticated", "private"})
# A stored name is the delivery type, the version and the path of the resource,
# as they appear in its URL: "authenticated/v1733312345/xrays/<uuid>.png".
STORED_NAME_RE = re.compile(
    r"^(?P<type>upload|authenticated|private)/v(?P<version>\d+)/(?P<path>.+)$"
)
DEFAULTS = {
    "CLOUDINARY_DELIVERY_TYPE": "upload",
    "CLOUDINARY_TIMEOUT": 30.0,
    "CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD": 20_000_000,
    "CLOUDINARY_CHUNK_SIZE": 20_000_000,
}


def setting(name):
    """Return a Cloudinary setting of the project, or its default."""
    return getattr(settings, name, DEFAULTS[name])


@dataclasses.dataclass(frozen=True)
class Resource:
    """The public ID, types and version of one resource, read from a stored name."""

    public_id: str
    resource_type: str
    type: str
    version: int | None = None
    format: str | None = None
    created_at: str | None = dataclasses.field(default=None, compare=False)

    @property
    def key(self):
        return (self.resource_type, self.type, self.public_id)


@deconstructible
class CloudinaryStorage(MediaCloudinaryStorage):
    """Stores scans and documents in Cloudinary, with no network call to name a file.

    The resource type follows the extension: PNG and JPEG are images; DICOM and
    PDF are raw, so they come back byte for byte. The public ID is the random
    storage name chosen by the caller (without its extension for images), with no
    file name, tag or context sent. Uploads use the delivery type of
    CLOUDINARY_DELIVERY_TYPE ("upload", or "authenticated" for signed URLs), and
    files above CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD bytes go up in chunks of
    CLOUDINARY_CHUNK_SIZE bytes. Every call to Cloudinary has the timeout of
    CLOUDINARY_TIMEOUT seconds.

    The stored name keeps the delivery type and the version, so url() builds the
    versioned URL locally. exists(), size() and open() make network calls and are
    meant for commands, not for request paths. Static files are not supported.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        delivery_type = setting("CLOUDINARY_DELIVERY_TYPE")
        if delivery_type not in DELIVERY_TYPES:
            raise ImproperlyConfigured(
                f"Invalid CLOUDINARY_DELIVERY_TYPE {delivery_type!r}: expected "
                f"one of {', '.join(DELIVERY_TYPES)}."
            )

    @property
    def delivery_type(self):
        return setting("CLOUDINARY_DELIVERY_TYPE")

    @property
    def timeout(self):
        return setting("CLOUDINARY_TIMEOUT")

    def resource(self, name):
        """Return the Resource that a stored name refers to.

        Names without a delivery type and version (as given to save()) refer to
        the resource of the configured delivery type.
        """
        name = self._normalise_name(name)
        match = STORED_NAME_RE.match(name)
        if match:
            delivery_type, version = match["type"], int(match["version"])
            path = match["path"]
        else:
            delivery_type, version, path = self.delivery_type, None, name
        resource_type = self._get_resource_type(path)
        if resource_type == "raw":
            return Resource(path, "raw", delivery_type, version)
        stem, extension = posixpath.splitext(path)
        return Resource(stem, resource_type, delivery_type, version, extension[1:])

    def stored_name(self, resource):
        """Return the stored name of a Resource that has a version."""
        path = resource.public_id
        if resource.resource_type != "raw" and resource.format:
            path = f"{path}.{resource.format}"
        return f"{resource.type}/v{resource.version}/{path}"

    def _get_resource_type(self, name):
        extension = posixpath.splitext(name)[1][1:].lower()
        if extension in RAW_EXTENSIONS:
            return "raw"
        if extension in IMAGE_EXTENSIONS:
            return "image"
        raise ValueError(
            f"Cannot store {name!r} in Cloudinary: the extension is not one of "
            f"{', '.join(sorted(RAW_EXTENSIONS | IMAGE_EXTENSIONS))}."
        )

    # Saving.

    def get_available_name(self, name, max_length=None):
        # Names are random, so no exists() call over the network is needed.
        return self._normalise_name(name)

    def _save(self, name, content):
        name = self._normalise_name(name)
        resource = self.resource(name)
        options = {
            "public_id": resource.public_id,
            "resource_type": resource.resource_type,
            "type": resource.type,
            "overwrite": False,
            "use_filename": False,
            "unique_filename": False,
            "discard_original_filename": True,
            # The multipart file name, which would otherwise be the uploaded one.
            "filename": posixpath.basename(name),
            "timeout": self.timeout,
        }
        size = content.size
        content.seek(0)
        if size > setting("CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD"):
            chunk_size = setting("CLOUDINARY_CHUNK_SIZE")
            result = cloudinary.uploader.upload_large(
                _KeepOpen(content), chunk_size=chunk_size, **options
            )
        else:
            result = cloudinary.uploader.upload(content, **options)

        if result.get("existing"):
            raise cloudinary.exceptions.Error(
                f"A resource with public ID {resource.public_id} already exists "
                "in Cloudinary."
            )
        stored = Resource(
            public_id=result["public_id"],
            resource_type=result["resource_type"],
            type=result["type"],
            version=int(result["version"]),
            format=result.get("format") or resource.format,
        )
        logger.info(
            "uploaded to cloudinary public_id=%s resource_type=%s type=%s size=%s "
            "chunked=%s",
            stored.public_id,
            stored.resource_type,
            stored.type,
            size,
            size > setting("CLOUDINARY_CHUNKED_UPLOAD_THRESHOLD"),
        )
        return self.stored_name(stored)

    # Deleting.

    def delete(self, name):
        """Destroy the resource and invalidate its CDN copies.

        A "not found" result counts as done. Any other result raises
        cloudinary.exceptions.Error, so the caller keeps its pending deletion.
        """
        resource = self.resource(name)
        result = cloudinary.uploader.destroy(
            resource.public_id,
            resource_type=resource.resource_type,
            type=resource.type,
            invalidate=True,
            timeout=self.timeout,
        )
        outcome = result.get("result")
        if outcome not in ("ok", "not found"):
            raise cloudinary.exceptions.Error(
                f"Cloudinary did not destroy {resource.public_id}: result {outcome!r}."
            )

    # URLs, built without a network call.

    def url(self, name):
        return self._delivery_url(self.resource(name), secure=True)

    def _get_url(self, name):
        return self.url(name)

    def _delivery_url(self, resource, secure=None):
        options = {
            "resource_type": resource.resource_type,
            "type": resource.type,
            "sign_url": resource.type in SIGNED_DELIVERY_TYPES,
        }
        if resource.version is not None:
            options["version"] = resource.version
        if resource.resource_type != "raw" and resource.format:
            options["format"] = resource.format
        if secure is not None:
            options["secure"] = secure
        url, _ = cloudinary.utils.cloudinary_url(resource.public_id, **options)
        return url

    # Network reads, with a timeout; for commands, not request paths.

    def _open(self, name, mode="rb"):
        # The delivery host of the SDK configuration, which tests point at a
        # local server; url() always returns the HTTPS address.
        url = self._delivery_url(self.resource(name))
        response = requests.get(url, timeout=self.timeout)
        if response.status_code == 404:
            raise FileNotFoundError(f"Cloudinary has no resource for {name}.")
        response.raise_for_status()
        file = ContentFile(response.content, name=name)
        file.mode = mode
        return file

    def _details(self, name):
        resource = self.resource(name)
        try:
            return cloudinary.api.resource(
                resource.public_id,
                resource_type=resource.resource_type,
                type=resource.type,
                timeout=self.timeout,
            )
        except cloudinary.exceptions.NotFound:
            return None

    def exists(self, name):
        return self._details(name) is not None

    def size(self, name):
        details = self._details(name)
        if details is None:
            raise FileNotFoundError(f"Cloudinary has no resource for {name}.")
        return details["bytes"]

    def ping(self):
        """Check that the Admin API responds to these credentials."""
        cloudinary.api.ping(timeout=self.timeout)

    def list_resources(self, prefix, resource_type, delivery_type, page_size=500):
        """Yield each page of resources whose public ID starts with `prefix`.

        `page_size` is the Admin API's max_results, at most 500.
        """
        cursor = None
        while True:
            options = {
                "resource_type": resource_type,
                "type": delivery_type,
                "prefix": prefix,
                "max_results": page_size,
                "timeout": self.timeout,
            }
            if cursor:
                options["next_cursor"] = cursor
            page = cloudinary.api.resources(**options)
            yield [
                Resource(
                    public_id=item["public_id"],
                    resource_type=item["resource_type"],
                    type=item["type"],
                    version=item.get("version"),
                    format=item.get("format"),
                    created_at=item.get("created_at"),
                )
                for item in page["resources"]
            ]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def listdir(self, path):
        raise NotImplementedError(
            "CloudinaryStorage does not list folders; use list_resources()."
        )


class _KeepOpen:
    """A file that upload_large may close without closing the caller's file."""

    def __init__(self, file):
        self._file = file
        self.name = "stream"

    def read(self, size=-1):
        return self._file.read(size)

    def seek(self, offset, whence=0):
        return self._file.seek(offset, whence)

    def tell(self):
        return self._file.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False
