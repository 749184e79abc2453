"""Tests of scans.dicom on pydicom's test files and on files derived from them."""

import datetime as dt
import io
import struct

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset

from scans import dicom
from scans.dicom import DicomError, DicomHeader, is_dicom, read_first_frame, read_header

PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)
TEXT_BYTES = b"Patient history: cough for two weeks.\nNo fever.\n" * 20
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"
    b"\x08\x00\x00\x00\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02"
    b"\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82"
)


def path_of(name):
    """Return the path of a pydicom test file, without downloading anything."""
    path = get_testdata_file(name, download=False)
    assert path, f"The pydicom test file {name} is not installed."
    return path


def data_of(name):
    with open(path_of(name), "rb") as handle:
        return handle.read()


def reason_of(data, function=read_header):
    with pytest.raises(DicomError) as raised:
        function(io.BytesIO(data))
    return raised.value.reason


class CountingReader(io.BytesIO):
    """A file object that counts the bytes read from it."""

    def __init__(self, data):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def without_file_meta(name):
    """Return a data set written without preamble and file meta, implicit VR."""
    dataset = pydicom.dcmread(path_of(name))
    dataset.preamble = None
    dataset.file_meta = FileMetaDataset()
    buffer = io.BytesIO()
    dataset.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def test_header_of_chest_radiograph():
    with open(path_of("RG1_UNCR.dcm"), "rb") as handle:
        header = read_header(handle)
        assert handle.tell() == 0

    assert header == DicomHeader(
        patient_id="9RG1",
        patient_name="CompressedSamples^RG1",
        patient_age="",
        patient_birth_date=dt.date(1940, 3, 5),
        patient_sex="F",
        modality="CR",
        body_part_examined="CHEST",
        view_position="PA",
        study_datetime=dt.datetime(
            2004, 8, 26, 18, 50, 59, tzinfo=dt.timezone(-dt.timedelta(hours=4))
        ),
        study_instance_uid="1.3.6.1.4.1.5962.1.2.9.20040826185059.5457",
        series_instance_uid="1.3.6.1.4.1.5962.1.3.9.1.20040826185059.5457",
        sop_instance_uid="1.3.6.1.4.1.5962.1.1.9.1.1.20040826185059.5457",
        rows=1955,
        columns=1841,
        number_of_frames=1,
        bits_stored=15,
        photometric_interpretation="MONOCHROME1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        manufacturer="Philips Medical Systems",
        has_pixel_data=True,
    )


def test_header_of_compressed_files():
    j2k = read_header(io.BytesIO(data_of("RG1_J2KR.dcm")))
    assert j2k.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
    assert (j2k.rows, j2k.columns, j2k.patient_id) == (1955, 1841, "9RG1")

    extremity = read_header(io.BytesIO(data_of("RG3_J2KI.dcm")))
    assert extremity.body_part_examined == "EXTREMITY"
    assert extremity.view_position == "AP"
    assert extremity.patient_id == "11RG3"

    multi_frame = read_header(io.BytesIO(data_of("emri_small_jpeg_2k_lossless.dcm")))
    assert multi_frame.number_of_frames == 10
    assert (multi_frame.rows, multi_frame.columns) == (64, 64)


def test_read_header_reads_only_the_header():
    reader = CountingReader(data_of("RG1_UNCR.dcm"))
    read_header(reader)
    assert reader.bytes_read < 64 * 1024
    assert reader.tell() == 0

    reader = CountingReader(data_of("RG1_J2KR.dcm"))
    read_header(reader)
    assert reader.bytes_read < 64 * 1024


def test_read_first_frame_reads_one_frame():
    data = data_of("color3d_jpeg_baseline.dcm")
    reader = CountingReader(data)
    dataset, frame = read_first_frame(reader)
    assert int(dataset.NumberOfFrames) == 120
    assert frame.shape == (480, 640, 3)
    assert reader.bytes_read < len(data) / 10
    assert reader.tell() == 0


