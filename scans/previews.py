"""Display-ready previews and thumbnails of DICOM, PNG and JPEG images.

DICOM grayscale images go through the DICOM display pipeline: modality LUT
or rescale, VOI LUT or window (the first one when there are several),
MONOCHROME1 inversion, then scaling to 8 bits. When the data set has no VOI
LUT and no valid window, the window is the full range (minimum to maximum) of
the modality-transformed first frame.

Errors: DICOM files raise scans.dicom.DicomError (reason "undecodable" when
the pixel data cannot be decoded or displayed); PNG and JPEG files, and an
unknown kind, raise PreviewError.

This module does not use Django.
"""

from __future__ import annotations

import io
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

from scans.dicom import UNDECODABLE, DicomError, read_first_frame

__all__ = [
    "PREVIEW_SIZE",
    "THUMBNAIL_SIZE",
    "PreviewError",
    "make_previews",
    "render_dicom",
    "render_image",
]

# Long side in pixels; smaller images keep their size.
PREVIEW_SIZE = 1024
THUMBNAIL_SIZE = 256

KINDS = ("dicom", "png", "jpeg")
_FORMATS = {"png": ("PNG",), "jpeg": ("JPEG",), None: ("PNG", "JPEG")}
_FORMAT_NAMES = {"png": "PNG image", "jpeg": "JPEG image", None: "PNG or JPEG image"}
_LOADED_NAMES = {"PNG": "PNG image", "JPEG": "JPEG image", "MPO": "JPEG image"}


class PreviewError(ValueError):
    """A PNG or JPEG file that cannot be shown, or an unknown file kind."""


def make_previews(fileobj: IO[bytes], kind: str) -> tuple[bytes, bytes]:
    """Return the preview and the thumbnail of an image file as PNG bytes.

    `kind` is "dicom", "png" or "jpeg". The long side of the preview is
    PREVIEW_SIZE and that of the thumbnail THUMBNAIL_SIZE, or less for
    smaller images. The file object is rewound to where it started.
    """
    if kind not in KINDS:
        raise PreviewError(_kind_message(kind))
    start = fileobj.tell()
    try:
        if kind == "dicom":
            image = render_dicom(fileobj)
        else:
            image = _render_image(fileobj, kind, draft_size=PREVIEW_SIZE)
    finally:
        fileobj.seek(start)
    preview = _shrink(image, PREVIEW_SIZE)
    thumbnail = _shrink(preview, THUMBNAIL_SIZE)
    return _png(preview), _png(thumbnail)


def render_dicom(fileobj: IO[bytes]) -> Image.Image:
    """Return the first frame of a DICOM image as an 8-bit "L" or "RGB" image.

    Grayscale images go through the display pipeline that the module
    documentation describes. Color images stay color: RGB, YBR (which pydicom
    converts to RGB) and PALETTE COLOR. Raises DicomError.
    """
    dataset, frame = read_first_frame(fileobj)
    try:
        pixels = _display_pixels(dataset, frame)
    except DicomError:
        raise
    except Exception as error:
        raise DicomError(UNDECODABLE, str(error)) from error
    return Image.fromarray(pixels)


def render_image(fileobj: IO[bytes], kind: str | None = None) -> Image.Image:
    """Return a PNG or JPEG file as an 8-bit "L" or "RGB" image.

    `kind` is "png", "jpeg" or None for either. The EXIF orientation is
    applied, 16-bit and 32-bit grayscale is scaled from its minimum to its
    maximum, and transparency is composed over black. Pillow's
    decompression bomb limit applies: images with more than
    Image.MAX_IMAGE_PIXELS pixels are rejected. Raises PreviewError. The file
    object is rewound to where it started.
    """
    start = fileobj.tell()
    try:
        return _render_image(fileobj, kind, draft_size=None)
    finally:
        fileobj.seek(start)


