"""Real SAR data for SARCLIP: detection sets in, MMSAR manifests out, SAR rasters, a Dataset over them.

MMSAR is the union of SAR object-detection sets, each image captioned by D2C from its boxes. This file
reads the usual detection formats as the public releases ship them into one Record type, checks them,
writes them as a manifest, reads SAR pixels (any TIFF sample type, huge scenes bounded in memory), and
serves a manifest to training. The embedded synthetic default set lives in synthetic.py.

    python data.py build --source HRSID=coco:HRSID/annotations/train2017.json \\
                         --source voc:mstar_scenes:mstar_scenes/classes.txt --out mmsar.jsonl
    python data.py sarcount --manifest mmsar.jsonl --out sarcount.jsonl --split test

A manifest is JSON Lines, one image per line (the last three keys only when known):

    {"image": "JPEGImages/000001.jpg", "width": 491, "height": 594, "source": "mstar_scenes",
     "counts": {"BRDM2": 1, "ZIL131": 1}, "boxes": [[15, 354, 108, 448, "BRDM2"], ...],
     "captions": ["a SAR image of a BRDM2 and a ZIL131.", ...], "split": "train",
     "pixel_spacing": 2.0, "scene": "inshore", "near_coast": [false, true]}

An image path is relative to the manifest's folder (so data and manifest move together), or absolute
when the image lies outside that folder.
"""
import argparse
import hashlib
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image

import d2c

# ---- records and category names --------------------------------------------------------------------

# One name per kind of target across all sets. Keys are matched lower-cased with spaces, "_" and "-"
# removed ("Oil_Tank" = "oil tank"). "tank" is a storage tank (SARDet-100K); MSTAR's T62/T72 battle
# tanks keep their own names. SAR-AIRcraft's aircraft types become "aircraft"; its class "other" needs
# a class list line "other aircraft" (a bare "other" is too vague to map for every set).
CATEGORY_NAMES = {
    **dict.fromkeys(["ship", "boat", "vessel", "cargo", "cargo ship", "container ship", "tanker", "ferry",
                     "bulk carrier", "fishing", "fishing boat", "passenger ship", "tug", "dredger", "warship",
                     "other ship"], "ship"),
    **dict.fromkeys(["aircraft", "airplane", "aeroplane", "plane", "A220", "A320/321", "A330", "A350",
                     "ARJ21", "Boeing737", "Boeing747", "Boeing787"], "aircraft"),
    **dict.fromkeys(["tank", "oil tank", "storage tank"], "tank"),
    **dict.fromkeys(["harbor", "harbour", "port"], "harbor"),
    "bridge": "bridge",
    **dict.fromkeys(["car", "vehicle", "small vehicle"], "car"),
}
KNOWN_CATEGORIES = set(CATEGORY_NAMES.values())


def squash(name):
    """A class name reduced for matching: lower case, no spaces, underscores or hyphens."""
    return re.sub(r"[\s_\-]", "", name.lower())


NAME_LOOKUP = {squash(key): value for key, value in CATEGORY_NAMES.items()}


def category_name(raw, classes=None):
    """The MMSAR category of an annotation's class id or name: class list, then CATEGORY_NAMES.

    A name in neither is kept, lower-cased unless it is a designation such as "T72" or "2S1" (a digit
    or all capitals), which D2C writes as it is; build_manifest counts it as an unknown category.
    """
    name = " ".join(str(raw).split())
    name = (classes or {}).get(name, name)
    return NAME_LOOKUP.get(squash(name)) or (name if d2c.is_model_name(name) else name.lower())


class SARDataError(ValueError):
    """Data that cannot be used: an unreadable image or a malformed manifest line; says which file."""


@dataclass
class Record:
    """One annotated SAR image: what every reader returns and D2C reads (through to_d2c)."""
    image: str                      # path of the image file
    width: int | None               # pixels; None until read off the image (build_manifest does)
    height: int | None
    objects: list = field(default_factory=list)  # {"category", "box": [x0, y0, x1, y1], "polygon"?, "near_coast"?}
    source: str = ""                # the set's name when the user gave one ("HRSID=coco:..."), for captions
    pixel_spacing: float | None = None  # metres per pixel, when the annotation says
    scene: str | None = None        # "offshore", "inshore" or None
    annotation: str = ""            # the annotation file it came from, for the build report

    def to_d2c(self):
        """The plain dict d2c.captions reads (polygons left out)."""
        objects = [{k: v for k, v in obj.items() if k != "polygon"} for obj in self.objects]
        return {"width": self.width, "height": self.height, "objects": objects, "source": self.source or None,
                "pixel_spacing": self.pixel_spacing, "scene": self.scene}


