"""SAR annotations as the public releases ship them, read into one Record type.

Detection sets come in four formats: Pascal VOC (SSDD, RSDD-SAR, SAR-AIRcraft, MSAR, and the Gaofen
XML of AIR-SARShip-2.0; axis-aligned or rotated boxes), COCO JSON (HRSID, SARDet-100K), YOLO text
labels (SAR-Ship-Dataset, SADD; boxes or rotated polygons) and DOTA text labels (SIVED, SRSDD).
Captioned image sets, a csv file of image paths and captions (SARCAP), become Records too, and so do
classification chips (chips.py, built on this file's Record). Every class name is mapped to MMSAR's
category names, so "boat", "vessel" and "cargo ship" all become "ship". Text is decoded however the
release saved it (UTF-8, UTF-16, GBK): many of these sets were made with Chinese annotation tools.
A release's own split travels with each Record (SSDD's Annotations_train/ and Annotations_test/, the
VOC devkit's ImageSets lists, the train/ val/ test/ folders of YOLO and DOTA sets, a COCO file named
for its split); data.py hashes the rest.

A reader never stops at a bad file: it notes (kind of problem, file and detail) in `problems` and
goes on. data.py checks the Records against their images and writes them as an MMSAR manifest.
"""
import codecs
import csv
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import d2c
from rasters import SARDataError, image_size

# ---- records and category names --------------------------------------------------------------------

