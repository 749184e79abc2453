"""Reading DICOM files: the header without the pixel data, and the first frame.

The functions take a binary file-like object (an open file or a Django
UploadedFile), read it from its current position and seek back to that
position before they return or raise. They do not read the pixel data whole:
the header is read up to the pixel data without its large values, the pixel
data element is checked by reading only its item headers, and only the first
frame is read and decoded. Deflated data sets, and pixel data that uses the
other VR encoding than the transfer syntax, are the exceptions: pydicom
decodes those only from a data set read whole.

This module does not use Django.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import struct
import zlib
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import DA, TM

__all__ = [
    "DicomError",
    "DicomHeader",
    "is_dicom",
    "read_first_frame",
    "read_header",
]

NOT_DICOM = "not_dicom"
TRUNCATED = "truncated"
NO_PIXEL_DATA = "no_pixel_data"
UNDECODABLE = "undecodable"

_MESSAGES = {
    NOT_DICOM: "The file is not a DICOM data set.",
    TRUNCATED: "The DICOM file is truncated.",
    NO_PIXEL_DATA: (
        "The DICOM file has no pixel data "
        "(it is not an image, for example a structured report)."
    ),
    UNDECODABLE: "The DICOM pixel data cannot be decoded: {detail}.",
}

# Element values larger than this are not read while parsing the header.
DEFER_SIZE = 1024 * 1024
# pydicom inflates a deflated data set into memory, so larger ones are rejected.
MAX_INFLATED_SIZE = 512 * 1024 * 1024
# The deflated transfer syntax UID is searched for in this many first bytes.
_HEAD_SIZE = 4096
_DEFLATED_UID = str(DeflatedExplicitVRLittleEndian).encode("ascii")
# (0002,0000) File Meta Information Group Length, explicit VR little endian.
_GROUP_LENGTH_HEADER = b"\x02\x00\x00\x00UL\x04\x00"

# The DICM prefix follows the 128-byte preamble.
_PREFIX_OFFSET = 128
_PREFIX = b"DICM"

# Pixel Data, Float Pixel Data and Double Float Pixel Data.
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_ITEM_TAG = 0xFFFEE000
_SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
_UNDEFINED_LENGTH = 0xFFFFFFFF

# The groups that a data set without a preamble may start with: command,
# file meta information and identifying elements.
_FIRST_GROUPS = {0x0000, 0x0002, 0x0008}

# The date and time pairs that give the study date and time, in order.
_DATE_TIME_KEYWORDS = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("AcquisitionDate", "AcquisitionTime"),
    ("ContentDate", "ContentTime"),
)
_UTC_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")
# A date and time within a day of the ends of Python's datetime range cannot be
# converted to every time zone, so the study date must lie between these.
_EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


class DicomError(ValueError):
    """A file that cannot be used as a DICOM image.

    ``reason`` is one of "not_dicom", "truncated", "no_pixel_data" and
    "undecodable". The message is one sentence that states the reason.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in _MESSAGES:
            raise ValueError(
                f"Invalid reason {reason!r}: expected one of {', '.join(_MESSAGES)}."
            )
        self.reason = reason
        self.detail = _one_line(detail) or "the data is invalid"
        super().__init__(_MESSAGES[reason].format(detail=self.detail))


@dataclass(frozen=True)
class DicomHeader:
    """The header values that the application stores for a DICOM image.

    String values are stripped and are "" when absent. Integer values are None
    when absent, except ``number_of_frames``, which is 1 for an image without
    (0028,0008) Number of Frames.
    """

    patient_id: str
    patient_name: str
    patient_age: str
    patient_birth_date: dt.date | None
    patient_sex: str
    modality: str
    body_part_examined: str
    view_position: str
    study_datetime: dt.datetime | None
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    bits_stored: int | None
    photometric_interpretation: str
    transfer_syntax_uid: str
    manufacturer: str
    has_pixel_data: bool


@dataclass(frozen=True)
class _Parsed:
    """A checked data set and where its pixel data is."""

    dataset: Dataset
    transfer_syntax: UID
    has_pixel_data: bool
    # The pixel data element uses the VR encoding of the transfer syntax, so
    # pixel_array() can read the first frame without loading the pixel data.
    streamable: bool


