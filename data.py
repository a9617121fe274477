"""Real SAR data for SARCLIP: detection sets in, MMSAR manifests out.

MMSAR is the union of SAR object-detection sets, each image captioned by D2C from its boxes. This file
checks the Records that annotations.py (VOC, COCO, YOLO, DOTA, csv) and chips.py read from the
releases against their images and writes them as one manifest, split as the release splits it
(SSDD's official train and test) or else by a rule every build agrees on; it also makes SARCount
from a manifest. dataset.py serves a manifest to training, and rasters.py reads the
pixels (any TIFF sample type, MSTAR's own format, huge scenes bounded in memory). Two more kinds of
set join the detection sets: classification chip sets (one target per chip, captioned by D2C in the
words of a zero-shot prompt) and captioned image sets (a csv file of image paths and captions, used
as they are). The embedded synthetic default set lives in synthetic.py.

    python data.py build --source HRSID=coco:HRSID/annotations/train2017.json \\
                         --source voc:mstar_scenes:docs/classes/mstar_scenes.txt \\
                         --source chips:mstar_chips_17deg:mstar_names.txt \\
                         --source SARCAP=csv:SARCAP/train.csv --out mmsar.jsonl
    python data.py sarcount --manifest mmsar.jsonl --out sarcount.jsonl

A manifest is JSON Lines, one image per line (the keys after "source_named" only when they apply):

    {"image": "JPEGImages/000001.jpg", "width": 491, "height": 594, "source": "mstar_scenes",
     "counts": {"BMP2": 1, "T72": 1}, "boxes": [[15, 354, 108, 448, "BMP2"], ...],
     "captions": ["a SAR image of a BMP2 and a T72.", ...], "split": "train", "source_named": false,
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
import hashlib
import json
import math
import os
import re
from collections import Counter
from pathlib import Path, PurePosixPath

import d2c
from annotations import (CSV_COLUMNS, HELD_OUT_FIRST, KNOWN_CATEGORIES, READERS, category_name, is_bare_number,
                         read_class_list, read_csv)
from chips import read_chips
from rasters import SARDataError, image_size

# ---- MMSAR manifests ---------------------------------------------------------------------------------

MIN_BOX_SIDE = 1.0  # pixels; a box narrower or lower than this after clipping is dropped
MANIFEST_KEYS = ("image", "width", "height", "source", "counts", "boxes", "captions", "split")


def stable_hash(text):
    """A 64-bit integer from text, the same on every machine and run (Python's hash() is salted). A
    file name that is not UTF-8 (GBK bytes from a Chinese tar, as os.listdir shows them) hashes its bytes."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8", "surrogateescape")).digest()[:8], "big")


# A tile cut from a bigger scene is named after the scene and its place in it, so the name says which
# tiles share a scene: HRSID's P0001_600_1400_9600_10400 (rows 600-1400, columns 9600-10400 of scene
# P0001), SAHI's P0001_0_412_512_924 (x0 y0 x1 y1), the DOTA devkit ImgSplit's P0001__1__0___0 (rate,
# left, top) and mmrotate's or Ultralytics' DOTA split's P0001__1024__0___0 (window side, left, top).
WINDOW_TILE = re.compile(r"(?P<scene>.+)_(?P<a>\d+)_(?P<b>\d+)_(?P<c>\d+)_(?P<d>\d+)")
DOTA_TILE = re.compile(r"(?P<scene>.+?)__\d+(?:\.\d+)?__\d+___\d+")


def tile_scene(name):
    """The scene named by a tile's file name (no extension), or None for a name that is no tile's.

    Four trailing numbers are a tile's place only when they read as a window: HRSID's y0 < y1 and
    x0 < x1, or SAHI's x0 < x1 and y0 < y1 (so a date such as 2019_05_12_13 is none)."""
    if (match := WINDOW_TILE.fullmatch(name)) is not None:
        a, b, c, d = (int(match[key]) for key in "abcd")
        if (a < b and c < d) or (a < c and b < d):
            return match["scene"]
    if (match := DOTA_TILE.fullmatch(name)) is not None:
        return match["scene"]
    return None


def scene_of(key):
    """The path (without extension) of the scene image key was cut from, or key itself when its file
    name is no tile's (tile_scene); a tile of a tile goes back to the first scene.

    Tiles of one scene overlap (HRSID's 800-px tiles step by less than 800) or show the same harbour,
    so a split that hashed each tile would train on pixels it then tests on: tiles split by their scene.
    (A scene here is the image a tile was cut from, not the manifest's inshore/offshore "scene".) Names
    that carry no scene still split image by image: SSDD's 000001.jpg, SAR-Ship-Dataset's chips,
    SARDet-100K's renumbered files; LS-SSDD-v1.0's 01_1_1.jpg tiles come with the release's own split.
    """
    path = PurePosixPath(key)
    name = path.stem
    while (scene := tile_scene(name)) is not None:
        name = scene
    return key if name == path.stem else str(path.with_name(name))


