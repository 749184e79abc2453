"""Tests of scans.previews on pydicom's test files and on images made with Pillow."""

import io
import struct
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from scans.dicom import DicomError
from scans.previews import (
    PREVIEW_SIZE,
    THUMBNAIL_SIZE,
    PreviewError,
    make_previews,
    render_dicom,
    render_image,
)


def path_of(name):
    """Return the path of a pydicom test file, without downloading anything."""
    path = get_testdata_file(name, download=False)
    assert path, f"The pydicom test file {name} is not installed."
    return path


def data_of(name):
    with open(path_of(name), "rb") as handle:
        return handle.read()


def render(name):
    with open(path_of(name), "rb") as handle:
        image = render_dicom(handle)
        assert handle.tell() == 0
    return image


def pixels(image):
    return np.asarray(image).astype(np.int32)


def saved(dataset):
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def png_bytes(image, **params):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def jpeg_bytes(image, **params):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **params)
    return buffer.getvalue()


def opened(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def patch_mean(values, top, left, size):
    return float(values[top : top + size, left : left + size].mean())


# The chest radiograph RG1 (CR, PA, MONOCHROME1, 15 bits stored) has the
# window 15000/30000, and its preview is 964 x 1024. The regions come from
# looking at the preview. Air above the shoulders is in the upper corners,
# below the collimator edge. The mediastinum and spine are in the middle,
# with the lungs on either side.
AIR_PATCHES = [(48, 0), (48, 864)]  # Measured means: 63 and 69.
LUNG_PATCHES = [(240, 240), (240, 624)]  # Measured means: about 130.
CENTER_STRIP = (slice(150, 800), slice(440, 520))  # Measured mean: about 220.


def test_chest_preview_air_dark_bones_bright():
    with open(path_of("RG1_UNCR.dcm"), "rb") as handle:
        preview, thumbnail = make_previews(handle, "dicom")
        assert handle.tell() == 0

    image = opened(preview)
    assert image.format == "PNG"
    assert image.mode == "L"
    assert image.size == (964, PREVIEW_SIZE)
    assert opened(thumbnail).size == (241, THUMBNAIL_SIZE)

    values = pixels(image)
    air = [patch_mean(values, top, left, 48) for top, left in AIR_PATCHES]
    lungs = [patch_mean(values, top, left, 96) for top, left in LUNG_PATCHES]
    center = float(values[CENTER_STRIP].mean())
    assert max(air) < 90
    assert center > 190
    assert max(lungs) < 160
    assert center - max(lungs) > 50


def test_monochrome1_is_inverted_after_the_window():
    dataset = pydicom.dcmread(path_of("MR_small.dcm"))
    normal = pixels(render("MR_small.dcm"))
    dataset.PhotometricInterpretation = "MONOCHROME1"
    inverted = pixels(render_dicom(io.BytesIO(saved(dataset))))
    assert np.abs((255 - normal) - inverted).max() <= 1


def test_lossless_jpeg_2000_equals_uncompressed():
    uncompressed = pixels(render("RG1_UNCR.dcm"))
    lossless = pixels(render("RG1_J2KR.dcm"))
    assert lossless.shape == (1955, 1841)
    assert np.abs(uncompressed - lossless).max() <= 1

    with open(path_of("RG1_UNCR.dcm"), "rb") as handle:
        preview_uncompressed, _ = make_previews(handle, "dicom")
    with open(path_of("RG1_J2KR.dcm"), "rb") as handle:
        preview_lossless, _ = make_previews(handle, "dicom")
    difference = pixels(opened(preview_uncompressed)) - pixels(opened(preview_lossless))
    assert np.abs(difference).max() <= 1


def test_lossy_jpeg_2000_is_close_to_uncompressed():
    uncompressed = pixels(render("RG1_UNCR.dcm"))
    lossy = pixels(render("RG1_J2KI.dcm"))
    assert np.abs(uncompressed - lossy).mean() < 2  # Measured: 0.43.


@pytest.mark.parametrize(
    "name", ["RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm"]
)
def test_extremity_radiographs(name):
    image = render(name)
    assert image.mode == "L"
    assert image.size == (1760, 1760)
    values = pixels(image)
    reference = pixels(render("RG3_UNCR.dcm"))
    assert np.abs(values - reference).mean() < 2
    # Air beside the leg is black; the tibia and the unexposed borders are
    # white (MONOCHROME1 is inverted).
    assert patch_mean(values, 800, 560, 80) < 40  # Measured: 21.
    assert patch_mean(values, 800, 800, 80) > 140  # Measured: 169.
    assert patch_mean(values, 800, 0, 100) > 240  # Measured: 255.


def test_rescale_and_window_of_signed_ct():
    dataset = pydicom.dcmread(path_of("CT_small.dcm"))
    assert dataset.PixelRepresentation == 1
    assert (dataset.RescaleSlope, dataset.RescaleIntercept) == (1, -1024)
    dataset.WindowCenter = [40, 400]
    dataset.WindowWidth = [400, 2000]
    values = pixels(render_dicom(io.BytesIO(saved(dataset))))

    # PS3.3 C.11.2.1.2.1 with the first window, on Hounsfield units.
    units = dataset.pixel_array.astype(np.float64) - 1024
    expected = ((units - 39.5) / 399 + 0.5).clip(0, 1) * 255
    assert np.abs(values - expected).max() <= 1
    assert (values == 0).any()
    assert (values == 255).any()


def test_window_is_the_full_range_without_voi():
    image = render("CT_small.dcm")
    values = pixels(image)
    stored = pydicom.dcmread(path_of("CT_small.dcm")).pixel_array.astype(np.float64)
    expected = (stored - stored.min()) / (stored.max() - stored.min()) * 255
    assert np.abs(values - expected).max() <= 1


def test_first_of_several_windows():
    name = "MR-SIEMENS-DICOM-WithOverlays.dcm"
    dataset = pydicom.dcmread(path_of(name))
    assert list(dataset.WindowCenter) == [450, 200]
    stored = dataset.pixel_array.astype(np.float64)
    expected = ((stored - 449.5) / 789 + 0.5).clip(0, 1) * 255
    assert np.abs(pixels(render(name)) - expected).max() <= 1


def test_modality_lut_and_voi_lut():
    modality = render("mlut_18.dcm")
    voi = render("vlut_04.dcm")
    for image in (modality, voi):
        values = pixels(image)
        assert image.mode == "L"
        assert values.min() == 0
        assert values.max() == 255


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_expb.dcm",
    ],
)
def test_encodings_equal_native_file(name):
    assert np.array_equal(pixels(render(name)), pixels(render("MR_small.dcm")))