def read_header(
    fileobj: IO[bytes],
    *,
    tz: dt.tzinfo = dt.UTC,
    require_pixel_data: bool = True,
) -> DicomHeader:
    """Read the header of a DICOM file without loading its pixel data.

    The file may start with the 128-byte preamble and "DICM", or directly
    with the data set. ``study_datetime`` is interpreted in the time zone
    given by (0008,0201) Timezone Offset From UTC when present, else in `tz`.

    Raises DicomError with reason "not_dicom", "truncated", "no_pixel_data"
    (only when `require_pixel_data` is true) or "undecodable" (when the image
    pixel description is missing or does not match the pixel data length).
    """
    start = fileobj.tell()
    try:
        parsed = _parse(fileobj, start)
        if require_pixel_data and not parsed.has_pixel_data:
            raise DicomError(NO_PIXEL_DATA)
        return _header(parsed, tz)
    finally:
        fileobj.seek(start)


def is_dicom(fileobj: IO[bytes]) -> bool:
    """Return whether the file looks like a DICOM data set.

    True when "DICM" follows a 128-byte preamble, or when the data starts
    like a data set without a preamble and pydicom reads it as one. A
    truncated DICOM file is still DICOM here.
    """
    start = fileobj.tell()
    try:
        head = fileobj.read(_PREFIX_OFFSET + len(_PREFIX))
        if head[_PREFIX_OFFSET:] == _PREFIX:
            return True
        if not _plausible_start(head):
            return False
        fileobj.seek(start)
        try:
            dataset, _ = _read(fileobj, force=True)
        except Exception:
            return False
        return _plausible_dataset(dataset)
    finally:
        fileobj.seek(start)


def read_first_frame(fileobj: IO[bytes]) -> tuple[Dataset, np.ndarray]:
    """Return the data set without pixel data, and the decoded first frame.

    Only the first frame is read and decoded, also for multi-frame images.
    The array is what pydicom returns: stored values before any modality or
    VOI transformation, with YBR color data converted to RGB. The data set's
    file meta always has a Transfer Syntax UID (guessed when the file has no
    file meta information).

    Raises DicomError with any reason, "undecodable" when decoding fails.
    """
    start = fileobj.tell()
    try:
        parsed = _parse(fileobj, start)
        if not parsed.has_pixel_data:
            raise DicomError(NO_PIXEL_DATA)
        try:
            return parsed.dataset, _decode_first_frame(fileobj, start, parsed)
        except DicomError:
            raise
        except Exception as error:
            raise DicomError(UNDECODABLE, str(error)) from error
    finally:
        fileobj.seek(start)


def _decode_first_frame(fileobj: IO[bytes], start: int, parsed: _Parsed) -> Any:
    """Decode the first frame of a checked data set."""
    if any(tag in parsed.dataset for tag in _PIXEL_TAGS):
        # A deflated data set is read whole, with its pixel data.
        return pixel_array(parsed.dataset, index=0)
    fileobj.seek(start)
    if not parsed.streamable:
        # The pixel data element uses the other VR encoding than the transfer
        # syntax, and pydicom decodes it only from a data set read whole.
        dataset = pydicom.dcmread(fileobj, force=True)
        dataset.file_meta.TransferSyntaxUID = parsed.transfer_syntax
        return pixel_array(dataset, index=0)
    source = _Window(fileobj, start) if start else fileobj
    return pixel_array(source, index=0, transfer_syntax_uid=parsed.transfer_syntax)