def make_object(name, box, classes=None, polygon=None, near_coast=None):
    """An object dict from raw annotation values (raises ValueError on a missing name or bad numbers)."""
    if name is None or not str(name).strip():
        raise ValueError("an object has no class name")
    obj = {"category": category_name(name, classes), "box": [float(v) for v in box]}
    if polygon:
        obj["polygon"] = [float(v) for v in polygon]
    if near_coast is not None:
        obj["near_coast"] = str(near_coast).strip().lower() in ("1", "true", "yes")
    return obj


def polygon_box(polygon):
    """The axis-aligned box [x0, y0, x1, y1] around a flat polygon [x1, y1, x2, y2, ...]."""
    xs, ys = polygon[0::2], polygon[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def positive_or_none(text):
    """A positive number from annotation text ("3.0"), else None ("null", "", "-1")."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def read_text(path):
    """A text file's contents; a UTF-8 byte-order mark (files saved by Windows tools) is dropped."""
    return Path(path).read_text(encoding="utf-8-sig")


def is_bare_number(name):
    """True for a class that is only a number ("3", "07", "2.0"): an id nobody named."""
    return re.fullmatch(r"\d+(\.\d*)?", str(name).strip()) is not None


def read_class_list(path):
    """{name as in the annotations: class name} from lines "0 2S1" or "other aircraft"; a line
    holding one name only (YOLO's obj.names) gets its line number as id."""
    names = {}
    for number, line in enumerate(read_text(path).splitlines()):
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].strip()
        elif parts:
            names[str(number)] = parts[0]
    return names


# ---- annotation readers: VOC, COCO, YOLO, DOTA -> Records -------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
IMAGE_FOLDERS = ("JPEGImages", "images", "")  # where detection releases put images, relative to a root


def find_image(roots, name):
    """The image called name (any image extension) in a root or its JPEGImages/ or images/ folder.

    Falls back to where VOC expects it; build_manifest then reports it missing.
    """
    name = Path(name)
    base = name.with_suffix("") if name.suffix.lower() in IMAGE_EXTENSIONS else name
    names = [name] + [base.parent / (base.name + ext) for ext in IMAGE_EXTENSIONS]
    for root in roots:
        for folder in IMAGE_FOLDERS:
            for candidate in names:
                if (Path(root) / folder / candidate).is_file():
                    return Path(root) / folder / candidate
    return Path(roots[0]) / IMAGE_FOLDERS[0] / name


def rotated_corners(cx, cy, w, h, angle):
    """The four corners [x1, y1, ..., x4, y4] of a w x h box centred at (cx, cy), its w side turned
    angle radians from the x axis (clockwise on screen, since y points down)."""
    c, s = math.cos(angle), math.sin(angle)
    return [v for u, t in ((-w, -h), (w, -h), (w, h), (-w, h)) for v in (cx + (u * c - t * s) / 2, cy + (u * s + t * c) / 2)]


def numbers(node, keys):
    """The float values of node's child tags keys; ValueError naming the first one missing."""
    texts = [node.findtext(k) for k in keys]
    if None in texts:
        raise ValueError(f"<{node.tag}> has no <{keys[texts.index(None)]}>")
    return [float(t) for t in texts]


CORNER_KEYS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