def split_of(key):
    """"train", "val" or "test" (80/10/10) from a hash of an image's path, or for a tile of its scene's
    path (scene_of): stable in any order or build, and the tiles of one scene all in one split."""
    u = stable_hash(scene_of(key)) % 10_000 / 10_000
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
    split: one split for every image, else the record's own (chips, a release's own split), else hashed from key."""
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
    problems, entries = stats["problems"], {}  # entries: {image: (source label, entry)}, in reading order
    try:
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
                keep_once(entries, str(Path(record.image).resolve()), label, entry, problems)
        with open(tmp, "w") as out:
            for label, entry in entries.values():
                out.write(json.dumps(entry) + "\n")
                stats["images"][label] += 1
                stats["splits"][entry["split"]] += 1
                no_objects = "(csv captions)" if entry.get("captions_from") else "(no objects)"
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


def keep_once(entries, image, label, entry, problems):
    """Add entry for image to entries, unless the image is there already (two sources, or two files of
    one, name it): then the held-out one stays (test before val before train), so no test image is
    trained on, and the other is reported."""
    if image not in entries:
        entries[image] = (label, entry)
        return
    first = entries[image][1]
    if HELD_OUT_FIRST.index(entry["split"]) < HELD_OUT_FIRST.index(first["split"]):
        entries[image] = (label, entry)
    kept = entries[image][1]["split"]
    problems.append(("image read twice (kept once)", f"{image}: {first['split']} and {entry['split']}; kept in {kept}"))


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
    """SARCount's images: every target of one category, 1 to max_count of them (counted from the boxes)."""
    return sarcount_split(entries, max_count)[0]


def sarcount_split(entries, max_count=10):
    """(SARCount's entries, Counter(why an entry was left out: entries)), the reasons not_for_counting's."""
    reasons = [not_for_counting(entry, max_count) for entry in entries]
    return [e for e, why in zip(entries, reasons) if why is None], Counter(filter(None, reasons))


def not_for_counting(entry, max_count=10):
    """Why an entry is no SARCount image, said after its number ("16 with more than 10 targets"), or None
    when it is one. Chips are left out: one target by construction, they would only fill the "1" column.
    Reported, so that a set's crowded scenes, the hardest to count, are never dropped unseen."""
    n = sum(entry["counts"].values())
    if entry.get("chip"):
        return "chips"
    if len(entry["counts"]) > 1:
        return "with targets of several categories"
    return "with no targets" if n == 0 else f"with more than {max_count} targets" if n > max_count else None


def write_sarcount(manifests, out_path, split=None):
    """A SARCount manifest from detection manifests; returns (Counter(count: images kept), Counter(why
    an image was left out, not_for_counting's words: images)).

    Entries are kept as they are (image paths relative to the new manifest's folder where they can
    be), with their own split, or `split` for all: "test" only for manifests built wholly for
    evaluation (`build --split test`), since it would also mark their training images as test.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_dir, kept, left_out, lines = out_path.parent.resolve(), Counter(), Counter(), []
    for path in manifests:
        entries, left = sarcount_split(read_manifest(path))
        left_out.update(left)
        for entry in entries:
            image = Path(entry["image"]).resolve()
            entry["image"] = image.relative_to(out_dir).as_posix() if image.is_relative_to(out_dir) else str(image)
            entry["split"] = split or entry["split"]
            lines.append(json.dumps(entry) + "\n")
            kept[next(iter(entry["counts"].values()))] += 1
    tmp = out_path.with_name(out_path.name + ".tmp")  # never a half manifest
    tmp.write_text("".join(lines))
    os.replace(tmp, out_path)
    return kept, left_out


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
    build.add_argument("--split", choices=["train", "val", "test"],
                       help="one split for every source (default: the release's own, else hashed)")
    sarcount = commands.add_parser("sarcount", help="a SARCount benchmark: images with 1-10 targets of one class")
    sarcount.add_argument("--manifest", nargs="+", required=True, help="detection manifests (data.py build)")
    sarcount.add_argument("--out", required=True, help="the SARCount manifest to write (.jsonl)")
    sarcount.add_argument("--split", choices=["train", "val", "test"],
                          help="one split for all (default: kept; test only for a manifest built for evaluation)")
    args = parser.parse_args(argv)
    if args.command == "build":
        build_manifest(args.source, args.out, args.captions, args.split)
        return
    kept, left_out = write_sarcount(args.manifest, args.out, args.split)
    print(f"SARCount: {sum(kept.values())} images in {args.out}; per count: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(kept.items())) + left_out_line(left_out))


def left_out_line(left_out):
    """From a Counter of not_for_counting's reasons, "; left out: 543 chips, 16 with more than 10 targets"."""
    return "; left out: " + ", ".join(f"{n} {why}" for why, n in sorted(left_out.items())) if left_out else ""


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as error:  # bad input: one clear line naming the file, not a traceback
        raise SystemExit(f"data.py: {error}")