def _parse(fileobj: IO[bytes], start: int) -> _Parsed:
    """Read and check the header, and find and check the pixel data element."""
    fileobj.seek(0, io.SEEK_END)
    end = fileobj.tell()
    fileobj.seek(start)
    head = fileobj.read(_HEAD_SIZE)
    fileobj.seek(start)
    if not head:
        raise DicomError(NOT_DICOM)
    if _DEFLATED_UID in head:
        _check_deflated(fileobj, start, head)

    forced = False
    try:
        dataset, elements = _read(fileobj, force=False)
    except InvalidDicomError:
        if not _plausible_start(head):
            raise DicomError(NOT_DICOM) from None
        forced = True
        fileobj.seek(start)
        try:
            dataset, elements = _read(fileobj, force=True)
        except Exception as error:
            raise _read_error(fileobj, end) from error
        if not _plausible_dataset(dataset):
            raise DicomError(NOT_DICOM) from None
    except Exception as error:
        raise _read_error(fileobj, end) from error

    transfer_syntax = _transfer_syntax(dataset)
    dataset.file_meta.TransferSyntaxUID = transfer_syntax

    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        # pydicom inflates the whole data set into memory anyway, so read it
        # with the pixel data and decode the first frame from it.
        fileobj.seek(start)
        try:
            dataset = pydicom.dcmread(fileobj, force=forced)
        except Exception as error:
            raise _read_error(fileobj, end) from error
        has_pixels = any(tag in dataset for tag in _PIXEL_TAGS)
        if has_pixels:
            _check_image_description(dataset, None)
        return _Parsed(dataset, transfer_syntax, has_pixels, streamable=False)

    if fileobj.tell() > end or _has_short_element(dataset, end):
        raise DicomError(TRUNCATED)
    pixel = None
    last_start, last_length = start, 0
    for tag, (value_start, vr, length) in elements.items():
        if tag in _PIXEL_TAGS:
            pixel = (value_start, vr, length)
            continue
        if length != _UNDEFINED_LENGTH and value_start + length > end:
            raise DicomError(TRUNCATED)
        if value_start >= last_start:
            last_start, last_length = value_start, length

    if pixel is None:
        # NOTE: a file cut exactly between two top-level elements is a valid
        # data set, so it is reported as having no pixel data.
        if not elements or (
            last_length != _UNDEFINED_LENGTH
            and last_start + last_length < end == fileobj.tell()
        ):
            # The file ends inside the file meta or an element header.
            raise DicomError(TRUNCATED)
        return _Parsed(dataset, transfer_syntax, False, streamable=False)

    value_start, vr, length = pixel
    if length == 0:
        return _Parsed(dataset, transfer_syntax, False, streamable=False)
    if length == _UNDEFINED_LENGTH:
        frames = _integer(dataset.get("NumberOfFrames"), 1) or 1
        _check_fragments(fileobj, value_start, end, transfer_syntax, frames)
        _check_image_description(dataset, None)
    elif value_start + length > end:
        raise DicomError(TRUNCATED)
    else:
        _check_image_description(dataset, length)
    # pixel_array() reads the pixel data element in the VR encoding of the
    # transfer syntax, but some files use the other one.
    streamable = (vr is None) == transfer_syntax.is_implicit_VR
    return _Parsed(dataset, transfer_syntax, True, streamable=streamable)


class _ElementWatcher:
    """A stop_when callback that records the top-level elements of a data set.

    pydicom calls it with the tag, VR (None for implicit VR) and length of each
    top-level element while the file is positioned at the element's value. It
    stops the reading at the pixel data, like stop_before_pixels does.
    """

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._fileobj = fileobj
        self.elements: dict[int, tuple[int, str | None, int]] = {}

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        self.elements[int(tag)] = (self._fileobj.tell(), vr, length)
        return int(tag) in _PIXEL_TAGS


def _read(
    fileobj: IO[bytes], *, force: bool
) -> tuple[Dataset, dict[int, tuple[int, str | None, int]]]:
    """Read the data set up to the pixel data, without large values.

    Returns the data set and, for each top-level element, the position of its
    value, its VR and its length.
    """
    watcher = _ElementWatcher(fileobj)
    dataset = read_partial(
        fileobj, stop_when=watcher, defer_size=DEFER_SIZE, force=force
    )
    return dataset, watcher.elements


def _check_deflated(fileobj: IO[bytes], start: int, head: bytes) -> None:
    """Check a file whose start names the deflated transfer syntax.

    pydicom inflates a deflated data set whole into memory, so before it reads
    the file, check that the data set is complete and not too large.
    """
    offset = _PREFIX_OFFSET + len(_PREFIX)
    if head[offset : offset + 8] != _GROUP_LENGTH_HEADER or len(head) < offset + 12:
        if head[:2] == b"\x02\x00":
            # File meta information without a preamble: its end is unknown.
            raise DicomError(
                UNDECODABLE,
                "a deflated data set needs a preamble and a File Meta "
                "Information Group Length",
            )
        # Without file meta information, the UID is a value in the data set.
        return
    (group_length,) = struct.unpack("<L", head[offset + 8 : offset + 12])
    if head.find(_DEFLATED_UID) > offset + 12 + group_length:
        # The UID is a value in the data set, not the transfer syntax.
        return
    fileobj.seek(start + offset + 12 + group_length)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    try:
        while not inflater.eof and (data := fileobj.read(1024 * 1024)):
            while data and not inflater.eof:
                inflated += len(inflater.decompress(data, 1024 * 1024))
                if inflated > MAX_INFLATED_SIZE:
                    raise DicomError(
                        UNDECODABLE,
                        "the deflated data set inflates to more than "
                        f"{MAX_INFLATED_SIZE // 2**20} MiB",
                    )
                data = inflater.unconsumed_tail
    except zlib.error as error:
        raise DicomError(UNDECODABLE, str(error)) from error
    finally:
        fileobj.seek(start)
    if not inflater.eof:
        raise DicomError(TRUNCATED)