@pytest.mark.parametrize(
    "name",
    [
        "emri_small.dcm",
        "emri_small_RLE.dcm",
        "emri_small_big_endian.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
    ],
)
def test_multi_frame_renders_the_first_frame(name):
    frames = pydicom.dcmread(path_of("emri_small.dcm")).pixel_array.astype(float)
    assert frames.shape == (10, 64, 64)
    assert not np.array_equal(frames[0], frames[1])
    first = frames[0]
    expected = (first - first.min()) / (first.max() - first.min()) * 255
    assert np.abs(pixels(render(name)) - expected).max() <= 1


def test_jpeg_lossless_and_extended():
    lossless = render("JPEG-LL.dcm")
    assert lossless.mode == "L"
    assert lossless.size == (256, 1024)
    extended = render("JPGExtended.dcm")  # 12-bit JPEG, process 2 and 4.
    assert extended.mode == "L"
    assert extended.size == (256, 1024)


def test_undecodable_jpeg_raises_dicom_error():
    # pylibjpeg rejects the scan header of this file (libjpeg error -1038).
    with pytest.raises(DicomError) as raised:
        render("JPEG-lossy.dcm")
    assert raised.value.reason == "undecodable"

    data = bytearray(data_of("MR_small_jp2klossless.dcm"))
    codestream = data.find(b"\xff\x4f\xff\x51")
    data[codestream + 4 : codestream + 44] = b"\xa5" * 40
    with pytest.raises(DicomError) as raised:
        make_previews(io.BytesIO(bytes(data)), "dicom")
    assert raised.value.reason == "undecodable"


