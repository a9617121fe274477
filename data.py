"""Real SAR data for SARCLIP: detection sets in, MMSAR manifests out.

MMSAR is the union of SAR object-detection sets, each image captioned by D2C from its boxes. This file
reads the usual detection formats as the public releases ship them into one Record type, checks them
and writes them as a manifest; dataset.py serves a manifest to training, and rasters.py reads the
pixels (any TIFF sample type, MSTAR's own format, huge scenes bounded in memory). Two more kinds of
set join it: classification chip sets (one target per chip, captioned by D2C in the words of a
zero-shot prompt) and captioned image sets (a csv file of image paths and captions, used as they are).
The embedded synthetic default set lives in synthetic.py.

    python data.py build --source HRSID=coco:HRSID/annotations/train2017.json \\
                         --source voc:mstar_scenes:mstar_scenes/classes.txt \\
                         --source chips:mstar_chips_17deg:mstar_names.txt \\
                         --source SARCAP=csv:SARCAP/train.csv --out mmsar.jsonl
    python data.py sarcount --manifest mmsar.jsonl --out sarcount.jsonl --split test

A manifest is JSON Lines, one image per line (the keys after "source_named" only when they apply):

    {"image": "JPEGImages/000001.jpg", "width": 491, "height": 594, "source": "mstar_scenes",
     "counts": {"BRDM2": 1, "ZIL131": 1}, "boxes": [[15, 354, 108, 448, "BRDM2"], ...],
     "captions": ["a SAR image of a BRDM2 and a ZIL131.", ...], "split": "train", "source_named": false,
     "pixel_spacing": 2.0, "scene": "inshore", "near_coast": [false, true]}

- source: the set's label (the NAME given in "NAME=KIND:PATH", else its folder's name), for reports.
- source_named: true when the user gave that NAME; only then may a caption say "from HRSID" (a folder
  name such as "VOC2007" is no fact about the image). Missing (older manifests) reads as false.
- "chip": true marks a classification chip (kind chips): one target of its class, centred; its box is
  the chip's middle half, which says where the target is but not how big (D2C's size_known False).
- "captions_from": "csv" marks captions taken from a captioned image set as written: counts {} and
  boxes [], since the file gives none. Nothing re-captions these entries (simple captions, augmentation)
  and counting leaves them out. Without this key, the captions were written by D2C from the boxes.

An image path is relative to the manifest's folder (so data and manifest move together), or absolute
when the image lies outside that folder.
"""
import argparse
import codecs
import csv
import hashlib
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import d2c
from rasters import SARDataError, image_size, is_mstar_file

# ---- records and category names --------------------------------------------------------------------