# One name per kind of target across all sets. Keys are matched lower-cased with spaces, "_" and "-"
# removed ("Oil_Tank" = "oil tank"). "tank" is a storage tank (SARDet-100K); MSTAR's T62/T72 battle
# tanks keep their own names. SAR-AIRcraft's aircraft types become "aircraft"; its class "other" needs
# a class list line "other aircraft" (a bare "other" is too vague to map for every set). Ship types
# are ships: SRSDD's rotated-box classes (Cell-Container, Container, ore-oil, bulk-cargo, LawCo,
# Dredger, Fishing) and FUSAR-Ship's and OpenSARShip's (GeneralCargo, LawEnforce, Passenger, ...).
CATEGORY_NAMES = {
    **dict.fromkeys(["ship", "boat", "vessel", "cargo", "cargo ship", "container ship", "tanker", "ferry",
                     "bulk carrier", "bulk cargo", "fishing", "fishing boat", "passenger ship", "tug", "dredger",
                     "warship", "other ship", "container", "cell container", "ore oil", "oil tanker", "lawco",
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
    """{name as in the annotations: class name} from lines "0 2S1" or "other aircraft". A list with no
    numbered line and a line of one word is a list of names, one a line (YOLO's obj.names), each line's
    number its id, so that its names may hold spaces ("ship", "oil tank", "bridge"). (A list whose every
    name holds a space reads as renames: number its lines, "0 cargo ship".)"""
    lines = read_text(path).splitlines()
    numbered = any(is_bare_number(line.split()[0]) for line in lines if line.split())
    one_name_a_line = not numbered and any(len(line.split()) == 1 for line in lines)
    names = {}
    for number, line in enumerate(lines):
        parts = line.split(maxsplit=1)
        if one_name_a_line and parts:
            names[str(number)] = " ".join(line.split())
        elif len(parts) == 2:
            names[parts[0]] = parts[1].strip()
        elif parts:  # one word among numbered lines: its line number is its id
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


def files_below(folder):
    """Every file under folder, sorted, through linked folders too (a dataset assembled with
    `ln -s /disk/images/train images/train`: Path.rglob does not descend into those before Python
    3.13), each real folder once, so a link back up cannot loop."""
    found, seen = [], set()
    for here, folders, files in os.walk(folder, followlinks=True):
        if (real := os.path.realpath(here)) in seen:
            folders.clear()
            continue
        seen.add(real)
        found += [Path(here) / name for name in files]
    return sorted(found)


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
    - <points> of <point>x,y</point>: the Gaofen challenge's XML (AIR-SARShip-2.0), the ring closed
      by repeating its first point; and <segm> of <point> or <point-1>, <point-2> ...: the official
      SSDD's polygon (PSeg) version.
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
    elif (ring := obj.find("points") if obj.find("points") is not None else obj.find("segm")) is not None:
        polygon = [float(v) for point in ring if point.tag.startswith("point") for v in (point.text or "").split(",")]
        if len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(f"<{ring.tag}> holds {len(polygon)} numbers, not the x,y points of a polygon")
    else:
        raise ValueError("an object has no <bndbox>, <rotated_bndbox>, <robndbox>, <polygon>, <points> or <segm>")
    return polygon_box(polygon), polygon


def parse_voc(path, image_roots, classes=None):
    """One Pascal VOC XML file as a Record, its image looked for under image_roots in order (raises on
    anything malformed, so the file is skipped whole)."""
    root = parse_xml(path)
    objects = []
    for obj in root.iter("object"):
        box, polygon = voc_box(obj)
        name = obj.findtext("name") or obj.findtext("possibleresult/name")  # the latter: Gaofen's XML
        objects.append(make_object(name, box, classes, polygon, obj.findtext("near_coast")))
    size = root.find("size")
    width, height = (int(float(size.findtext(k) or 0)) or None if size is not None else None
                     for k in ("width", "height"))
    scene = root.findtext("scene")
    filename = root.findtext("filename") or root.findtext("source/filename") or path.stem
    return Record(str(find_image(image_roots, filename)), width, height, objects,
                  pixel_spacing=positive_or_none(root.findtext("pixel_spacing")),
                  scene=scene if scene in ("offshore", "inshore") else None, annotation=str(path))


SPLITS = ("train", "val", "test")
HELD_OUT_FIRST = ("test", "val", "train")  # an image listed in two splits stays in the first


def split_named(name):
    """The split a folder's or file's own name states: train/, val2017/, valid/ (Roboflow's word),
    test/, and SSDD's Annotations_test/ or Annotations_test_inshore/; None for any other name (a set
    kept in "ssdd_train/" is no split folder)."""
    named = re.fullmatch(r"(?:annotations_)?(train|val|valid|test)(?:\d+|_inshore|_offshore)?", name.lower())
    return named and {"valid": "val"}.get(named[1], named[1])


def files_ending(folder, suffix):
    """The files in folder (not below) whose extension is suffix in any case, sorted: releases made on
    Windows ship "P0001.XML" beside "P0002.xml"."""
    return sorted(p for p in Path(folder).glob("*") if p.suffix.lower() == suffix and p.is_file())


def voc_annotation_files(folder):
    """[(XML path, the release's split or None)] of a VOC folder, in one of five layouts:

    - folder/Annotations_train/, Annotations_val/, Annotations_test/: one folder per split, as the
      official SSDD release ships them (its Annotations_test_inshore/ and _offshore/ are subsets of
      the test split, not read again; its Annotations/, when present, is the union: not read either);
    - folder/Annotations/*.xml, images in folder/JPEGImages/ (the VOC devkit's layout);
    - folder itself holding the XML files (pointed at Annotations_test/, or a Roboflow export's test/);
    - folder/NAME-xml/, images in NAME-data/ beside it (AIR-SARShip-2.0-xml/ and -data/);
    - folder/train/, valid/, test/, each holding XML files and their images (Roboflow's VOC export).
    In the middle three the split is the one folder's own name states, if any (split_named).
    """
    per_split = [(folder / f"Annotations_{split}", split) for split in SPLITS]
    if any(path.is_dir() for path, _ in per_split):
        return [(xml, split) for path, split in per_split for xml in files_ending(path, ".xml")]
    files = (files_ending(folder / "Annotations", ".xml") or files_ending(folder, ".xml")
             or [xml for path in sorted(folder.glob("*-xml")) for xml in files_ending(path, ".xml")])
    if files:
        return [(xml, split_named(folder.name)) for xml in files]
    split_folders = sorted(path for path in folder.glob("*") if path.is_dir() and split_named(path.name))
    return [(xml, split_named(path.name)) for path in split_folders for xml in files_ending(path, ".xml")]


def voc_split_lists(folder, problems):
    """({image id: split}, {image id: "inshore" or "offshore"}) from the release's own lists.

    Split lists: folder/ImageSets/Main/{train,val,test}.txt (the VOC devkit's, one image id per line,
    "a" or "a.jpg"; trainval.txt stands for train when neither train.txt nor val.txt exists), or
    ImageSets/*.txt when there is no Main/ (RSDD-SAR). An id listed in two splits is reported and held
    out (HELD_OUT_FIRST): a test image is never trained on. Scene lists: the official SSDD release
    names its inshore and offshore test scenes in ImageSets/Main/test_inshore.txt and
    test_offshore.txt, or in Annotations_test_inshore/ and Annotations_test_offshore/; D2C can then
    say "inshore". A list that cannot be read is reported and left out.
    """
    lists = folder / "ImageSets" / "Main" if (folder / "ImageSets" / "Main").is_dir() else folder / "ImageSets"

    def ids(path):
        try:
            lines = read_text(path).splitlines() if path.is_file() else []
        except (OSError, UnicodeDecodeError) as error:
            problems.append(("unreadable split list (left out)", f"{path}: {error}"))
            return []
        words = [Path(line.split()[0]) for line in lines if line.strip()]  # "a", "a.jpg", "S1A_0.5m_001"
        return [w.stem if w.suffix.lower() in (*IMAGE_EXTENSIONS, ".xml") else w.name for w in words]

    named = {split: lists / f"{split}.txt" for split in SPLITS}
    if not named["train"].is_file() and not named["val"].is_file():
        named["train"] = lists / "trainval.txt"
    splits = {}
    for split in HELD_OUT_FIRST:
        for image_id in ids(named[split]):
            if splits.setdefault(image_id, split) != split:
                problems.append(("listed in two splits", f"{lists}: {image_id} in {splits[image_id]} and {split}; "
                                 f"kept in {splits[image_id]}"))
    scenes = {}
    for scene in ("inshore", "offshore"):
        for image_id in ids(lists / f"test_{scene}.txt"):
            scenes[image_id] = scene
        for xml in files_ending(folder / f"Annotations_test_{scene}", ".xml"):
            scenes[xml.stem] = scene
    return splits, scenes


def read_voc(folder, classes=None, problems=None):
    """Pascal VOC (SSDD, RSDD-SAR, AIR-SARShip-2.0, SAR-AIRcraft, MSAR): XML files in one of
    voc_annotation_files' layouts, images in JPEGImages/ (or JPEGImages_test/ ... beside Annotations_test/).

    Boxes may be axis-aligned or rotated (voc_box lists the conventions). The release's own split
    (its Annotations_<split>/ folders, else ImageSets/Main lists, see voc_split_lists) becomes each
    Record's split; images it does not place are split by the project's hash. Also reads sarclip's
    extra tags <pixel_spacing> (metres/pixel), <scene> and per object <near_coast>.
    """
    folder, problems = Path(folder), [] if problems is None else problems
    listed_splits, listed_scenes = voc_split_lists(folder, problems)
    records = []
    for path, split in voc_annotation_files(folder):
        roots, xml_folder = [folder, path.parent], path.parent  # images in the set's root, or beside the XML
        if xml_folder.name.startswith("Annotations"):  # images beside it: JPEGImages_test/ or JPEGImages/
            roots += [xml_folder.parent / xml_folder.name.replace("Annotations", "JPEGImages", 1), xml_folder.parent]
        elif xml_folder.name.endswith("-xml"):  # AIR-SARShip-2.0-xml/ beside AIR-SARShip-2.0-data/
            roots.append(xml_folder.with_name(xml_folder.name[:-len("xml")] + "data"))
        try:
            record = parse_voc(path, roots, classes)
        except (ET.ParseError, TypeError, ValueError, OSError) as error:
            problems.append(("malformed annotation", f"{path}: {error}"))
            continue
        record.split = split or listed_splits.get(path.stem)
        record.scene = record.scene or listed_scenes.get(path.stem)
        records.append(record)
    return records


def coco_split(path):
    """(split, the word that names it) from a COCO file's name: train2017.json, val.json,
    instances_test2017.json; else from its folder's name (Roboflow's test/_annotations.coco.json);
    (None, None) for none, or for a name with two (HRSID's train_test2017.json is the whole set)."""
    words = {word: split for word in re.split(r"[^a-z0-9]+", Path(path).stem.lower()) if (split := split_named(word))}
    if len(set(words.values())) == 1:
        return next(iter(words.values())), next(iter(words))
    return (None if words else split_named(Path(path).parent.name)), None


def read_coco(path, classes=None, problems=None):
    """COCO JSON (HRSID, SARDet-100K, SSDD's coco_style): [x, y, w, h] boxes; images beside the JSON
    or one folder up, in the folder of its split (SARDet-100K's Annotations/train.json names images
    in JPEGImages/train/, SSDD's annotations/train.json in images/train/), or where file_name says.

    The split the file's name (or its folder's) states is kept (coco_split). An annotation whose
    category_id is not among the declared categories is dropped, and a crowd region (iscrowd: 1, many
    objects under one mask) is not counted as an object: both are reported.
    """
    path, problems = Path(path), [] if problems is None else problems
    try:
        data = json.loads(read_text(path))
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        per_image = {}  # ids as text: converters write "1" in one list and 1 in the other
        for ann in data.get("annotations", []):
            per_image.setdefault(str(ann["image_id"]), []).append(ann)
        images = list(data["images"])
        orphans = per_image.keys() - {str(info.get("id")) for info in images}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        problems.append(("malformed annotation", f"{path}: {error}"))
        return []
    if orphans:
        problems.append(("COCO annotations of no listed image (dropped)", f"{path}: "
                         f"{sum(len(per_image[i]) for i in orphans)} of them, e.g. image_id {sorted(orphans)[0]!r}"))
    records, (split, split_word) = [], coco_split(path)
    for info in images:
        try:
            objects = []
            for ann in per_image.get(str(info["id"]), []):
                where = f"{path}: image {info['file_name']}, annotation {ann.get('id')}"
                if ann["category_id"] not in names:
                    problems.append(("undeclared COCO category dropped", f"{where}: category_id {ann['category_id']}"))
                elif ann.get("iscrowd"):
                    problems.append(("COCO crowd region not counted", where))
                else:
                    x, y, w, h = ann["bbox"]
                    segmentation = ann.get("segmentation")
                    polygon = None  # COCO's is a list of polygons; some converters write one flat polygon
                    if isinstance(segmentation, list) and segmentation:
                        polygon = segmentation[0] if isinstance(segmentation[0], list) else segmentation
                    objects.append(make_object(names[ann["category_id"]], [x, y, x + w, y + h], classes, polygon))
            image = find_image([path.parent, path.parent.parent], info["file_name"], other_machine=True)
            if not image.is_file() and split_word and len(Path(info["file_name"]).parts) == 1:
                image = find_image([path.parent, path.parent.parent], Path(split_word) / info["file_name"])
            records.append(Record(str(image), info.get("width"), info.get("height"), objects, annotation=str(path),
                                  split=split))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            problems.append(("malformed annotation", f"{path}: image {info!r:.80}: {error}"))
    return records


YOLO_LABELS = ("labels",)  # the folders label files live in
DOTA_LABELS = ("labelTxt", "labels")  # DOTA's own name; SRSDD calls it labels/


def label_files(folder, subfolders):
    """The .txt label files of a YOLO or DOTA set: in the first of folder/<subfolders> present, else
    those in a label folder deeper down (Roboflow's train/labels/; its README.roboflow.txt beside them
    is no label file), else, for a flat set with no label folder, every .txt in folder."""
    labels = next((folder / name for name in subfolders if (folder / name).is_dir()), folder)
    found = [p for p in files_below(labels) if p.suffix.lower() == ".txt" and p.name.lower() != "classes.txt"]
    in_label_folder = [p for p in found if set(p.relative_to(labels).parts[:-1]) & set(subfolders)]
    return in_label_folder if labels == folder and in_label_folder else found


def labelled_image(folder, path, subfolders):
    """(image, split or None) of a YOLO or DOTA label file below folder.

    The image: the label's path with its last label folder (one of subfolders) read as images/
    (Ultralytics' rule: labels/train/x.txt -> images/train/x.jpg; Roboflow's train/labels/x.txt ->
    train/images/x.jpg; DOTA's train/labelTxt/x.txt and SRSDD's train/labels/x.txt ->
    train/images/x.png); a label file in no such folder (a flat set, images and labels side by side)
    is looked for by its own path. The split: the release's own, from a folder on that path that
    names one (split_named: train/, val/, valid/, test2017/ ...), else from folder's own name (a
    source pointed at ds/test/).
    """
    parts, split = path.relative_to(folder).with_suffix("").parts, split_on_path(folder, path)
    at = [i for i, part in enumerate(parts[:-1]) if part in subfolders]
    if not at:
        return find_image([folder], Path(*parts)), split
    last = at[-1]
    return find_image([folder / Path(*parts[:last])], Path(*parts[last + 1:])), split


def split_on_path(folder, path):
    """The split a folder between folder and path names (train/, val2017/ ...), else folder's own name's."""
    return next(filter(None, map(split_named, path.relative_to(folder).parts[:-1])), None) or split_named(folder.name)


def images_without_labels(folder, labels, label_folder):
    """The images in an images/ folder below folder whose label file, by Ultralytics' rule (the last
    images/ on the path read as label_folder/, the extension as .txt), is missing from a label folder
    that holds others: images/train/neg.jpg when labels/train/ holds labels but no neg.txt. A split
    shipped without its labels, or labels kept elsewhere, gives none."""
    label_folders, found = {label.parent for label in labels}, []
    for image in files_below(folder):
        parts = image.relative_to(folder).parts
        if image.suffix.lower() not in IMAGE_EXTENSIONS or "images" not in parts[:-1]:
            continue
        at = len(parts) - 2 - parts[-2::-1].index("images")
        label = folder.joinpath(*parts[:at], label_folder, *parts[at + 1:]).with_suffix(".txt")
        if label.parent in label_folders and not any(label.with_suffix(e).is_file() for e in (".txt", ".TXT")):
            found.append(image)
    return found


def read_yolo(folder, classes=None, problems=None):
    """YOLO: a labels/*.txt per image, lines "class cx cy w h" in fractions of the image size, or
    "class x1 y1 x2 y2 x3 y3 x4 y4", Ultralytics' rotated boxes (any longer polygon, as its segment
    labels write, is read the same way), also in fractions; the box is the polygon's extent. (Pose
    labels, a box and keypoints, are no detection format: their lines would read as polygons.)

    The image size comes from the image itself (image_size). An image whose label file is missing
    from a label folder that holds others is a background image (Ultralytics' rule), an empty scene,
    captioned so: "a SAR image with no targets." (images_without_labels says which.)
    """
    folder, problems = Path(folder), [] if problems is None else problems
    records, labels = [], label_files(folder, YOLO_LABELS)
    for path in labels:
        image, split = labelled_image(folder, path, YOLO_LABELS)
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
        records.append(Record(str(image), width, height, objects, annotation=str(path), split=split))
    for image in images_without_labels(folder, labels, "labels"):
        records.append(Record(str(image), None, None, [], annotation=str(image), split=split_on_path(folder, image)))
    return records


def read_dota(folder, classes=None, problems=None):
    """DOTA-style (SIVED, SRSDD): labelTxt/*.txt (SRSDD: labels/), lines "x1 y1 ... x4 y4 class [difficult]".

    Header lines "imagesource:..." are skipped; "gsd:0.5" is the pixel spacing in metres. DOTA has
    no rule for an image without a label file: such images are left out and reported.
    """
    folder, problems = Path(folder), [] if problems is None else problems
    records, labels = [], label_files(folder, DOTA_LABELS)
    for path in labels:
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
        image, split = labelled_image(folder, path, DOTA_LABELS)
        records.append(Record(str(image), None, None, objects, pixel_spacing=spacing, annotation=str(path), split=split))
    if unlabelled := sorted({image for name in DOTA_LABELS for image in images_without_labels(folder, labels, name)}):
        problems.append(("images with no label file (left out)", f"{folder}: {len(unlabelled)} images, "
                         f"e.g. {unlabelled[0].relative_to(folder)}"))
    return records


READERS = {"voc": read_voc, "coco": read_coco, "yolo": read_yolo, "dota": read_dota}


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
