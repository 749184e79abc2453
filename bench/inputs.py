"""The files the suite uploads and renders, made from pydicom-data's chest image.

The JPEG is made as the test suite makes it, RG1_UNCR.dcm's pixels scaled,
inverted to film polarity and saved by Pillow, but at full resolution. The
large DICOM repeats the frame of RG1_UNCR.dcm until the pixel data reaches
the size asked for.
"""

import io
import struct
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

CHEST_DICOM = "RG1_UNCR.dcm"
CHEST_J2K_DICOM = "RG1_J2KR.dcm"


def dicom_path(name):
    return Path(get_testdata_file(name))


def chest_jpeg(path):
    """Write the chest JPEG: full resolution (1841 x 1955), quality 88, ~390 kB."""
    dataset = pydicom.dcmread(dicom_path(CHEST_DICOM))
    pixels = dataset.pixel_array.astype(np.float32)
    low, high = np.percentile(pixels, [1, 99])
    scaled = 1.0 - np.clip((pixels - low) / (high - low), 0, 1)
    image = Image.fromarray((scaled * 255).astype(np.uint8), mode="L")
    image.save(path, format="JPEG", quality=88)
    return Path(path)


def small_png():
    image = Image.new("L", (64, 64), 128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def small_pdf():
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Blood work: within normal limits.")
    return bytes(pdf.output())


def large_dicom(path, size):
    """Write a multi-frame copy of RG1_UNCR.dcm of about `size` bytes.

    The data set is the chest image's, with NumberOfFrames set and the frame
    repeated; the pixel data is streamed to the file, so this needs the
    memory of one frame only. Returns the path; an existing file of the right
    size is kept.
    """
    path = Path(path)
    dataset = pydicom.dcmread(dicom_path(CHEST_DICOM))
    frame = dataset.PixelData
    frames = max(1, size // len(frame))
    total = len(frame) * frames
    if path.exists() and path.stat().st_size > total:
        return path

    del dataset.PixelData
    dataset.NumberOfFrames = frames
    dataset.SOPInstanceUID = pydicom.uid.generate_uid()
    head = io.BytesIO()
    dataset.save_as(head, enforce_file_format=True)
    part = path.with_suffix(".part")
    with open(part, "wb") as out:
        out.write(head.getvalue())
        # (7FE0,0010) Pixel Data, OW, explicit VR little endian.
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, total))
        for _ in range(frames):
            out.write(frame)
    part.rename(path)
    return path