def voc_box(obj):
    """([x0, y0, x1, y1], polygon or None) of a VOC <object>; the box is the polygon's extent.

    - <bndbox>: xmin ymin xmax ymax (some releases write floats: "12.0").
    - <rotated_bndbox>, the official SSDD release: the corners x1 y1 ... x4 y4 when present, else
      rotated_bbox_cx/cy/w/h and rotated_bbox_theta in DEGREES (w turned theta from the x axis).
    - <robndbox>, roLabelImg (also used for HRSC2016-style sets): cx cy w h and angle in RADIANS.
    - <polygon>: x1 y1 ... x4 y4.
    """
    if (box := obj.find("bndbox")) is not None:
        return numbers(box, ("xmin", "ymin", "xmax", "ymax")), None
    if (rbox := obj.find("rotated_bndbox")) is not None:
        if all(rbox.find(k) is not None for k in CORNER_KEYS):
            polygon = numbers(rbox, CORNER_KEYS)
        else:
            cx, cy, w, h, theta = numbers(rbox, [f"rotated_bbox_{k}" for k in ("cx", "cy", "w", "h", "theta")])
            polygon = rotated_corners(cx, cy, w, h, math.radians(theta))
    elif (rbox := obj.find("robndbox")) is not None:
        polygon = rotated_corners(*numbers(rbox, ("cx", "cy", "w", "h", "angle")))
    elif (poly := obj.find("polygon")) is not None:
        polygon = numbers(poly, CORNER_KEYS)
    else:
        raise ValueError("an object has no <bndbox>, <rotated_bndbox>, <robndbox> or <polygon>")
    return polygon_box(polygon), polygon


def parse_voc(path, folder, classes=None):
    """One Pascal VOC XML file as a Record (raises on anything malformed, so the file is skipped whole)."""
    root = ET.parse(path).getroot()
    objects = []
    for obj in root.iter("object"):
        box, polygon = voc_box(obj)
        objects.append(make_object(obj.findtext("name"), box, classes, polygon, obj.findtext("near_coast")))
    size = root.find("size")
    width, height = (int(float(size.findtext(k) or 0)) or None if size is not None else None
                     for k in ("width", "height"))
    scene = root.findtext("scene")
    return Record(str(find_image([folder], root.findtext("filename") or path.stem)), width, height, objects,
                  pixel_spacing=positive_or_none(root.findtext("pixel_spacing")),
                  scene=scene if scene in ("offshore", "inshore") else None, annotation=str(path))


def read_voc(folder, classes=None, problems=None):
    """Pascal VOC (SSDD, HRSID, AIR-SARShip, SAR-AIRcraft): folder/Annotations/*.xml, images in JPEGImages/.

    Boxes may be axis-aligned or rotated (voc_box lists the conventions). Also reads sarclip's extra tags <pixel_spacing> (metres/pixel), <scene> and per object <near_coast>.
    """
    folder, problems = Path(folder), [] if problems is None else problems
    records = []
    for path in sorted((folder / "Annotations").glob("*.xml")) or sorted(folder.glob("*.xml")):
        try:
            records.append(parse_voc(path, folder, classes))
        except (ET.ParseError, TypeError, ValueError, OSError) as error:
            problems.append(("malformed annotation", f"{path}: {error}"))
    return records