def _render_image(
    fileobj: IO[bytes], kind: str | None, *, draft_size: int | None
) -> Image.Image:
    """Open, check and convert a PNG or JPEG file without rewinding it.

    With `draft_size`, a JPEG file may be decoded at a reduced scale whose
    sides are still at least `draft_size`.
    """
    if kind not in _FORMATS:
        raise PreviewError(_kind_message(kind))
    format_name = _FORMAT_NAMES[kind]
    try:
        image = Image.open(fileobj, formats=_FORMATS[kind])
    except Image.DecompressionBombError as error:
        raise PreviewError(_bomb_message()) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise PreviewError(f"The file is not a {format_name}.") from error

    format_name = _LOADED_NAMES.get(image.format or "", format_name)
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        # Pillow only warns between the limit and twice the limit.
        raise PreviewError(_bomb_message())
    if draft_size and image.format == "JPEG":
        # Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while it still
        # gives at least the requested size.
        image.draft(None, (draft_size, draft_size))
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _display_mode(image)
    except Image.DecompressionBombError as error:
        raise PreviewError(_bomb_message()) from error
    except (OSError, SyntaxError, ValueError) as error:
        message = f"The file is not a complete, valid {format_name}."
        raise PreviewError(message) from error


def _kind_message(kind: Any) -> str:
    return f"Invalid image kind {kind!r}: expected one of {', '.join(KINDS)}."


def _bomb_message() -> str:
    return (
        "The image has too many pixels to be shown safely "
        f"(more than {Image.MAX_IMAGE_PIXELS})."
    )