# SC_rgb*.dcm are the same 100 x 100 picture of color bands.
RGB_BANDS = {
    5: (255, 0, 0),
    15: (255, 128, 128),
    25: (0, 255, 0),
    35: (128, 255, 128),
    45: (0, 0, 255),
    55: (128, 128, 255),
    65: (0, 0, 0),
    75: (64, 64, 64),
    85: (192, 192, 192),
    95: (255, 255, 255),
}
LOSSLESS_COLOR = [
    "SC_rgb.dcm",
    "SC_rgb_2frame.dcm",
    "SC_rgb_16bit.dcm",
    "SC_rgb_32bit_2frame.dcm",
    "SC_rgb_expb_16bit.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_gdcm_KY.dcm",
]
# Lossy compression, or YBR values that convert to RGB with rounding errors.
LOSSY_COLOR = [
    "SC_ybr_full_uncompressed.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_dcmtk_+eb+cr.dcm",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "SC_rgb_jpeg_lossy_gdcm.dcm",
    "SC_rgb_jls_lossy_line.dcm",
]


@pytest.mark.parametrize("name", LOSSLESS_COLOR + LOSSY_COLOR)
def test_color_stays_color(name):
    image = render(name)
    assert image.mode == "RGB"
    assert image.size == (100, 100)
    values = pixels(image)
    tolerance = 0 if name in LOSSLESS_COLOR else 16
    for row, color in RGB_BANDS.items():
        band = values[row, 10:90].mean(axis=0)
        assert np.abs(band - color).max() <= tolerance + 1, (row, band)


def test_color_ultrasound_and_multi_frame_jpeg():
    uncompressed = pixels(render("US1_UNCR.dcm"))
    lossless = pixels(render("US1_J2KR.dcm"))  # YBR_RCT
    assert np.array_equal(uncompressed, lossless)
    image = render("color3d_jpeg_baseline.dcm")  # YBR_FULL_422, 120 frames.
    assert image.mode == "RGB"
    assert image.size == (640, 480)
    values = pixels(image)
    assert np.abs(values[..., 0] - values[..., 2]).max() > 50


def test_palette_color():
    little_endian = render("OBXXXX1A.dcm")
    assert little_endian.mode == "RGB"
    big_endian = render("OBXXXX1A_expb.dcm")
    assert np.array_equal(pixels(little_endian), pixels(big_endian))
    assert pixels(little_endian).max() > 200
    face = render("OT-PAL-8-face.dcm")  # No preamble, no file meta.
    assert face.mode == "RGB"
    assert face.size == (640, 480)


def test_previews_of_small_images_are_not_enlarged():
    start = 7
    stream = io.BytesIO(b"\0" * start + data_of("MR_small.dcm"))
    stream.seek(start)
    preview, thumbnail = make_previews(stream, "dicom")
    assert stream.tell() == start
    assert opened(preview).size == (64, 64)
    assert opened(thumbnail).size == (64, 64)