def read_coco(path, classes=None, problems=None):
    """COCO JSON (HRSID, SARDet-100K, SADD): [x, y, w, h] boxes; images beside the JSON or one folder up.

    An annotation whose category_id is not among the declared categories is dropped, and a crowd
    region (iscrowd: 1, many objects under one mask) is not counted as an object: both are reported.
    """
    path, problems = Path(path), [] if problems is None else problems
    try:
        data = json.loads(read_text(path))
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        per_image = {}
        for ann in data.get("annotations", []):
            per_image.setdefault(ann["image_id"], []).append(ann)
        images = list(data["images"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        problems.append(("malformed annotation", f"{path}: {error}"))
        return []
    records = []
    for info in images:
        try:
            objects = []
            for ann in per_image.get(info["id"], []):
                where = f"{path}: image {info['file_name']}, annotation {ann.get('id')}"
                if ann["category_id"] not in names:
                    problems.append(("undeclared COCO category dropped", f"{where}: category_id {ann['category_id']}"))
                elif ann.get("iscrowd"):
                    problems.append(("COCO crowd region not counted", where))
                else:
                    x, y, w, h = ann["bbox"]
                    segmentation = ann.get("segmentation")
                    polygon = segmentation[0] if isinstance(segmentation, list) and segmentation else None
                    objects.append(make_object(names[ann["category_id"]], [x, y, x + w, y + h], classes, polygon))
            image = find_image([path.parent, path.parent.parent], info["file_name"])
            records.append(Record(str(image), info.get("width"), info.get("height"), objects, annotation=str(path)))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            problems.append(("malformed annotation", f"{path}: image {info!r:.80}: {error}"))
    return records


def label_files(folder, subfolder):
    """The .txt label files of a YOLO or DOTA set: in folder/<subfolder>/ if present, else in folder."""
    labels = folder / subfolder if (folder / subfolder).is_dir() else folder
    return labels, [p for p in sorted(labels.rglob("*.txt")) if p.name != "classes.txt"]


def read_yolo(folder, classes=None, problems=None):
    """YOLO: a labels/*.txt per image, lines "class cx cy w h" in fractions of the image size.

    The image size comes from the image itself (image_size).
    """
    folder, problems = Path(folder), [] if problems is None else problems
    labels, paths = label_files(folder, "labels")
    records = []
    for path in paths:
        image = find_image([folder], path.relative_to(labels).with_suffix(""))
        if not image.is_file():
            problems.append(("missing image", f"{path}: no image {image}"))
            continue
        try:
            width, height = image_size(image)
        except SARDataError as error:
            problems.append(("corrupt image", f"{path}: {error}"))
            continue
        try:
            objects = []
            for line in read_text(path).splitlines():
                if not (parts := line.split()):
                    continue
                values = [float(v) * (width if i % 2 == 0 else height) for i, v in enumerate(parts[1:])]
                if len(values) == 4:
                    cx, cy, w, h = values
                    objects.append(make_object(parts[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], classes))
                else:
                    raise ValueError(f"line {line!r}: expected 'class cx cy w h'")
        except (ValueError, OSError) as error:
            problems.append(("malformed annotation", f"{path}: {error}"))
            continue
        records.append(Record(str(image), width, height, objects, annotation=str(path)))
    return records


def read_dota(folder, classes=None, problems=None):
    """DOTA-style (RSDD, SIVED): labelTxt/*.txt, lines "x1 y1 ... x4 y4 class [difficult]".

    Header lines "imagesource:..." are skipped; "gsd:0.5" is the pixel spacing in metres.
    """
    folder, problems = Path(folder), [] if problems is None else problems
    labels, paths = label_files(folder, "labelTxt")
    records = []
    for path in paths:
        try:
            spacing, objects = None, []
            for line in read_text(path).splitlines():
                key, colon, value = line.partition(":")
                if colon:  # a header line
                    spacing = positive_or_none(value) if key.strip().lower() == "gsd" else spacing
                elif parts := line.split():
                    if len(parts) < 9:
                        raise ValueError(f"line {line!r}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class'")
                    polygon = [float(v) for v in parts[:8]]
                    objects.append(make_object(parts[8], polygon_box(polygon), classes, polygon))
        except (ValueError, OSError) as error:
            problems.append(("malformed annotation", f"{path}: {error}"))
            continue
        image = find_image([folder], path.relative_to(labels).with_suffix(""))
        records.append(Record(str(image), None, None, objects, pixel_spacing=spacing, annotation=str(path)))
    return records


READERS = {"voc": read_voc, "coco": read_coco, "yolo": read_yolo, "dota": read_dota}


# ---- SAR pixels ---------------------------------------------------------------------------------------

PERCENTILES = (1.0, 99.0)  # a high-dynamic-range image's log scale is clipped here, then mapped to [0, 1]
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF, either byte order
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


def is_tiff(path):
    """True when the file starts like a TIFF or BigTIFF (GeoTIFFs and COGs are TIFFs)."""
    with open(path, "rb") as f:
        return f.read(4) in TIFF_SIGNATURES


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


def first_band(samples, eight_bit):
    """[h, w, S] samples -> float32 [h, w]: the one channel the model reads.

    8-bit samples are averaged (gray stored as RGB); otherwise band 0 is read, which is the
    co-polarised channel (VV of VV/VH, HH of HH/HV) in the band order SAR products ship, and complex
    samples (SLC: I + jQ) become their amplitude |I + jQ|.
    """
    if eight_bit:
        return samples.mean(axis=2, dtype=np.float32) / 255
    band = samples[..., 0]
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
        look = max(1, max(height, width) // max_side) if max_side else 1  # pixels per look, each way
        rows, cols = -(-height // look), -(-width // look)
        total, count = np.zeros(rows * cols), np.zeros(rows * cols)
        for row, col, samples in tiff_blocks(page):
            values = first_band(samples, eight_bit)
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

    Rule: any negative value means the data are already in dB and are not logged again; otherwise
    they are linear amplitude or intensity and go to log10 (zeros become the darkest real value).
    Amplitude or intensity need not be known: 20 log10(A) = 10 log10(I), and the percentile stretch
    removes any scale and offset, so log10 of either gives the same picture. NaN -> 0, +inf -> 1.
    """
    finite = np.isfinite(values)
    if finite.any() and values[finite].min() >= 0:  # linear
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

    TIFFs (any sample type, see read_tiff) are read with tifffile, JPEG/PNG/BMP with Pillow. 8-bit
    images are divided by 255; 16-bit, 32-bit, float and complex ones go through unit_range. With
    max_side, the longer side is averaged down to max_side while reading, so memory stays bounded for
    any scene. Raises SARDataError naming the file (and the sample type when that is the problem).
    """
    try:
        pixels, high_dynamic_range = read_tiff(path, max_side) if is_tiff(path) else read_with_pillow(path, max_side)
    except SARDataError:
        raise
    except Exception as error:  # Pillow and tifffile raise many kinds; one error that names the file
        raise SARDataError(f"cannot read SAR image {path}: {error}") from error
    if high_dynamic_range:
        pixels = unit_range(pixels)
    return torch.from_numpy(np.ascontiguousarray(pixels))[None].repeat(channels, 1, 1)


def squeeze_to_square(image, size):
    """[C, H, W] -> [C, size, size]: the whole image, antialiased, never cropped (a target may sit at
    an edge, and captions speak of every target); a no-op at that size. What train and eval feed CLIP."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def image_size(path):
    """(width, height) of an image that decodes: a TIFF's header is checked (sample type included),
    a JPEG is decoded at 1/8 scale, which is cheap. Raises SARDataError naming the file."""
    try:
        if is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                page = tiff_page(tif, path)
                return page.imagewidth, page.imagelength
        with pillow_limits(off=True), Image.open(path) as image:
            size = image.size
            image.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
    except SARDataError:
        raise
    except Exception as error:
        raise SARDataError(f"cannot read image {path}: {error}") from error
    return size


# ---- MMSAR manifests ---------------------------------------------------------------------------------

MIN_BOX_SIDE = 1.0  # pixels; a box narrower or lower than this after clipping is dropped
MANIFEST_KEYS = ("image", "width", "height", "source", "counts", "boxes", "captions", "split")


def stable_hash(text):
    """A 64-bit integer from text, the same on every machine and run (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def split_of(key):
    """"train", "val" or "test" (80/10/10) from a hash of an image's path: stable in any order or build."""
    u = stable_hash(key) % 10_000 / 10_000
    return "train" if u < 0.8 else "val" if u < 0.9 else "test"


def parse_source(spec):
    """"[NAME=]KIND:PATH[:CLASSES]" -> (NAME or None, kind, path, class list or None, the set's root folder).

    Image paths relative to the root decide the split. Only a NAME the user gave may appear in captions
    ("a SAR image from HRSID"); a folder name ("VOC2007", "tmpx81d") is no fact about the image.
    """
    head, eq, tail = spec.partition("=")
    name, spec = (head, tail) if eq and ":" not in head else (None, spec)
    kind, _, rest = spec.partition(":")
    path, _, classes = rest.partition(":")
    if kind not in READERS or not path:
        raise SARDataError(f"bad source {spec!r}: expected [NAME=]KIND:PATH[:CLASSES], KIND one of {list(READERS)}")
    folder = Path(path).resolve().parent if kind == "coco" else Path(path).resolve()
    folder = folder.parent if folder.name.lower() == "annotations" else folder
    return name or None, kind, path, classes or None, folder


def checked(record, problems):
    """The record with its image's true size, boxes clipped to it and degenerate ones dropped; None if
    the image is missing or does not decode. Every change is noted in problems."""
    if not Path(record.image).is_file():
        problems.append(("missing image", record.image))
        return None
    try:
        width, height = image_size(record.image)
    except SARDataError as error:
        problems.append(("corrupt image", str(error)))
        return None
    if record.width and (record.width, record.height) != (width, height):  # boxes are pixels of the real image
        problems.append(("annotated size differs (image's used)",
                         f"{record.image}: {record.width}x{record.height} vs {width}x{height}"))
    record.width, record.height, kept = width, height, []
    for obj in record.objects:
        box, where = obj["box"], f"{record.image}: {obj['category']} {obj['box']}"
        inside = [min(max(v, 0.0), float(limit)) for v, limit in zip(box, (width, height, width, height))]
        if not all(map(math.isfinite, box)) or min(inside[2] - inside[0], inside[3] - inside[1]) < MIN_BOX_SIDE:
            problems.append(("degenerate box dropped", where))
            continue
        if inside != box:
            problems.append(("box clipped to the image", f"{where} -> {inside}"))
        if obj["category"] not in KNOWN_CATEGORIES:
            problems.append(("unknown category (kept)", f"{record.image}: {obj['category']}"))
        kept.append({**obj, "box": inside})
    if record.objects and not kept:  # "no targets" would be a lie about this image
        problems.append(("skipped: every box dropped", record.image))
        return None
    if not kept:
        problems.append(("no objects (captioned as an empty scene)", record.image))
    record.objects = kept
    return record


def tidy(value):
    """A coordinate for JSON: 15 rather than 15.0, else two decimals."""
    return int(value) if float(value).is_integer() else round(value, 2)


def manifest_entry(record, key, out_dir, n_captions=5, split=None, source=None):
    """One manifest line for a checked record; captions are seeded by the image's key, so rebuilds agree.

    source: the set's label in the manifest (default record.source, the only name captions may use)."""
    image = Path(record.image).resolve()
    objects = record.objects
    entry = {"image": image.relative_to(out_dir).as_posix() if image.is_relative_to(out_dir) else str(image),
             "width": record.width, "height": record.height, "source": source or record.source,
             "counts": dict(Counter(obj["category"] for obj in objects)),
             "boxes": [[*map(tidy, obj["box"]), obj["category"]] for obj in objects],
             "captions": d2c.captions(record.to_d2c(), n=n_captions, seed=stable_hash(key)),
             "split": split or split_of(key)}
    if record.pixel_spacing:
        entry["pixel_spacing"] = record.pixel_spacing
    if record.scene:
        entry["scene"] = record.scene
    if any("near_coast" in obj for obj in objects):
        entry["near_coast"] = [bool(obj.get("near_coast")) for obj in objects]
    return entry


def refuse_unnamed_classes(records, spec):
    """SARDataError when an object's class is a bare number: no caption may call objects "3s"."""
    for record in records:
        for obj in record.objects:
            if is_bare_number(obj["category"]):
                raise SARDataError(
                    f"source {spec}: class {obj['category']!r} (in {record.annotation or record.image}) is a bare "
                    f"number with no class-list entry, so no caption can name it. Give the source a class list "
                    f"(KIND:PATH:CLASSES) with a line 'id name' for each id, e.g. '{obj['category']} ship'.")


def build_manifest(sources, out_path, n_captions=5, split=None, verbose=True):
    """Read the sources ("[NAME=]KIND:PATH[:CLASSES]"), write the MMSAR manifest, return its statistics.

    split: None gives each image its hashed split (split_of); "test" marks a set kept for evaluation.
    A bad file never stops the build: it is noted in stats["problems"] as (kind, file and detail) and
    skipped. A source whose classes are bare numbers nobody named, or a build with no usable image at
    all, raises SARDataError and writes nothing: the manifest appears only whole (a temporary file,
    then renamed). The sources are labelled by NAME, else by their folder. Returns
    {"images": Counter(source), "objects" and "images_with": Counter((source, category)),
     "splits": Counter(split), "problems": [(kind, where)]}.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_dir, tmp = out_path.parent.resolve(), out_path.with_name(out_path.name + ".tmp")
    stats = {"images": Counter(), "objects": Counter(), "images_with": Counter(), "splits": Counter(), "problems": []}
    problems = stats["problems"]
    try:
        with open(tmp, "w") as out:
            for spec in sources:
                name, kind, path, classes, folder = parse_source(spec)
                records = READERS[kind](path, read_class_list(classes) if classes else None, problems)
                refuse_unnamed_classes(records, spec)
                if not records:
                    problems.append(("no annotations found", f"{kind}:{path}"))
                label = name or folder.name
                for record in records:
                    if not (record := checked(record, problems)):
                        continue
                    record.source, key = name or "", os.path.relpath(Path(record.image).resolve(), folder)
                    try:
                        entry = manifest_entry(record, Path(key).as_posix(), out_dir, n_captions, split, label)
                    except ValueError as error:  # D2C refused the record
                        problems.append(("not captioned", f"{record.image}: {error}"))
                        continue
                    out.write(json.dumps(entry) + "\n")
                    stats["images"][label] += 1
                    stats["splits"][entry["split"]] += 1
                    for category, count in (entry["counts"] or {"(no objects)": 0}).items():
                        stats["objects"][label, category] += count
                        stats["images_with"][label, category] += 1
        if not stats["images"]:
            raise SARDataError(f"{out_path}: no usable image in {', '.join(sources)}; nothing written\n{summary(stats)}")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    if verbose:
        print(summary(stats))
    return stats


def summary(stats):
    """The build report: images and objects per source and category, splits, problems with examples."""
    lines = [f"{'source':<20} {'category':<16} {'images':>7} {'objects':>8}"]
    for (source, category), count in sorted(stats["objects"].items()):
        lines.append(f"{source:<20} {category:<16} {stats['images_with'][source, category]:>7} {count:>8}")
    lines.append(f"{'total':<37} {sum(stats['images'].values()):>7} {sum(stats['objects'].values()):>8}")
    lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["splits"].items())))
    by_kind = {}
    for kind, where in stats["problems"]:
        by_kind.setdefault(kind, []).append(where)
    for kind, places in sorted(by_kind.items()):
        lines.append(f"{len(places):>6} x {kind}: " + "; ".join(places[:3]) + (" ..." if len(places) > 3 else ""))
    return "\n".join(lines)


def read_manifest(path):
    """The entries of an MMSAR manifest, image paths made usable from here; errors name file and line."""
    path, entries = Path(path), []
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if missing := [key for key in MANIFEST_KEYS if key not in entry]:
                    raise ValueError(f"missing {missing}")
                if not entry["captions"]:
                    raise ValueError("no captions")
            except (ValueError, TypeError) as error:
                raise SARDataError(f"{path}, line {number}: not a manifest entry ({error})") from None
            entry["image"] = str(path.parent / entry["image"])  # an absolute path stays as it is
            entries.append(entry)
    return entries


# ---- the Dataset ------------------------------------------------------------------------------------

class ManifestDataset(torch.utils.data.Dataset):
    """Manifest images as (image [C, S, S] in [0, 1], caption tokens [L]), one caption drawn per epoch.

    tokenizer: any callable list[str] -> LongTensor [N, L]. image_size=None keeps each image's own size
    (for AnyReader; batch with collate_keep_size), averaged down to max_side when larger. Images are
    resized whole, not cropped: a caption speaks of every target and where it lies on a 3x3 grid, and
    a crop could cut one out.
    simple=True draws D2C's one fixed template instead (the paper's simple-caption ablation).
    return_index=True adds the index of the image served to each item: (image, tokens, index).
    replace_unreadable=True serves, for an image that fails to load, a stand-in drawn from (seed, epoch,
    index, try) with its own caption, so one bad file never ends a run and a resumed run replaces it
    alike; return_index then tells which were replaced. Otherwise the SARDataError is raised.
    The caption drawn for an index depends only on (seed, epoch, index): call set_epoch before each
    epoch (DataLoader workers made with persistent_workers=True keep the epoch they started with).
    """
    STAND_IN_TRIES = 20  # this many unreadable images in a row mean the data, not a file, is broken

    def __init__(self, manifest_paths, tokenizer, image_size, channels=1, split="train", seed=0,
                 simple=False, return_index=False, max_side=None, replace_unreadable=False):
        paths = [manifest_paths] if isinstance(manifest_paths, (str, Path)) else manifest_paths
        self.entries = [e for p in paths for e in read_manifest(p) if split is None or e["split"] == split]
        if simple:  # counts only, from the boxes, in the order the annotation lists them
            for entry in self.entries:
                objects = [{"category": b[4], "box": b[:4]} for b in entry["boxes"]]
                record = {"width": entry["width"], "height": entry["height"], "objects": objects}
                entry["captions"] = d2c.captions(record, n=1, simple=True)
        self.tokenizer, self.image_size, self.channels = tokenizer, image_size, channels
        self.seed, self.epoch, self.return_index = seed, 0, return_index
        self.max_side = max_side or (image_size and 4 * image_size)  # decode no more than will be used
        self.replace_unreadable = replace_unreadable

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.entries)

    @property
    def captions(self):
        """Every image's captions (all of them are true of it: retrieval counts any one as a hit)."""
        return [entry["captions"] for entry in self.entries]

    @property
    def counts(self):
        """Every image's {category: number of objects}."""
        return [entry["counts"] for entry in self.entries]

    def caption(self, index):
        """The caption drawn for index this epoch: the same for the same (seed, epoch, index)."""
        options = self.entries[index]["captions"]
        return options[np.random.default_rng((self.seed, self.epoch, index)).integers(len(options))]

    def image(self, index):
        """The image, [C, image_size, image_size] (or its own size when image_size is None)."""
        path, size = self.entries[index]["image"], self.image_size
        image = load_sar_image(path, self.channels, max_side=self.max_side)  # bounded memory for big scenes
        return image if size is None else squeeze_to_square(image, size)

    def readable(self, index):
        """(index of the image served, its image): index itself, or a stand-in when it fails to load."""
        served = index
        for attempt in range(1, self.STAND_IN_TRIES + 1):
            try:
                return served, self.image(served)
            except SARDataError:
                if not self.replace_unreadable:
                    raise
                served = int(np.random.default_rng((self.seed, self.epoch, index, attempt)).integers(len(self)))
        raise SARDataError(f"{self.STAND_IN_TRIES} images in a row failed to load, the first "
                           f"{self.entries[index]['image']}: is the data folder there?")

    def __getitem__(self, index):
        served, image = self.readable(index)
        item = (image, self.tokenizer([self.caption(served)])[0])
        return (*item, served) if self.return_index else item


def collate_keep_size(batch):
    """Batch images of different sizes as a list; stack the tokens (and indices when present)."""
    columns = list(zip(*batch))
    return [list(columns[0]), torch.stack(columns[1])] + [torch.tensor(c) for c in columns[2:]]


# ---- SARCount: a counting benchmark from any detection manifest ---------------------------------------

def sarcount_entries(entries, max_count=10):
    """SARCount's images: every target of one category, 1 to max_count of them (counted from the boxes)."""
    return [e for e in entries if len(e["counts"]) == 1 and 1 <= next(iter(e["counts"].values())) <= max_count]


def write_sarcount(manifests, out_path, split=None):
    """A SARCount manifest from detection manifests; returns Counter(count: images).

    Entries are kept as they are (image paths relative to the new manifest's folder where they can
    be), with their own split, or `split` for all ("test": a set kept for evaluation).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_dir, kept, lines = out_path.parent.resolve(), Counter(), []
    for path in manifests:
        for entry in sarcount_entries(read_manifest(path)):
            image = Path(entry["image"]).resolve()
            entry["image"] = image.relative_to(out_dir).as_posix() if image.is_relative_to(out_dir) else str(image)
            entry["split"] = split or entry["split"]
            lines.append(json.dumps(entry) + "\n")
            kept[next(iter(entry["counts"].values()))] += 1
    tmp = out_path.with_name(out_path.name + ".tmp")  # never a half manifest
    tmp.write_text("".join(lines))
    os.replace(tmp, out_path)
    return kept


# ---- command line -----------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write an MMSAR manifest from detection sets")
    build.add_argument("--source", action="append", required=True,
                       help="[NAME=]KIND:PATH[:CLASSES], KIND one of voc, coco, yolo, dota; repeat for more")
    build.add_argument("--out", required=True, help="the manifest to write (.jsonl)")
    build.add_argument("--captions", type=int, default=5, help="D2C captions per image")
    build.add_argument("--split", choices=["train", "val", "test"], help="one split for all (default: hashed)")
    sarcount = commands.add_parser("sarcount", help="a SARCount benchmark: images with 1-10 targets of one class")
    sarcount.add_argument("--manifest", nargs="+", required=True, help="detection manifests (data.py build)")
    sarcount.add_argument("--out", required=True, help="the SARCount manifest to write (.jsonl)")
    sarcount.add_argument("--split", choices=["train", "val", "test"], help="one split for all (default: kept)")
    args = parser.parse_args(argv)
    if args.command == "build":
        build_manifest(args.source, args.out, args.captions, args.split)
        return
    kept = write_sarcount(args.manifest, args.out, args.split)
    print(f"SARCount: {sum(kept.values())} images in {args.out}; per count: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(kept.items())))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as error:  # bad input: one clear line naming the file, not a traceback
        raise SystemExit(f"data.py: {error}")