def test_reads_from_current_position():
    prefix = b"uploaded file header "
    stream = io.BytesIO(prefix + data_of("CT_small.dcm"))
    stream.seek(len(prefix))

    header = read_header(stream)
    assert header.modality == "CT"
    assert stream.tell() == len(prefix)

    dataset, frame = read_first_frame(stream)
    assert stream.tell() == len(prefix)
    expected = pydicom.dcmread(path_of("CT_small.dcm")).pixel_array
    assert np.array_equal(frame, expected)

    assert is_dicom(stream)
    assert stream.tell() == len(prefix)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_study_datetime_zone_and_fallbacks():
    dataset = pydicom.dcmread(path_of("CT_small.dcm"))
    del dataset.TimezoneOffsetFromUTC
    paris_summer = dt.timezone(dt.timedelta(hours=2))

    def header_of(changed):
        return read_header(io.BytesIO(_saved(changed)), tz=paris_summer)

    assert header_of(dataset).study_datetime == dt.datetime(
        2004, 1, 19, 7, 27, 30, tzinfo=paris_summer
    )
    assert read_header(io.BytesIO(_saved(dataset))).study_datetime.tzinfo == dt.UTC

    dataset.StudyDate = ""
    dataset.SeriesDate = "20050607"
    dataset.SeriesTime = "080910.5"
    assert header_of(dataset).study_datetime == dt.datetime(
        2005, 6, 7, 8, 9, 10, 500000, tzinfo=paris_summer
    )

    for keyword in ("SeriesDate", "AcquisitionDate", "ContentDate"):
        if keyword in dataset:
            delattr(dataset, keyword)
    dataset.StudyDate = "not a date"
    assert header_of(dataset).study_datetime is None


def _saved(dataset):
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [PDF_BYTES, TEXT_BYTES, PNG_BYTES, b"", b"DICM", bytes(4096)],
    ids=["pdf", "text", "png", "empty", "short", "zeros"],
)
def test_rejects_files_that_are_not_dicom(data):
    assert reason_of(data) == "not_dicom"
    assert reason_of(data, read_first_frame) == "not_dicom"
    assert not is_dicom(io.BytesIO(data))


def test_rejects_random_bytes():
    data = np.random.default_rng(7).bytes(100_000)
    assert reason_of(data) == "not_dicom"
    assert not is_dicom(io.BytesIO(data))


def test_rejects_unparsable_data_without_preamble():
    # no_meta.dcm starts with a stray byte before its first element.
    assert reason_of(data_of("no_meta.dcm")) == "not_dicom"


def test_error_message_and_reason():
    error = DicomError("undecodable", "Bad JPEG 2000 header.\nDetails follow")
    assert error.reason == "undecodable"
    assert str(error) == (
        "The DICOM pixel data cannot be decoded: bad JPEG 2000 header. Details follow."
    )
    assert str(DicomError("truncated")) == "The DICOM file is truncated."
    assert isinstance(error, ValueError)
    with pytest.raises(ValueError):
        DicomError("unknown")