def _read_error(fileobj: IO[bytes], end: int) -> DicomError:
    """Classify an error raised while reading: truncated when it reached EOF."""
    try:
        at_end = fileobj.tell() >= end
    except (OSError, ValueError):
        at_end = False
    if at_end:
        return DicomError(TRUNCATED)
    return DicomError(NOT_DICOM)


def _plausible_start(head: bytes) -> bool:
    """Return whether the bytes can start a data set that has no preamble."""
    if len(head) < 8:
        return False
    little = struct.unpack("<H", head[:2])[0]
    big = struct.unpack(">H", head[:2])[0]
    return little in _FIRST_GROUPS or big in _FIRST_GROUPS


def _plausible_dataset(dataset: Dataset) -> bool:
    """Return whether a data set read with force=True is a real data set.

    pydicom reads almost any bytes with force=True. A real data set has its
    elements in ascending tag order and identifies itself with a SOP Class
    UID, or is an image with Rows and Columns.
    """
    tags = [int(tag) for tag in dataset.keys()]
    if len(tags) < 2 or tags != sorted(tags):
        return False
    # PS3.5 7.1 does not allow the groups 0001, 0003, 0005, 0007 and FFFF.
    if any(tag >> 16 in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF) for tag in tags):
        return False
    try:
        return bool(
            dataset.get("SOPClassUID")
            or (dataset.get("Rows") and dataset.get("Columns"))
        )
    except Exception:
        return False


def _transfer_syntax(dataset: Dataset) -> UID:
    """Return the transfer syntax from the file meta, or the one pydicom used."""
    file_meta = getattr(dataset, "file_meta", None) or {}
    value = str(file_meta.get("TransferSyntaxUID", "") or "").strip()
    if value:
        return UID(value)
    implicit_vr, little_endian = dataset.original_encoding
    if implicit_vr:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def _has_short_element(dataset: Dataset, end: int) -> bool:
    """Return whether an element's declared length runs past the end of file.

    pydicom reads a value cut off by the end of the file without an error, but
    its declared length still shows where it should end.
    """
    elements = list(dataset.file_meta.elements()) + list(dataset.elements())
    for element in elements:
        if not getattr(element, "is_raw", False):
            continue
        if element.length == _UNDEFINED_LENGTH:
            continue
        if element.value_tell + element.length > end:
            return True
        if element.value is not None and len(element.value) < element.length:
            return True
    return False


def _check_fragments(
    fileobj: IO[bytes], value_start: int, end: int, transfer_syntax: UID, frames: int
) -> None:
    """Check the items of encapsulated pixel data against the file size.

    Only the item headers are read.
    """
    order = "<" if transfer_syntax.is_little_endian else ">"
    fileobj.seek(value_start)
    fragments = -1  # The first item is the Basic Offset Table.
    while True:
        data = fileobj.read(8)
        if not data:
            # The Sequence Delimitation Item is missing: accept the data if
            # it has a fragment for each frame.
            if fragments < frames:
                raise DicomError(TRUNCATED)
            break
        if len(data) < 8:
            raise DicomError(TRUNCATED)
        group, element, item_length = struct.unpack(f"{order}HHL", data)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER_TAG:
            break
        if tag != _ITEM_TAG or item_length == _UNDEFINED_LENGTH:
            raise DicomError(
                UNDECODABLE,
                "the encapsulated pixel data has an item with an invalid tag or length",
            )
        if fileobj.tell() + item_length > end:
            raise DicomError(TRUNCATED)
        fileobj.seek(fileobj.tell() + item_length)
        fragments += 1
    if fragments < 1:
        raise DicomError(UNDECODABLE, "the encapsulated pixel data has no fragments")


def _check_image_description(dataset: Dataset, length: int | None) -> None:
    """Check that the Image Pixel module is present and fits native pixel data.

    `length` is the length of native pixel data, None for encapsulated data.
    """
    missing = [
        keyword
        for keyword in ("Rows", "Columns", "BitsAllocated")
        if dataset.get(keyword) in (None, "")
    ]
    if missing:
        raise DicomError(UNDECODABLE, f"the data set has no {', '.join(missing)}")
    frames = dataset.get("NumberOfFrames")
    if _integer(frames, 1) is None:
        raise DicomError(
            UNDECODABLE, f"the Number of Frames {frames!r} is not an integer"
        )
    try:
        expected = get_expected_length(dataset, "bytes")
    except Exception as error:
        raise DicomError(UNDECODABLE, str(error)) from error
    if length is not None and length < expected:
        raise DicomError(
            UNDECODABLE,
            f"the pixel data has {length} bytes, fewer than the {expected} "
            "bytes that the image size requires",
        )


