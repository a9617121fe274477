"""SAR rasters as the model reads them: one float image [channels, H, W] in [0, 1] from any file a
SAR release ships, with memory bounded for huge scenes.

- TIFF, GeoTIFF and BigTIFF (Sentinel-1 GRD and SLC, ICEYE, Capella ...): any integer, float or complex
  sample type, read a block at a time with tifffile and multi-looked while reading (read_tiff).
- MSTAR's own release format: a Phoenix text header, then big-endian magnitude and phase (read_mstar).
- JPEG, PNG and BMP (most detection sets) with Pillow; a gray JPEG decodes straight to gray at reduced
  size (read_with_pillow).

8-bit images are divided by 255; anything of higher dynamic range (16-bit, float, complex amplitude) is
logged and stretched between percentiles (unit_range). annotations.py and data.py use these.
"""
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image


class SARDataError(ValueError):
    """Data that cannot be used: an unreadable image or a malformed manifest line; says which file."""


PERCENTILES = (1.0, 99.0)  # a high-dynamic-range image's log scale is clipped here, then mapped to [0, 1]
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF, either byte order
PHOENIX_SIGNATURE = b"[PhoenixHeaderVer"  # MSTAR files open with their Phoenix header
MSTAR_EXTENSION = re.compile(r"\.\d{3}")  # MSTAR names its files HB03333.015: the extension is a number
BLOCK_PIXELS = 1 << 18  # an uncompressed TIFF is read about this many pixels at a time
BLOCK_BYTES = 1 << 22   # and a compressed one about this many compressed bytes at a time (tifffile's default: 256 MB)


@contextmanager
def pillow_limits(off):
    """Pillow's decompression-bomb check, switched off while off is true (the caller bounds memory)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None if off else saved
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def reduced_size(height, width, max_side):
    """(height, width) with the longer side brought down to max_side; unchanged when already within."""
    scale = max(height, width) / max_side if max_side else 1
    return (height, width) if scale <= 1 else (max(1, round(height / scale)), max(1, round(width / scale)))


def pool(values, size):
    """float [H, W] averaged down to size (h, w) with area weights (exact when h, w divide H, W)."""
    if tuple(values.shape) == tuple(size):
        return values
    return F.adaptive_avg_pool2d(torch.from_numpy(values)[None], size)[0].numpy()


def gray_pixels(image):
    """(float32 [H, W], is_high_dynamic_range) of an opened image; colour-encoded gray -> channel mean."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16/32-bit integers, float: raw values
        return np.asarray(image, dtype=np.float32), True
    if image.mode == "L":
        return np.asarray(image, dtype=np.float32) / 255, False
    return np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=2) / 255, False  # RGB(A), P, LA, 1


def read_with_pillow(path, max_side=None):
    """(float32 [H, W], is_high_dynamic_range) of a JPEG, PNG or BMP, averaged down to max_side.

    A JPEG decodes straight to gray (its luma: gray stored as RGB has equal channels, so luma is that
    gray) at 1/2 to 1/8 scale when max_side allows (Image.draft), so a huge JPEG is never whole in
    memory; other formats decode whole, then are averaged down.
    """
    with pillow_limits(off=max_side is not None), Image.open(path) as image:
        height, width = reduced_size(image.height, image.width, max_side)
        if image.format == "JPEG":
            image.draft("L", (width, height))
        pixels, high_dynamic_range = gray_pixels(image)
    return pool(pixels, reduced_size(*pixels.shape, max_side)), high_dynamic_range


def raster_kind(path):
    """"tiff" (TIFF or BigTIFF: GeoTIFFs and COGs are TIFFs), "mstar" (a Phoenix header) or "other"
    (left to Pillow), from the file's first bytes, whatever its extension says."""
    try:
        with open(path, "rb") as f:
            start = f.read(64)
    except OSError as error:
        raise SARDataError(f"cannot read image {path}: {error}") from error
    return "tiff" if start[:4] in TIFF_SIGNATURES else "mstar" if PHOENIX_SIGNATURE in start else "other"


