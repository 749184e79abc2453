"""Checks on uploaded files: extension allow-list, size, content sniffing, SHA-256.

The checks stream the file in chunks, so a file spooled to disk by Django's upload
handlers is never read whole into memory, and they leave the file rewound so the
storage stores every byte.
"""

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings
from rest_framework.exceptions import ValidationError

from copilot.exceptions import PayloadTooLarge

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
PDF_MARKER = b"%PDF-"
DICOM_PREFIX_OFFSET = 128
SNIFF_SIZE = 1024
MAX_FILENAME_LENGTH = 255

# Extension to content kind, and the media type that the kind is served as.
SCAN_KINDS = {
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "dcm": "dicom",
    "dicom": "dicom",
}
DOCUMENT_KINDS = {"pdf": "pdf"}
CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "dicom": "application/dicom",
    "pdf": "application/pdf",
}


@dataclass(frozen=True)
class CheckedFile:
    """An uploaded file that passed every check, with what the checks measured."""

    file: object
    kind: str
    extension: str
    original_filename: str
    size: int
    sha256: str

    @property
    def content_type(self):
        return CONTENT_TYPES[self.kind]


def check_upload(uploaded, kinds, content_checks=None):
    """Check an uploaded file against the allowed `kinds` and return a CheckedFile.

    `content_checks` maps a kind to a function that takes the file and returns
    True when its content is of that kind, for files that the first bytes do not
    identify (a DICOM data set without the preamble and "DICM" prefix).
    Raises ValidationError (400) naming the problem and the allowed types, or
    PayloadTooLarge (413) when the file is larger than MAX_UPLOAD_SIZE.
    """
    allowed = ", ".join(kinds)
    original_filename = clean_filename(uploaded.name)
    extension = _extension(original_filename)
    if not extension:
        raise ValidationError(
            {"file": [f"The file name has no extension. Allowed: {allowed}."]}
        )
    if extension not in kinds:
        raise ValidationError(
            {"file": [f"Invalid file type '{extension}'. Allowed: {allowed}."]}
        )

    kind = kinds[extension]
    size = uploaded.size
    if not size:
        raise ValidationError({"file": ["The file is empty."]})
    if size > settings.MAX_UPLOAD_SIZE:
        raise PayloadTooLarge(
            f"The file is {size} bytes, larger than the maximum of "
            f"{settings.MAX_UPLOAD_SIZE} bytes."
        )

    digest = hashlib.sha256()
    head = b""
    for chunk in uploaded.chunks():
        if len(head) < SNIFF_SIZE:
            head += chunk[: SNIFF_SIZE - len(head)]
        digest.update(chunk)
    check = (content_checks or {}).get(kind)
    if not _content_matches(kind, head) and not (check and _rewound(check, uploaded)):
        raise ValidationError(
            {
                "file": [
                    f"The content of the file is not {kind.upper()}, although "
                    f"its extension is '{extension}'. Allowed: {allowed}."
                ]
            }
        )
    uploaded.seek(0)

    return CheckedFile(
        file=uploaded,
        kind=kind,
        extension=extension,
        original_filename=original_filename,
        size=size,
        sha256=digest.hexdigest(),
    )


def clean_filename(name):
    """Return the last part of an uploaded file's name, safe to store and show.

    Drops any folder part (POSIX or Windows), control and formatting characters
    such as NUL or a right-to-left override, and surrounding spaces, and keeps a
    long name under MAX_FILENAME_LENGTH with its extension. The HTTP parser does
    much of this already; the admin and other callers may pass any name.
    """
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        char for char in name if not unicodedata.category(char).startswith("C")
    ).strip()
    if name in (".", ".."):
        return ""
    if len(name) > MAX_FILENAME_LENGTH:
        suffix = PurePosixPath(name).suffix[: MAX_FILENAME_LENGTH // 2]
        name = name[: MAX_FILENAME_LENGTH - len(suffix)] + suffix
    return name


def _extension(filename):
    suffix = PurePosixPath(filename).suffix
    return suffix[1:].lower() if len(suffix) > 1 else ""


def _content_matches(kind, head):
    if kind == "png":
        return head.startswith(PNG_SIGNATURE)
    if kind == "jpeg":
        return head.startswith(JPEG_SOI)
    if kind == "pdf":
        return PDF_MARKER in head
    if kind == "dicom":
        return head[DICOM_PREFIX_OFFSET : DICOM_PREFIX_OFFSET + 4] == b"DICM"
    raise ValueError(f"Unknown file kind {kind!r}.")


def _rewound(check, uploaded):
    uploaded.seek(0)
    try:
        return check(uploaded)
    finally:
        uploaded.seek(0)