def _header(parsed: _Parsed, tz: dt.tzinfo) -> DicomHeader:
    dataset = parsed.dataset
    frames = _integer(dataset.get("NumberOfFrames"), None)
    if frames is None and parsed.has_pixel_data:
        frames = 1
    return DicomHeader(
        patient_id=_text(dataset, "PatientID"),
        patient_name=_text(dataset, "PatientName"),
        patient_age=_text(dataset, "PatientAge"),
        patient_birth_date=_date(_text(dataset, "PatientBirthDate")),
        patient_sex=_text(dataset, "PatientSex"),
        modality=_text(dataset, "Modality"),
        body_part_examined=_text(dataset, "BodyPartExamined"),
        view_position=_text(dataset, "ViewPosition"),
        study_datetime=_study_datetime(dataset, tz),
        study_instance_uid=_text(dataset, "StudyInstanceUID"),
        series_instance_uid=_text(dataset, "SeriesInstanceUID"),
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        rows=_integer(dataset.get("Rows"), None),
        columns=_integer(dataset.get("Columns"), None),
        number_of_frames=frames,
        bits_stored=_integer(dataset.get("BitsStored"), None),
        photometric_interpretation=_text(dataset, "PhotometricInterpretation"),
        transfer_syntax_uid=str(parsed.transfer_syntax),
        manufacturer=_text(dataset, "Manufacturer"),
        has_pixel_data=parsed.has_pixel_data,
    )


def _text(dataset: Dataset, keyword: str) -> str:
    """Return an element value as a stripped string, "" when absent or invalid."""
    try:
        value = dataset.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(item) for item in value)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).replace("\0", "").strip()


def _integer(value: Any, default: int | None) -> int | None:
    """Return a value as an integer, `default` when absent, None when invalid."""
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _date(value: str) -> dt.date | None:
    if not value:
        return None
    try:
        parsed = DA(value)
    except (TypeError, ValueError):
        return None
    if parsed is None:
        return None
    return dt.date(parsed.year, parsed.month, parsed.day)


def _time(value: str) -> dt.time | None:
    if not value:
        return dt.time()
    try:
        parsed = TM(value)
    except (TypeError, ValueError):
        return None
    return dt.time(parsed.hour, parsed.minute, parsed.second, parsed.microsecond)


def _study_datetime(dataset: Dataset, tz: dt.tzinfo) -> dt.datetime | None:
    """Return the first valid date and time of the study, series, or content.

    A date and time that cannot be converted to every time zone is not valid.
    """
    zone = _utc_offset(_text(dataset, "TimezoneOffsetFromUTC")) or tz
    for date_keyword, time_keyword in _DATE_TIME_KEYWORDS:
        date = _date(_text(dataset, date_keyword))
        if date is None:
            continue
        time = _time(_text(dataset, time_keyword))
        if time is None:
            time = dt.time()
        value = dt.datetime.combine(date, time, tzinfo=zone)
        if _EARLIEST <= value <= _LATEST:
            return value
    return None


def _utc_offset(value: str) -> dt.tzinfo | None:
    """Return the time zone of a (0008,0201) Timezone Offset From UTC value."""
    match = _UTC_OFFSET.match(value)
    if not match:
        return None
    sign, hours, minutes = match.groups()
    offset = dt.timedelta(hours=int(hours), minutes=int(minutes))
    if offset > dt.timedelta(hours=14):
        return None
    return dt.timezone(-offset if sign == "-" else offset)


def _one_line(text: str) -> str:
    """Join a possibly multi-line error message into one short clause."""
    text = " ".join(str(text).split()).rstrip(".")
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text[:300]


class _Window(io.RawIOBase):
    """A read-only view of a file that starts at a given offset.

    pydicom's pixel_array() seeks to offset 0 of a file-like object, so this
    view makes offset 0 the start of the DICOM data.
    """

    def __init__(self, fileobj: IO[bytes], start: int) -> None:
        super().__init__()
        self._fileobj = fileobj
        self._start = start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._fileobj.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self._fileobj.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._fileobj.tell() - self._start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self._start
        self._fileobj.seek(offset, whence)
        return self.tell()