# One name per kind of target across all sets. Keys are matched lower-cased with spaces, "_" and "-"
# removed ("Oil_Tank" = "oil tank"). "tank" is a storage tank (SARDet-100K); MSTAR's T62/T72 battle
# tanks keep their own names. SAR-AIRcraft's aircraft types become "aircraft"; its class "other" needs
# a class list line "other aircraft" (a bare "other" is too vague to map for every set). Ship types
# are ships: SRSDD's rotated-box classes (Cell-Container, Container, ore-oil, LawCo, Dredger, Fishing)
# and FUSAR-Ship's and OpenSARShip's (GeneralCargo, LawEnforce, Passenger, Dredging, ...).
CATEGORY_NAMES = {
    **dict.fromkeys(["ship", "boat", "vessel", "cargo", "cargo ship", "container ship", "tanker", "ferry",
                     "bulk carrier", "fishing", "fishing boat", "passenger ship", "tug", "dredger", "warship",
                     "other ship", "container", "cell container", "ore oil", "oil tanker", "lawco",
                     "law enforcement", "law enforce", "general cargo", "passenger", "dredging"], "ship"),
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


def category_name(raw, classes=None, merge=True):
    """The MMSAR category of an annotation's class id or name: class list, then CATEGORY_NAMES.

    A name in neither is kept, lower-cased unless it is a designation such as "T72" or "2S1" (a digit
    or all capitals), which D2C writes as it is; build_manifest counts it as an unknown category.
    merge=False skips CATEGORY_NAMES: a chip set's classes are what it teaches ("tanker" stays
    "tanker", the word a zero-shot prompt uses, not MMSAR's "ship").
    """
    name = " ".join(str(raw).split())
    name = (classes or {}).get(name, name)
    merged = NAME_LOOKUP.get(squash(name)) if merge else None
    return merged or (name if d2c.is_model_name(name) else name.lower())


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
    captions: list | None = None    # captions given with the image (a csv set): used as they are, no D2C
    chip: bool = False              # a classification chip: one centred target whose size is unknown
    split: str | None = None        # a split the set fixes (chips: eval.py's held-out rule), else hashed

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


def decode_text(raw, declared=None):
    """A file's bytes as text. UTF-16 by its byte-order mark ("Unicode" in Windows Notepad); else
    UTF-8 when they are valid UTF-8 (a byte-order mark dropped); else the encoding the file declares;
    else GB18030, the superset of the GBK and GB2312 that Chinese annotation tools save in. Valid
    UTF-8 goes before a declaration because declarations lie (UTF-8 files that say "gb2312"), and
    other text is almost never valid UTF-8 by chance. Undeclared text in a Western 8-bit code page
    is misread in its accented letters; the build report then shows them in names it cannot match.
    Raises UnicodeDecodeError (a ValueError) when not even GB18030 fits."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    encodings = ["utf-8-sig", declared] if declared else ["utf-8-sig"]
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except (LookupError, UnicodeDecodeError):  # LookupError: a declared encoding Python lacks
            continue
    return raw.decode("gb18030")


def read_text(path):
    """A text file's contents, in whatever encoding decode_text finds."""
    return decode_text(Path(path).read_bytes())


XML_ENCODING = re.compile(rb'(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*["\']([\w.:-]+)["\']')


def parse_xml(path):
    """The root element of an XML file as releases ship it, decoded by decode_text with the encoding
    its declaration names. Not by the XML parser: it refuses multi-byte declarations such as GBK and
    GB2312, and believes a declaration that lies. Raises ET.ParseError (malformed, e.g. cut off) or
    UnicodeDecodeError."""
    raw = Path(path).read_bytes()
    declared = XML_ENCODING.match(raw)
    return ET.fromstring(decode_text(raw, declared and declared.group(1).decode("ascii")))


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


def find_image(roots, name, other_machine=False):
    """The image called name (any image extension, in lower or upper case: releases made on Windows
    ship "P0001.JPG" and name it "P0001.jpg") in a root or its JPEGImages/ or images/ folder. A
    Windows path separator in name ("train\\P0001.jpg" in a COCO file) is read as a folder.

    other_machine: name may be an absolute path on the machine that wrote the annotation file (COCO
    files made by conversion scripts: "D:\\HRSID\\images\\val\\P0001.jpg", "/home/me/HRSID/P0001.jpg").
    When it is not here, its last three, two, then one components are looked for in the same folders
    ("images/val/P0001.jpg", "val/P0001.jpg", "P0001.jpg"): the longest ending that exists decides.
    A relative path is never shortened: "val/P0001.jpg" must not become another folder's P0001.jpg.
    Falls back to where VOC expects it; build_manifest then reports it missing.
    """
    name = Path(str(name).replace("\\", "/"))
    elsewhere = other_machine and (name.is_absolute() or re.match(r"[A-Za-z]:/", str(name)))
    endings = [Path(*name.parts[-k:]) for k in (3, 2, 1) if k < len(name.parts)] if elsewhere else []
    for wanted in [name, *endings]:
        base = wanted.with_suffix("") if wanted.suffix.lower() in IMAGE_EXTENSIONS else wanted
        names = [wanted] + [base.parent / (base.name + e) for ext in IMAGE_EXTENSIONS for e in (ext, ext.upper())]
        for candidate in (Path(root) / folder / n for root in roots for folder in IMAGE_FOLDERS for n in names):
            if candidate.is_file():
                return candidate
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
    root = parse_xml(path)
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
            image = find_image([path.parent, path.parent.parent], info["file_name"], other_machine=True)
            records.append(Record(str(image), info.get("width"), info.get("height"), objects, annotation=str(path)))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            problems.append(("malformed annotation", f"{path}: image {info!r:.80}: {error}"))
    return records


def label_files(folder, subfolder):
    """The .txt label files of a YOLO or DOTA set: in folder/<subfolder>/ if present, else in folder."""
    labels = folder / subfolder if (folder / subfolder).is_dir() else folder
    return labels, [p for p in sorted(labels.rglob("*.txt")) if p.name != "classes.txt"]


def read_yolo(folder, classes=None, problems=None):
    """YOLO: a labels/*.txt per image, lines "class cx cy w h" in fractions of the image size, or
    "class x1 y1 x2 y2 x3 y3 x4 y4", Ultralytics' rotated boxes (any longer polygon, as its segment
    labels write, is read the same way), also in fractions; the box is the polygon's extent. (Pose
    labels, a box and keypoints, are no detection format: their lines would read as polygons.)

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
                elif len(values) >= 6 and len(values) % 2 == 0:  # corners x1 y1 x2 y2 ...
                    objects.append(make_object(parts[0], polygon_box(values), classes, values))
                else:
                    raise ValueError(f"line {line!r}: expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...'")
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


# ---- classification chips: one folder of images per class ---------------------------------------------

HOLD_OUT_EVERY = 5  # every 5th chip of a class, in file-name order, is held out: eval.py tests on these


def chip_files(class_folder):
    """The images of one class folder, in the order the held-out rule counts them: sorted paths of any
    image extension, and MSTAR's own files (HB03333.015: a number for extension, a Phoenix header
    inside), sub-folders included (eval.py's read_chip_folder reads the same list)."""
    return sorted(p for p in Path(class_folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS or is_mstar_file(p))


def chip_is_held_out(position, every=HOLD_OUT_EVERY):
    """True for the chips a model must not train on: positions 4, 9, 14, ... (0-based) in chip_files,
    every `every`-th chip of its class. One rule for data.py's "test" split and eval.py's test set."""
    return (position + 1) % every == 0


def chip_class_phrases(path, folders, problems=None):
    """{folder: phrase} from a names file of lines "folder phrase" ("T72 T72 tank"), path None for none.

    A folder not named there is its own phrase, underscores read as spaces ("Fishing_Boat" -> "Fishing
    Boat"): the rule of eval.py's read_class_names, so captions use a zero-shot prompt's words. A name
    with no folder is reported in problems.
    """
    phrases = {}
    for line in read_text(path).splitlines() if path else []:
        folder, _, phrase = line.strip().partition(" ")
        if folder:
            phrases[folder] = phrase.strip() or folder
    for unknown in sorted(set(phrases) - set(folders)):
        (problems if problems is not None else []).append(("class name with no folder (ignored)", f"{path}: {unknown}"))
    return {folder: phrases.get(folder, folder.replace("_", " ")) for folder in folders}


def chip_object(phrase, width, height):
    """A chip's one object: the class phrase's category, its box the chip's middle half, size unknown.

    Chip sets centre the target (MSTAR, FUSAR-Ship, OpenSARShip), but its extent is unknown: a target
    may fill the chip or a tenth of it. The middle half [W/4, H/4, 3W/4, 3H/4] puts the centre where
    it is known to be (D2C says "at the centre", true), and a crop of it keeps the target's core;
    size_known False stops D2C from calling it "large" or giving it a length the box does not measure.
    """
    box = [width / 4, height / 4, 3 * width / 4, 3 * height / 4]
    return {"category": category_name(phrase, merge=False), "box": box, "size_known": False}


def read_chips(folder, names=None, problems=None):
    """A folder-per-class chip set (MSTAR, FUSAR-Ship, OpenSARShip): one Record per chip, one object each.

    names: the optional "folder phrase" file (chip_class_phrases). The split is fixed by the set:
    chip_is_held_out chips are "test", the rest "train", counted over chip_files so that a chip that
    fails to read does not shift the others. Raises SARDataError when folder has no class folders.
    """
    folder, problems = Path(folder), [] if problems is None else problems
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise SARDataError(f"{folder}: no class folders (a chips source is one sub-folder of images per class)")
    records = []
    for folder_name, phrase in chip_class_phrases(names, classes, problems).items():
        if not (paths := chip_files(folder / folder_name)):
            problems.append(("class folder has no images", str(folder / folder_name)))
        for position, path in enumerate(paths):
            try:
                width, height = image_size(path)
            except SARDataError as error:
                problems.append(("corrupt image", str(error)))
                continue
            records.append(Record(str(path), width, height, [chip_object(phrase, width, height)], chip=True,
                                  split="test" if chip_is_held_out(position) else "train", annotation=str(path)))
    return records


# ---- captioned image sets: a csv file of image paths and captions -----------------------------------

CSV_COLUMNS = ("filepath", "title")  # open_clip's defaults (--csv-img-key, --csv-caption-key)


def csv_delimiter(header_line):
    """Tab when the header line holds one (open_clip's default separator), else comma."""
    return "\t" if "\t" in header_line else ","


def csv_rows(path, columns):
    """(line number, image text, caption text) of each data row of a csv file with a header row.

    Raises SARDataError naming the file when it cannot be read or lacks a column (and lists those found).
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=csv_delimiter(f.readline()))
            f.seek(0)
            header = [name.strip() for name in next(reader, [])]
            if missing := [c for c in columns if c not in header]:
                raise SARDataError(f"{path}: no column {' or '.join(map(repr, missing))}; columns found: "
                                   f"{', '.join(map(repr, header)) or 'none'} (give them as csv:FILE:IMAGE:CAPTION)")
            image_at, caption_at = (header.index(c) for c in columns)
            for row in reader:
                if row:  # a blank line is no row
                    row += [""] * (len(header) - len(row))  # a short row: its missing cells are empty
                    yield reader.line_num, row[image_at].strip(), row[caption_at].strip()
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SARDataError(f"cannot read caption file {path}: {error}") from error


def read_csv(path, columns=CSV_COLUMNS, problems=None):
    """A captioned image set (open_clip's csv: SARCAP, SARVLM-1M): one Record per image, its captions given.

    Comma- or tab-separated (csv_delimiter), UTF-8 with or without a byte-order mark, a header row
    naming the columns (default "filepath" and "title"). Image paths are relative to the file's folder,
    or absolute. Every row of one image adds a caption to it (file order, duplicates dropped). A row
    whose image is missing or whose caption is empty is reported in problems with its line and skipped.
    """
    path, problems = Path(path), [] if problems is None else problems
    captions, first_line, exists = {}, {}, {}  # by image path, in the file's order
    for line, image_text, caption in csv_rows(path, columns):
        image = Path(os.path.normpath(path.parent / image_text)) if image_text else None
        if image is not None and image not in exists:  # one look at the disk per image, not per caption
            exists[image] = image.is_file()
        if image is None or not exists[image]:
            problems.append(("missing image", f"{path}, line {line}: {image or 'no image path'}"))
        elif not caption:
            problems.append(("empty caption", f"{path}, line {line}"))
        else:
            first_line.setdefault(image, line)
            if caption not in (found := captions.setdefault(image, [])):
                found.append(caption)
    return [Record(str(image), None, None, [], captions=found, annotation=f"{path}, line {first_line[image]}")
            for image, found in captions.items()]


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


SOURCE_KINDS = (*READERS, "chips", "csv")


def parse_source(spec):
    """"[NAME=]KIND:PATH[:EXTRA]" -> (NAME or None, kind, path, EXTRA or None, the set's root folder).

    EXTRA is a class list for voc, coco, yolo and dota, the "folder phrase" names file for chips, and
    "IMAGE_COLUMN:CAPTION_COLUMN" for csv. Image paths relative to the root decide the split. Only a
    NAME the user gave may appear in captions ("a SAR image from HRSID"); a folder name ("VOC2007",
    "tmpx81d") is no fact about the image.
    """
    head, eq, tail = spec.partition("=")
    name, spec = (head, tail) if eq and ":" not in head else (None, spec)
    kind, _, rest = spec.partition(":")
    path, _, extra = rest.partition(":")
    if kind not in SOURCE_KINDS or not path:
        raise SARDataError(f"bad source {spec!r}: expected [NAME=]KIND:PATH[:EXTRA], KIND one of {list(SOURCE_KINDS)}")
    if kind == "csv" and extra and len(extra.split(":")) != 2:
        raise SARDataError(f"bad source {spec!r}: expected csv:FILE or csv:FILE:IMAGE_COLUMN:CAPTION_COLUMN")
    folder = Path(path).resolve().parent if kind in ("coco", "csv") else Path(path).resolve()
    folder = folder.parent if kind == "coco" and folder.name.lower() == "annotations" else folder
    return name or None, kind, path, extra or None, folder


def read_source(kind, path, extra, problems):
    """(the Records of one source, the categories its user named); extra as parse_source returns it.
    Named are a class list's names and a chips source's classes (its names file's phrases, else its
    folders): the build does not report those as unknown."""
    if kind == "csv":
        return read_csv(path, tuple(extra.split(":")) if extra else CSV_COLUMNS, problems), set()
    if kind == "chips":
        records = read_chips(path, extra, problems)
        return records, {obj["category"] for record in records for obj in record.objects}
    classes = read_class_list(extra) if extra else {}
    return READERS[kind](path, classes or None, problems), {category_name(name) for name in classes.values()}


def checked(record, problems, known=KNOWN_CATEGORIES):
    """The record with its image's true size, boxes clipped to it and degenerate ones dropped; None if
    the image is missing or does not decode. Every change is noted in problems, and so is a category
    outside known (MMSAR's; build_manifest adds those the user named), kept as it is: a typo, say, or
    a class id nobody mapped."""
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
        if obj["category"] not in known:
            problems.append(("unknown category (kept)", f"{record.image}: {obj['category']}"))
        kept.append({**obj, "box": inside})
    if record.objects and not kept:  # "no targets" would be a lie about this image
        problems.append(("skipped: every box dropped", record.image))
        return None
    if not kept and not record.captions:  # given captions say what they say; D2C says "no targets"
        problems.append(("no objects (captioned as an empty scene)", record.image))
    record.objects = kept
    return record


def tidy(value):
    """A coordinate for JSON: 15 rather than 15.0, else two decimals."""
    return int(value) if float(value).is_integer() else round(value, 2)


def manifest_entry(record, key, out_dir, n_captions=5, split=None, source=None):
    """One manifest line for a checked record; captions are seeded by the image's key, so rebuilds agree.

    Captions: the record's own when it has them (a csv set, all of them), else n_captions by D2C.
    source: the set's label in the manifest (default record.source, the only name captions may use).
    split: one split for every image, else the record's own (chips), else hashed from key."""
    image = Path(record.image).resolve()
    objects = record.objects
    captions = record.captions or d2c.captions(record.to_d2c(), n=n_captions, seed=stable_hash(key))
    entry = {"image": image.relative_to(out_dir).as_posix() if image.is_relative_to(out_dir) else str(image),
             "width": record.width, "height": record.height, "source": source or record.source,
             "counts": dict(Counter(obj["category"] for obj in objects)),
             "boxes": [[*map(tidy, obj["box"]), obj["category"]] for obj in objects],
             "captions": captions, "split": split or record.split or split_of(key),
             "source_named": bool(record.source)}
    if record.pixel_spacing:
        entry["pixel_spacing"] = record.pixel_spacing
    if record.scene:
        entry["scene"] = record.scene
    if any("near_coast" in obj for obj in objects):
        entry["near_coast"] = [bool(obj.get("near_coast")) for obj in objects]
    if record.chip:
        entry["chip"] = True
    if record.captions:
        entry["captions_from"] = "csv"
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
    """Read the sources ("[NAME=]KIND:PATH[:EXTRA]"), write the MMSAR manifest, return its statistics.

    Kinds: voc, coco, yolo, dota (detection sets; EXTRA a class list), chips (a folder per class; EXTRA
    the "folder phrase" names file) and csv (captioned images; EXTRA "IMAGE_COLUMN:CAPTION_COLUMN").
    split: None gives each image its hashed split (split_of), chips their held-out rule's
    (chip_is_held_out); "test" marks a set kept for evaluation. "train" puts every chip in training:
    right for MSTAR's two-folder protocol (train on 17 degrees, test on 15), wrong when eval.py holds
    out chips of the same folder.
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
                name, kind, path, extra, folder = parse_source(spec)
                records, named = read_source(kind, path, extra, problems)
                refuse_unnamed_classes(records, spec)
                if not records:
                    problems.append(("no annotations found", f"{kind}:{path}"))
                label, known = name or folder.name, KNOWN_CATEGORIES | named
                for record in records:
                    if not (record := checked(record, problems, known)):
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
                    no_objects = "(csv captions)" if record.captions else "(no objects)"
                    for category, count in (entry["counts"] or {no_objects: 0}).items():
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
    keys = sorted(stats["objects"])
    s, c = (max([len(k[i]) for k in keys] + [len(title)]) for i, title in ((0, "source"), (1, "category")))
    lines = [f"{'source':<{s}} {'category':<{c}} {'images':>7} {'objects':>8}"]
    for source, category in keys:
        count = stats["objects"][source, category]
        lines.append(f"{source:<{s}} {category:<{c}} {stats['images_with'][source, category]:>7} {count:>8}")
    lines.append(f"{'total':<{s + c + 1}} {sum(stats['images'].values()):>7} {sum(stats['objects'].values()):>8}")
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


# ---- SARCount: a counting benchmark from any detection manifest ---------------------------------------

def sarcount_entries(entries, max_count=10):
    """SARCount's images: every target of one category, 1 to max_count of them (counted from the boxes).

    Chips are left out: one target by construction, they would only fill the "1" column.
    """
    return [e for e in entries if len(e["counts"]) == 1 and 1 <= next(iter(e["counts"].values())) <= max_count
            and not e.get("chip")]


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
    build = commands.add_parser("build", help="write an MMSAR manifest from detection, chip and captioned sets")
    build.add_argument("--source", action="append", required=True,
                       help="[NAME=]KIND:PATH[:CLASSES], KIND one of voc, coco, yolo, dota; chips:DIR[:NAMES] "
                            "(a folder per class); csv:FILE[:IMAGE_COLUMN:CAPTION_COLUMN]; repeat for more")
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