def test_dicom_errors_from_make_previews():
    with pytest.raises(DicomError) as raised:
        make_previews(io.BytesIO(b"%PDF-1.4\n%%EOF\n" * 20), "dicom")
    assert raised.value.reason == "not_dicom"
    data = data_of("RG1_UNCR.dcm")
    with pytest.raises(DicomError) as raised:
        make_previews(io.BytesIO(data[: len(data) // 2]), "dicom")
    assert raised.value.reason == "truncated"
    with pytest.raises(DicomError) as raised:
        make_previews(io.BytesIO(data_of("rtplan.dcm")), "dicom")
    assert raised.value.reason == "no_pixel_data"


@pytest.fixture(scope="module")
def chest():
    """The rendered chest radiograph, 1841 x 1955, mode L."""
    return render("RG1_UNCR.dcm")


def test_png_and_jpeg_previews(chest):
    for kind, data in (("png", png_bytes(chest)), ("jpeg", jpeg_bytes(chest))):
        stream = io.BytesIO(data)
        preview, thumbnail = make_previews(stream, kind)
        assert stream.tell() == 0
        preview_image, thumbnail_image = opened(preview), opened(thumbnail)
        assert preview_image.format == thumbnail_image.format == "PNG"
        assert preview_image.size == (964, PREVIEW_SIZE)
        assert thumbnail_image.size == (241, THUMBNAIL_SIZE)
        assert preview_image.mode == "L"
        expected = chest.resize((964, PREVIEW_SIZE), Image.Resampling.LANCZOS)
        assert np.abs(pixels(preview_image) - pixels(expected)).mean() < 2


def test_large_jpeg_draft_size(chest):
    large = chest.resize((chest.width * 2, chest.height * 2)).convert("RGB")
    preview, _ = make_previews(io.BytesIO(jpeg_bytes(large)), "jpeg")
    assert opened(preview).size == (964, PREVIEW_SIZE)
    assert opened(preview).mode == "RGB"


def test_exif_orientation_is_applied(chest):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    data = jpeg_bytes(chest, exif=exif.tobytes())
    image = render_image(io.BytesIO(data), "jpeg")
    assert image.size == (1955, 1841)
    preview, _ = make_previews(io.BytesIO(data), "jpeg")
    assert opened(preview).size == (PREVIEW_SIZE, 964)


def test_16_bit_png_is_scaled_not_clipped():
    stored = pydicom.dcmread(path_of("RG1_UNCR.dcm")).pixel_array
    assert stored.max() > 20000
    data = png_bytes(Image.fromarray(stored.astype(np.uint16)))
    assert opened(data).mode == "I;16"
    image = render_image(io.BytesIO(data), "png")
    assert image.mode == "L"
    values = pixels(image)
    low, high = float(stored.min()), float(stored.max())
    expected = (stored.astype(np.float64) - low) / (high - low) * 255
    assert np.abs(values - expected).max() <= 1
    assert (values == 255).mean() < 0.001


def test_transparency_and_palette_images():
    rgba = Image.new("RGBA", (40, 30), (200, 100, 50, 255))
    rgba.paste((10, 20, 30, 0), (0, 0, 20, 30))
    image = render_image(io.BytesIO(png_bytes(rgba)))
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (0, 0, 0)
    assert image.getpixel((30, 5)) == (200, 100, 50)

    gray_alpha = Image.new("LA", (10, 10), (180, 128))
    image = render_image(io.BytesIO(png_bytes(gray_alpha)))
    assert image.mode == "L"
    assert abs(image.getpixel((0, 0)) - 90) <= 1

    palette = Image.new("RGB", (10, 10), (0, 128, 255)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    image = render_image(io.BytesIO(png_bytes(palette, transparency=0)))
    assert image.mode == "RGB"

    bilevel = Image.new("1", (10, 10), 1)
    assert render_image(io.BytesIO(png_bytes(bilevel))).getpixel((0, 0)) == 255


def png_header_only(width, height):
    """Return a PNG that declares a size in its IHDR chunk and has no pixels."""

    def chunk(kind, body):
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">L", len(body)) + kind + body + struct.pack(">L", crc)

    header = struct.pack(">LLBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused():
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    huge = png_header_only(100_000, 100_000)  # Over twice the limit: an error.
    with pytest.raises(PreviewError, match="too many pixels"):
        make_previews(io.BytesIO(huge), "png")

    side = int((limit * 1.5) ** 0.5)  # Between the limit and twice: a warning.
    large = png_header_only(side, side)
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(PreviewError, match="too many pixels"):
            render_image(io.BytesIO(large), "png")
    assert Image.MAX_IMAGE_PIXELS == limit


def test_invalid_images(chest):
    with pytest.raises(PreviewError, match="not a PNG image"):
        make_previews(io.BytesIO(b"plain text, not an image"), "png")
    with pytest.raises(PreviewError, match="not a PNG image"):
        make_previews(io.BytesIO(jpeg_bytes(chest)), "png")
    with pytest.raises(PreviewError, match="not a JPEG image"):
        make_previews(io.BytesIO(png_bytes(chest)), "jpeg")

    data = png_bytes(chest)
    with pytest.raises(PreviewError, match="complete, valid PNG image"):
        make_previews(io.BytesIO(data[: len(data) // 2]), "png")
    data = jpeg_bytes(chest)
    with pytest.raises(PreviewError, match="complete, valid JPEG image"):
        render_image(io.BytesIO(data[: len(data) // 2]))

    with pytest.raises(PreviewError, match="Invalid image kind 'gif'"):
        make_previews(io.BytesIO(data), "gif")