def is_mstar_file(path):
    """True for a file named as MSTAR names its files (HB03333.015: a number for extension) that opens
    with a Phoenix header; what a folder listing needs, since no image extension marks these."""
    path = Path(path)
    return bool(MSTAR_EXTENSION.fullmatch(path.suffix)) and path.is_file() and raster_kind(path) == "mstar"


def mstar_header(path):
    """{key: value} text of an MSTAR file's Phoenix header, its "Key= value" lines (NumberOfRows,
    NumberOfColumns, PhoenixHeaderLength, native_header_length, TargetType, DesiredDepression ...)."""
    with open(path, "rb") as f:
        length = re.search(rb"PhoenixHeaderLength=\s*(\d+)", f.read(4096))
        if length is None:
            raise SARDataError(f"cannot read SAR image {path}: no PhoenixHeaderLength in its first 4096 bytes")
        f.seek(0)
        lines = f.read(int(length.group(1))).decode("latin-1").splitlines()
    return {key.strip(): value.strip() for key, equals, value in (line.partition("=") for line in lines) if equals}


def mstar_layout(path):
    """(height, width, byte offset, numpy dtype) of an MSTAR file's magnitude block.

    Target chips have no native header and store 32-bit float magnitude; fullscenes (target and
    clutter) follow their native header (512 bytes) with unsigned 16-bit magnitude. Either is big-endian
    (Sun) and followed by a phase block of the same size, which the model does not read. Source: the
    MSTAR release's own reader, mstar2jpeg (J. Querns, Veridian, 1998).
    """
    header = {"native_header_length": "0", **mstar_header(path)}  # chips may leave the native header out
    keys = ("NumberOfRows", "NumberOfColumns", "PhoenixHeaderLength", "native_header_length")
    if missing := [key for key in keys if not header.get(key, "").isdigit()]:
        raise SARDataError(f"cannot read SAR image {path}: its Phoenix header has no number for {', '.join(missing)}")
    height, width, offset, native = (int(header[key]) for key in keys)
    if height == 0 or width == 0:
        raise SARDataError(f"cannot read SAR image {path}: its Phoenix header gives it {height} rows and {width} columns")
    dtype = np.dtype(">f4" if native == 0 else ">u2")
    if os.path.getsize(path) < offset + native + height * width * dtype.itemsize:
        raise SARDataError(f"cannot read SAR image {path}: cut short, it ends before the {height}x{width} "
                           "magnitude values its Phoenix header announces")
    return height, width, offset + native, dtype


def read_mstar(path, max_side=None):
    """(float32 [H, W] magnitude, True) of an MSTAR chip or fullscene, averaged down to max_side.

    MSTAR (Moving and Stationary Target Acquisition and Recognition, AFRL/DARPA) ships each chip as a
    file like HB03333.015: a Phoenix text header, then magnitude and phase (mstar_layout). The linear
    magnitude is of high dynamic range, so load_sar_image logs and stretches it like any other.
    """
    height, width, offset, dtype = mstar_layout(path)
    magnitude = np.fromfile(path, dtype, height * width, offset=offset).reshape(height, width).astype(np.float32)
    return pool(magnitude, reduced_size(height, width, max_side)), True


def tiff_page(tif, path):
    """The first image of an open tifffile.TiffFile; SARDataError unless its samples are numbers."""
    page = tif.pages.first
    if page.dtype is None or page.dtype.kind not in "uifc":
        kind = getattr(page.sampleformat, "name", page.sampleformat)
        raise SARDataError(f"cannot read SAR image {path}: TIFF sample type {kind} {page.bitspersample}-bit "
                           "is not supported (integer, float and complex samples are)")
    return page