def test_rejects_truncated_files():
    assert reason_of(data_of("MR_truncated.dcm")) == "truncated"
    assert reason_of(data_of("rtplan_truncated.dcm"), read_header) == "truncated"

    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "emri_small_RLE.dcm"):
        data = data_of(name)
        assert reason_of(data[: len(data) // 2]) == "truncated", name
        assert reason_of(data[: len(data) // 2], read_first_frame) == "truncated"
        assert reason_of(data[:1000]) == "truncated", name
        assert reason_of(data[:200]) == "truncated", name


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_cuts_in_the_header():
    data = data_of("MR_small_implicit.dcm")
    element_ends = _element_ends(data)
    pixel_value_start = 1502 + 8
    for cut in range(132, len(data), 13):
        reason = reason_of(data[:cut])
        if cut in element_ends and cut < pixel_value_start:
            # A cut between two elements leaves a valid data set.
            assert reason == "no_pixel_data", cut
        else:
            assert reason == "truncated", cut


def _element_ends(data):
    """Return where the top-level elements of an implicit VR file end."""
    (group_length,) = struct.unpack("<L", data[140:144])
    position = 144 + group_length
    ends = set()
    while position < len(data):
        group, element, length = struct.unpack("<HHL", data[position : position + 8])
        position += 8 + length
        ends.add(position)
    return ends


def test_cuts_in_encapsulated_pixel_data():
    data = data_of("emri_small_jpeg_2k_lossless.dcm")
    for cut in range(2400, len(data) - 8, 997):
        assert reason_of(data[:cut]) == "truncated", cut
    # Only the Sequence Delimitation Item is missing: every frame is there.
    header = read_header(io.BytesIO(data[:-8]))
    assert header.number_of_frames == 10


def test_rejects_data_sets_without_pixel_data():
    for name in ("rtplan.dcm", "test-SR.dcm", "reportsi.dcm", "waveform_ecg.dcm"):
        assert reason_of(data_of(name)) == "no_pixel_data", name
        assert is_dicom(io.BytesIO(data_of(name)))

    dataset = pydicom.dcmread(path_of("RG1_UNCR.dcm"))
    del dataset.PixelData
    data = _saved(dataset)
    error_reason = reason_of(data)
    assert error_reason == "no_pixel_data"
    assert "structured report" in str(DicomError(error_reason))
    assert reason_of(data, read_first_frame) == "no_pixel_data"

    header = read_header(io.BytesIO(data), require_pixel_data=False)
    assert header.has_pixel_data is False
    assert header.patient_id == "9RG1"

    report = read_header(io.BytesIO(data_of("test-SR.dcm")), require_pixel_data=False)
    assert report.modality == "SR"
    assert report.rows is None
    assert report.number_of_frames is None


def test_files_without_preamble():
    face = read_header(io.BytesIO(data_of("OT-PAL-8-face.dcm")))
    assert face.photometric_interpretation == "PALETTE COLOR"
    assert face.transfer_syntax_uid == "1.2.840.10008.1.2"
    assert is_dicom(io.BytesIO(data_of("OT-PAL-8-face.dcm")))

    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm"):
        assert reason_of(data_of(name)) == "no_pixel_data", name
        assert is_dicom(io.BytesIO(data_of(name)))

    data = without_file_meta("CT_small.dcm")
    assert data[128:132] != b"DICM"
    header = read_header(io.BytesIO(data))
    assert header.modality == "CT"
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2"
    _, frame = read_first_frame(io.BytesIO(data))
    expected = pydicom.dcmread(path_of("CT_small.dcm")).pixel_array
    assert np.array_equal(frame, expected)
    assert reason_of(data[: len(data) // 2]) == "truncated"


def test_corrupt_jpeg_2000_is_undecodable():
    data = bytearray(data_of("MR_small_jp2klossless.dcm"))
    codestream = data.find(b"\xff\x4f\xff\x51")  # SOC and SIZ markers.
    assert codestream > 0
    data[codestream + 4 : codestream + 44] = b"\xa5" * 40
    header = read_header(io.BytesIO(bytes(data)))
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
    with pytest.raises(DicomError) as raised:
        read_first_frame(io.BytesIO(bytes(data)))
    assert raised.value.reason == "undecodable"
    assert str(raised.value).startswith("The DICOM pixel data cannot be decoded: ")


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_invalid_image_description_is_undecodable():
    # badVR.dcm has a Number of Frames of "1A".
    assert reason_of(data_of("badVR.dcm")) == "undecodable"

    dataset = pydicom.dcmread(path_of("MR_small.dcm"))
    dataset.Rows = 128
    assert reason_of(_saved(dataset)) == "undecodable"


@pytest.mark.filterwarnings("ignore:Expected explicit VR, but found implicit VR")
def test_other_vr_encoding_than_the_transfer_syntax():
    # The data set is implicit VR although the transfer syntax is explicit VR.
    dataset, frame = read_first_frame(io.BytesIO(data_of("SC_rgb_jpeg.dcm")))
    assert frame.shape == (256, 256, 3)
    assert dataset.PhotometricInterpretation == "RGB"


def test_deflated_data_set():
    data = data_of("image_dfl.dcm")
    header = read_header(io.BytesIO(data))
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
    _, frame = read_first_frame(io.BytesIO(data))
    assert frame.shape == (512, 512)
    assert reason_of(data[: len(data) // 2]) == "truncated"


def test_deflated_data_set_that_inflates_too_much(monkeypatch):
    monkeypatch.setattr(dicom, "MAX_INFLATED_SIZE", 10_000)
    assert reason_of(data_of("image_dfl.dcm")) == "undecodable"


def test_is_dicom():
    assert is_dicom(io.BytesIO(data_of("RG1_UNCR.dcm")[:200]))
    assert is_dicom(io.BytesIO(data_of("rtplan.dcm")))
    stream = io.BytesIO(data_of("OT-PAL-8-face.dcm"))
    stream.seek(0, io.SEEK_END)
    stream.seek(0)
    assert is_dicom(stream)
    assert stream.tell() == 0
    assert not is_dicom(io.BytesIO(data_of("no_meta.dcm")))