def _display_mode(image: Image.Image) -> Image.Image:
    """Convert an image to 8-bit "L" or "RGB"."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        # I;16, I;16B, I;16L, I and F: scale the value range to 8 bits.
        return Image.fromarray(_stretch(np.asarray(image)))
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La"):
        return _over_black(image.convert("LA"), "L")
    if mode in ("RGBA", "RGBa"):
        return _over_black(image.convert("RGBA"), "RGB")
    return image.convert("RGB")


def _over_black(image: Image.Image, mode: str) -> Image.Image:
    """Compose an image with an alpha channel over a black background."""
    background = Image.new(mode, image.size, 0)
    background.paste(image.convert(mode), mask=image.getchannel("A"))
    return background


def _shrink(image: Image.Image, size: int) -> Image.Image:
    """Return a copy whose long side is at most `size`, keeping the aspect."""
    copy = image.copy()
    copy.thumbnail((size, size), Image.Resampling.LANCZOS)
    return copy


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _display_pixels(dataset: Dataset, frame: np.ndarray) -> np.ndarray:
    """Return the 8-bit display values of a decoded frame."""
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    if frame.ndim == 3:
        return _color_to_8_bits(frame, dataset)
    if frame.ndim != 2:
        raise DicomError(UNDECODABLE, f"a frame has the shape {frame.shape}")
    if photometric == "PALETTE COLOR":
        return _color_to_8_bits(_palette_color(dataset, frame), None)
    return _grayscale(dataset, frame, photometric)


def _palette_color(dataset: Dataset, frame: np.ndarray) -> np.ndarray:
    """Apply the Palette Color LUT and return the RGB samples."""
    if not dataset.file_meta.TransferSyntaxUID.is_little_endian:
        # apply_color_lut() reads OW palette data as little endian; swap the
        # bytes of each word of big endian data first.
        for color in ("Red", "Green", "Blue", "Alpha"):
            keyword = f"{color}PaletteColorLookupTableData"
            if keyword in dataset and dataset[keyword].VR == "OW":
                words = np.frombuffer(dataset[keyword].value, dtype=">u2")
                dataset[keyword].value = words.astype("<u2").tobytes()
    return apply_color_lut(frame, dataset)[..., :3]


def _color_to_8_bits(frame: np.ndarray, dataset: Dataset | None) -> np.ndarray:
    """Scale RGB samples to 8 bits by their bit depth."""
    if frame.shape[-1] != 3:
        raise DicomError(
            UNDECODABLE, f"a color frame has {frame.shape[-1]} samples per pixel"
        )
    if frame.dtype.itemsize == 1:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    bits = frame.dtype.itemsize * 8
    if dataset is not None:
        bits = _int(dataset.get("BitsStored"), bits)
    scaled = frame.astype(np.float32)
    scaled *= 255 / (2**bits - 1)
    np.clip(scaled, 0, 255, out=scaled)
    scaled += 0.5
    return scaled.astype(np.uint8)


def _grayscale(dataset: Dataset, frame: np.ndarray, photometric: str) -> np.ndarray:
    """Apply the modality, VOI and presentation steps to a grayscale frame."""
    values = _modality(dataset, frame)
    display = _voi_lut(dataset, values)
    if display is None:
        display = _window(dataset, values)
    if display is None:
        display = _stretch_unit(values)
    shape = str(dataset.get("PresentationLUTShape", "")).strip().upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        # MONOCHROME1 shows the lowest value as white, after the VOI.
        np.subtract(1, display, out=display)
    return _unit_to_8_bits(display)


def _modality(dataset: Dataset, frame: np.ndarray) -> np.ndarray:
    """Apply the Modality LUT, or the rescale slope and intercept in float32."""
    if dataset.get("ModalityLUTSequence"):
        return apply_modality_lut(frame, dataset)
    slope = _float(dataset.get("RescaleSlope"), 1.0)
    intercept = _float(dataset.get("RescaleIntercept"), 0.0)
    if slope == 1.0 and intercept == 0.0:
        return frame
    # apply_modality_lut() would return float64; float32 halves the memory.
    values = frame.astype(np.float32)
    values *= slope
    values += intercept
    return values


def _voi_lut(dataset: Dataset, values: np.ndarray) -> np.ndarray | None:
    """Apply the first VOI LUT and scale its output range to 0-1, if present."""
    sequence = dataset.get("VOILUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    if item.get("LUTDescriptor") is None or item.get("LUTData") is None:
        return None
    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values).astype(np.int32)
    entries, first, _ = item.LUTDescriptor
    entries = entries or 2**16
    # The output range of the LUT, found by applying it to all its inputs.
    table = apply_voi(np.arange(first, first + entries, dtype=np.int32), dataset)
    low, high = float(table.min()), float(table.max())
    output = apply_voi(values, dataset, index=0).astype(np.float32)
    return _scale_unit(output, low, high)


def _window(dataset: Dataset, values: np.ndarray) -> np.ndarray | None:
    """Apply the first window center and width (PS3.3 C.11.2.1), if valid."""
    center = _float(_first(dataset.get("WindowCenter")), None)
    width = _float(_first(dataset.get("WindowWidth")), None)
    if center is None or width is None:
        return None
    function = str(dataset.get("VOILUTFunction", "LINEAR")).strip().upper()
    # The steps change the array in place, because the caller does not use it
    # again.
    display = values.astype(np.float32, copy=False)

    if function == "SIGMOID":
        if width <= 0:
            return None
        display -= center
        display *= -4 / width
        np.exp(display, out=display)
        display += 1
        np.reciprocal(display, out=display)
        return display

    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
    else:
        # LINEAR, also for unknown functions.
        if width < 1:
            return None
        center -= 0.5
        width -= 1
        if width == 0:
            return (display > center).astype(np.float32)

    display -= center
    display /= width
    display += 0.5
    np.clip(display, 0, 1, out=display)
    return display


def _stretch_unit(values: np.ndarray) -> np.ndarray:
    """Scale values in place from their minimum to their maximum into 0-1."""
    values = values.astype(np.float32, copy=False)
    return _scale_unit(values, float(values.min()), float(values.max()))


def _scale_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Scale float32 values in place from low-high to 0-1."""
    if high <= low:
        values.fill(0)
        return values
    values -= low
    values /= high - low
    np.clip(values, 0, 1, out=values)
    return values


def _unit_to_8_bits(values: np.ndarray) -> np.ndarray:
    values *= 255
    values += 0.5
    return values.astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Scale values from their minimum to their maximum into 8 bits."""
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        # A table of all 16-bit values avoids a float32 copy of the image.
        table = np.arange(2**16, dtype=np.float32)
        table = _scale_unit(table, float(values.min()), float(values.max()))
        return _unit_to_8_bits(table)[values]
    return _unit_to_8_bits(_stretch_unit(values.astype(np.float32)))


def _first(value: Any) -> Any:
    """Return the first of several values, or the value itself."""
    if value is None or isinstance(value, (str, bytes)):
        return value
    try:
        return value[0]
    except (TypeError, IndexError, KeyError):
        return value


def _float(value: Any, default: float | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if np.isfinite(number) else default


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