def tiff_blocks(page):
    """(row, col, samples [h, w, S]) over a TIFF image, a block at a time: what keeps memory bounded.

    Uncompressed samples stored as numpy stores them are read straight from the file in strips of
    about BLOCK_PIXELS (plain reads, not a memory map, whose pages would count as resident memory);
    anything else (compressed, complex integer, odd bit depths) is decoded by tifffile a few tiles or
    strips at a time. Of planar data (one plane per band) only plane 0 is read.
    """
    height, width, samples_per_pixel = page.imagelength, page.imagewidth, page.shaped[-1]
    if page.is_contiguous and page.dtype.itemsize * 8 == page.bitspersample:
        dtype = page.dtype.newbyteorder(page.parent.byteorder)
        step = max(1, BLOCK_PIXELS // width)
        with open(page.parent.filehandle.path, "rb") as f:
            for row in range(0, height, step):  # plane 0 comes first, row after row
                f.seek(page.dataoffsets[0] + row * width * samples_per_pixel * dtype.itemsize)
                rows = min(step, height - row)
                yield row, 0, np.fromfile(f, dtype, rows * width * samples_per_pixel).reshape(rows, width, -1)
        return
    for samples, (plane, _, row, col, _), _ in page.segments(buffersize=BLOCK_BYTES):  # [D, h, w, S], edges padded
        if plane == 0:
            yield row, col, samples[0, :height - row, :width - col]


def first_band(samples, eight_bit, rgb=False):
    """[h, w, S] samples -> float32 [h, w]: the one channel the model reads.

    8-bit RGB (the TIFF's photometric says so: gray stored as colour) is averaged over its three
    colour samples, an alpha after them left out; otherwise band 0 is read (the gray of gray + alpha),
    which is the co-polarised channel (VV of VV/VH, HH of HH/HV) in the band order SAR products ship,
    and complex samples (SLC: I + jQ) become their amplitude |I + jQ|.
    """
    if eight_bit and rgb:
        return samples[..., :3].mean(axis=2, dtype=np.float32) / 255
    band = samples[..., 0]
    if eight_bit:
        return band.astype(np.float32) / 255
    return np.abs(band).astype(np.float32) if band.dtype.kind == "c" else band.astype(np.float32)


def read_tiff(path, max_side=None):
    """(float32 [H, W], is_high_dynamic_range) of a TIFF/GeoTIFF/BigTIFF's first image, any sample type.

    Integer, float and complex samples (complex64/128 and the complex int16 of SLC products), striped
    or tiled, compressed or not; the channel read is first_band's. With max_side the image is reduced
    while it is read (multi-looking): each block's pixels are summed into cells of look x look pixels,
    look = longer side // max_side, and the cell grid is averaged down to the final size at the end, so
    memory holds one block and the small grid, whatever the file size. 0 and NaN are no-data in a
    non-8-bit image (Sentinel-1 GRD borders, SLC fill) and are left out of every average; a cell with
    no data stays NaN (unit_range makes it 0). Source: the TIFF 6.0 spec and tifffile.
    """
    with tifffile.TiffFile(path) as tif:
        page = tiff_page(tif, path)
        height, width, eight_bit = page.imagelength, page.imagewidth, page.dtype == np.uint8
        rgb = page.photometric == tifffile.PHOTOMETRIC.RGB
        look = max(1, max(height, width) // max_side) if max_side else 1  # pixels per look, each way
        rows, cols = -(-height // look), -(-width // look)
        total, count = np.zeros(rows * cols), np.zeros(rows * cols)
        for row, col, samples in tiff_blocks(page):
            values = first_band(samples, eight_bit, rgb)
            h, w = values.shape
            cells = (np.arange(row, row + h) // look)[:, None] * cols + (np.arange(col, col + w) // look)
            keep = slice(None) if eight_bit else ~np.isnan(values) & (values != 0)
            cells, values = cells[keep].ravel(), values[keep].ravel()
            if cells.size:  # bincount over the cells this block touches only
                low, high = cells.min(), cells.max() + 1
                total[low:high] += np.bincount(cells - low, values, high - low)
                count[low:high] += np.bincount(cells - low, None, high - low)
    size = reduced_size(height, width, max_side)
    total, count = pool(total.reshape(rows, cols), size), pool(count.reshape(rows, cols), size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(np.float32), not eight_bit


def unit_range(values):
    """High-dynamic-range SAR values -> [0, 1]: log scale, then clip to PERCENTILES and stretch.

    Rule: a negative median means the data are already in dB (backscatter of -15 dB is typical) and
    are not logged again; otherwise they are linear amplitude or intensity and go to log10, zeros and
    the few negatives that noise subtraction or resampling leave in linear data becoming the darkest
    real value.
    Amplitude or intensity need not be known: 20 log10(A) = 10 log10(I), and the percentile stretch
    removes any scale and offset, so log10 of either gives the same picture. NaN -> 0, +inf -> 1.
    """
    finite = np.isfinite(values)
    if finite.any() and np.median(values[finite]) >= 0:  # linear
        positive = values[finite & (values > 0)]
        values = np.log10(np.maximum(values, positive.min() if positive.size else 1.0))
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.float32)
    sample = finite[:: max(1, finite.size // 1_000_000)]  # percentiles of a million pixels are plenty
    low, high = np.percentile(sample, PERCENTILES)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.nan_to_num(np.clip(scaled, 0, 1), nan=0.0).astype(np.float32)


def load_sar_image(path, channels=1, max_side=None):
    """A SAR image file as a float tensor [channels, H, W] in [0, 1]; gray is repeated to fill channels.

    TIFFs (any sample type, see read_tiff) are read with tifffile, MSTAR files by read_mstar, JPEG/PNG/BMP
    with Pillow; the file's first bytes decide, not its extension. 8-bit images are divided by 255;
    16-bit, 32-bit, float and complex ones go through unit_range. With
    max_side, the longer side is averaged down to max_side while reading, so memory stays bounded for
    any scene. Raises SARDataError naming the file (and the sample type when that is the problem).
    """
    try:
        reader = {"tiff": read_tiff, "mstar": read_mstar, "other": read_with_pillow}[raster_kind(path)]
        pixels, high_dynamic_range = reader(path, max_side)
    except SARDataError:
        raise
    except Exception as error:  # Pillow and tifffile raise many kinds; one error that names the file
        raise SARDataError(f"cannot read SAR image {path}: {error}") from error
    if high_dynamic_range:
        pixels = unit_range(pixels)
    return torch.from_numpy(np.ascontiguousarray(pixels))[None].repeat(channels, 1, 1)


def redisplay(image, gamma, gain, db=False):
    """[C, H, W] in [0, 1] -> min(1, gain * image ** gamma): the same backscatter as another product or
    converter would show it. A gamma of 2 turns amplitude into intensity (amplitude squared) and 0.5
    back; a gain is another calibration or stretch. db=True first shows the image in decibels as a
    float raster is read (unit_range: log10, then its 1st-99th percentiles stretched to [0, 1]): an
    8-bit release of linear magnitudes (MSTAR's JPEG chips) as it looks when the same scene ships as
    magnitudes and load_sar_image reads it. Monotonic, so what is bright stays brighter than what is
    dark. gamma = gain = 1 without db returns the image itself."""
    if db:
        image = torch.from_numpy(unit_range(image.cpu().double().numpy())).to(image.device)
    if gamma == gain == 1:
        return image
    return image.pow(gamma).mul(gain).clamp(0, 1)


def squeeze_to_square(image, size):
    """[C, H, W] -> [C, size, size]: the whole image, antialiased, never cropped (a target may sit at
    an edge, and captions speak of every target); a no-op at that size. What train and eval feed CLIP."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def image_size(path):
    """(width, height) of an image that decodes: a TIFF's header is checked (sample type included),
    an MSTAR file's header and length, a JPEG is decoded at 1/8 scale, which is cheap. Raises
    SARDataError naming the file."""
    try:
        kind = raster_kind(path)
        if kind == "tiff":
            with tifffile.TiffFile(path) as tif:
                page = tiff_page(tif, path)
                return page.imagewidth, page.imagelength
        if kind == "mstar":
            height, width, _, _ = mstar_layout(path)
            return width, height
        with pillow_limits(off=True), Image.open(path) as image:
            size = image.size
            image.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
    except SARDataError:
        raise
    except Exception as error:
        raise SARDataError(f"cannot read image {path}: {error}") from error
    return size
