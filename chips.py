"""Classification chip sets as MMSAR sources: one folder of images per class (MSTAR, FUSAR-Ship).

A chip is a small image centred on one target of its class. Each chip becomes a Record with one
object, its class phrase, so D2C captions it in the words a zero-shot prompt uses ("a SAR image of a
T72 tank"). The classes are folders (chip_folders; OpenSARShip's are in its file names), named in
a zero-shot prompt's words by an optional names file (chip_class_phrases), and every 5th chip of a
class is held out (chip_is_held_out): data.py's chips source (read_chips) and eval.py's chip folders
(read_chip_folder, read_class_names) read these same functions, so the chips a model is tested on are
never the ones it trained on.
"""
import re
import sys
from pathlib import Path

import torch

from annotations import IMAGE_EXTENSIONS, Record, category_name, files_below, read_text, split_named, squash
from rasters import SARDataError, image_size, is_mstar_file


HOLD_OUT_EVERY = 5  # every 5th chip of a class, in file-name order, is held out: eval.py tests on these

# OpenSARShip's chips: Patch_Uint8/Visual_<class>_x<range>_y<azimuth>_<pol>.tif in each scene's folder.
OPENSARSHIP_PATCH = re.compile(r"(?:Visual_)?(?P<name>.+)_x\d+_y\d+(?:_(?P<pol>[vh][vh]))?", re.IGNORECASE)
CO_POLARISED = ("vv", "hh", None)  # a chip's polarisation read first (as rasters.py reads band 0)
DEPRESSION_FOLDER = re.compile(r"\d+_?deg(?:rees?)?", re.IGNORECASE)  # MSTAR's 17_DEG/, 15deg/: an angle, no class


def chip_files(folder):
    """The images under a folder, in the order the held-out rule counts them: sorted paths of any image
    extension, and MSTAR's own files (HB03333.015: a number for extension, a Phoenix header inside),
    sub-folders included."""
    return [p for p in files_below(folder) if p.suffix.lower() in IMAGE_EXTENSIONS or is_mstar_file(p)]


def chip_folders(root, names=None, problems=None):
    """{class folder name: its chips in chip_files' order}, sorted by name: the classes of a chip set.

    A chip's class is the folder below root that holds it (T72/, Cargo/; its sub-folders too: MSTAR's
    BMP2/SN_9563/). With a names file (chip_class_phrases), it is the folder nearest root on the chip's
    path that the file names, so MSTAR's raw mixed-targets CD reads as shipped: 17_DEG/COL2/SCENE1/
    BRDM_2/HB14931.000 is a BRDM_2 chip when the file names BRDM2. A folder that holds named classes
    (COL2/) is then no class itself: its chips in no named folder (COL2/SCENE1/SLICY/, a calibration
    target) are left out and reported in problems, as is a folder below root with no chip at all.
    data.py's chips source and eval.py's chip folders both read this, so they hold out the same
    chips. Images at root itself have no class.

    Raises SARDataError when root holds the chips of several splits or depression angles (MSTAR's
    TRAIN/ and TEST/, 17_DEG/ and 15_DEG/: the held-out rule would train on the test angle), or when
    such a folder would become a class ("17_DEG"): no caption may call a chip a "TRAIN".
    """
    root = Path(root)
    named = {squash(line.split()[0]) for line in read_text(names).splitlines() if line.strip()} if names else set()
    problems = [] if problems is None else problems
    files = one_file_a_chip(chip_files(root), problems)
    if any(is_opensarship_patch(path) for path in files):
        return opensarship_classes(root, files, problems)
    classes, holders, tops = {}, set(), set()
    for path in files:
        if folders := path.relative_to(root).parts[:-1]:
            name = next((f for f in folders if squash(f) in named), folders[0])
            holders |= {folders[0]} - {name}
            tops.add(folders[0])
            classes.setdefault(name, []).append(path)
    for empty in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in tops):
        problems.append(("class folder has no images", str(empty)))
    for holder in sorted(holders & set(classes)):
        left_out = classes.pop(holder)
        problems.append(("chips in no class folder the names file names (left out)",
                         f"{root / holder}: {len(left_out)} chips, e.g. {left_out[0].relative_to(root)}"))
    if len(collections := sorted(filter(is_split_or_angle, tops))) > 1:
        raise SARDataError(f"{root}: holds {', '.join(collections)}, the chips of different splits or depression "
                           "angles; point at one of them (eval.py takes --chips-train and --chips-test for two)")
    if named_for_a_split := sorted(filter(is_split_or_angle, classes)):
        raise SARDataError(f"{root / named_for_a_split[0]}: names a split or a depression angle, not a class; point "
                           "at the folder that holds the class folders, or give a names file naming them")
    return dict(sorted(classes.items()))


def is_split_or_angle(folder):
    """True for a folder named for a split (TRAIN/, test/) or a depression angle (17_DEG/), not a class."""
    return bool(split_named(folder)) or DEPRESSION_FOLDER.fullmatch(folder) is not None


def one_file_a_chip(files, problems):
    """chip_files' files less the second copies of a chip in one folder: MSTAR's raw HB03333.015 and the
    HB03333.JPG or HB03333.015.JPG an export writes beside it are one chip, read once (the raw file
    first), and so are a.png and a.jpg; else the held-out rule could test on one copy and train on
    the other. Reported."""
    raw = {path for path in files if path.suffix.lower() not in IMAGE_EXTENSIONS}  # chip_files: MSTAR's own
    raw_names = {(path.parent, name) for path in raw for name in (path.name, path.stem)}  # HB03333.015, HB03333
    seen, kept = set(), set(raw)  # raw files are all kept: HB03333.015 and HB03333.017 are two chips
    for path in sorted(set(files) - raw):
        name = (path.parent, path.name[:-len(path.suffix)])  # without its image extension
        if name not in raw_names and name not in seen:
            kept.add(path)
        seen.add(name)
    if copies := [path for path in files if path not in kept]:
        problems.append(("second copies of a chip, one folder (left out)", f"{len(copies)} files, e.g. {copies[0]}"))
    return [path for path in files if path in kept]


def is_opensarship_patch(path):
    return path.parent.name.lower() == "patch_uint8" and OPENSARSHIP_PATCH.fullmatch(path.stem) is not None


def opensarship_classes(root, files, problems):
    """chip_folders for OpenSARShip (Huang et al., IEEE JSTARS 2018) as it ships: a folder per
    Sentinel-1 scene, each with Ship.xml and the same ships in Patch/, Patch_Cal/, Patch_RGB/ and
    Patch_Uint8/. The class is in the file name, not a folder: Patch_Uint8/Visual_Cargo_x10004_y2630_vv.tif
    is a "Cargo" chip (names may hold spaces: "Other Type"). Each ship is read once, from Patch_Uint8
    (8-bit, one polarisation a file), VV or HH where the scene has it, as rasters.py reads a band;
    the other folders hold the same ships (Patch_Cal's float bands put VH first) and are left out,
    reported in problems."""
    chosen = {}  # (scene folder, class, file name without its polarisation) -> (polarisation rank, path)
    for path in filter(is_opensarship_patch, files):
        match = OPENSARSHIP_PATCH.fullmatch(path.stem)
        pol = match["pol"] and match["pol"].lower()
        rank = CO_POLARISED.index(pol) if pol in CO_POLARISED else len(CO_POLARISED)
        key = (path.parent.parent, match["name"], path.stem[:match.start("pol") - 1] if pol else path.stem)
        if key not in chosen or rank < chosen[key][0]:
            chosen[key] = (rank, path)
    classes = {}
    for (_, name, _), (_, path) in sorted(chosen.items(), key=lambda item: item[1][1]):
        classes.setdefault(name, []).append(path)
    if left_out := len(files) - len(chosen):
        problems.append(("OpenSARShip: other folders' and polarisations' copies of a chip (left out)",
                         f"{root}: {left_out} files; each ship is read once, from Patch_Uint8"))
    return dict(sorted(classes.items()))


def chip_is_held_out(position, every=HOLD_OUT_EVERY):
    """True for the chips a model must not train on: positions 4, 9, 14, ... (0-based) in chip_files,
    every `every`-th chip of its class. One rule for data.py's "test" split and eval.py's test set."""
    return (position + 1) % every == 0


def chip_class_phrases(path, folders, problems=None):
    """{folder: phrase} from a names file of lines "folder phrase" ("T72 T72 tank"), path None for none.

    Names match folders as class names do (squash: "BRDM2" names the folder "BRDM_2", as MSTAR's JPEG
    exports spell it). A folder not named there is its own phrase, its underscores and CamelCase read
    as spaces ("Fishing_Boat" -> "Fishing Boat", FUSAR-Ship's "GeneralCargo" -> "General Cargo"): the
    rule of read_class_names below (eval.py's prompts), so captions use a zero-shot prompt's words. A
    name with no folder is reported in problems.
    """
    named = {}  # squash(folder as the file writes it): (as written, phrase)
    for line in read_text(path).splitlines() if path else []:
        folder, _, phrase = line.strip().partition(" ")
        if folder:
            named[squash(folder)] = (folder, phrase.strip() or folder)
    present = {squash(folder) for folder in folders}
    for unknown in sorted(written for key, (written, _) in named.items() if key not in present):
        (problems if problems is not None else []).append(("class name with no folder (ignored)", f"{path}: {unknown}"))
    return {folder: named[squash(folder)][1] if squash(folder) in named else words(folder) for folder in folders}


def words(folder):
    """A folder name as words: "fishing_boat" -> "fishing boat", "GeneralCargo" -> "General Cargo"."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", folder.replace("_", " "))


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

    names: the optional "folder phrase" file (chip_class_phrases; it also finds classes nested deeper,
    see chip_folders). The split is fixed by the set: chip_is_held_out chips are "test", the rest
    "train", counted over chip_folders' lists so that a chip that fails to read does not shift the
    others. Raises SARDataError when folder holds no chips in class folders.
    """
    folder, problems = Path(folder), [] if problems is None else problems
    classes = chip_folders(folder, names, problems) if folder.is_dir() else {}
    if not classes:
        raise SARDataError(f"{folder}: no class folders with images (a chips source is one sub-folder of "
                           "images per class)")
    records = []
    for folder_name, phrase in chip_class_phrases(names, list(classes), problems).items():
        for position, path in enumerate(classes[folder_name]):
            try:
                width, height = image_size(path)
            except SARDataError as error:
                problems.append(("corrupt image", str(error)))
                continue
            records.append(Record(str(path), width, height, [chip_object(phrase, width, height)], chip=True,
                                  split="test" if chip_is_held_out(position) else "train", annotation=str(path)))
    return records


def read_chip_folder(root, class_names=None, names_file=None):
    """(image paths, labels LongTensor [N] of class indices, class folders) of a folder-per-class chip
    set (MSTAR, FUSAR-Ship), its classes found as data.py's chips source finds them (chip_folders;
    names_file, the "folder phrase" file, also finds classes nested deeper, as in MSTAR's raw
    mixed-targets CD). Other problems chip_folders reports are printed to stderr.

    class_names: the class folders to read, in label order (a test set must use its training set's order).
    Raises FileNotFoundError when root is no folder, ValueError when it has no class folders, a class
    folder has no images, or it has a class that class_names lacks.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such chip folder (expected one sub-folder of images per class)")
    problems = []
    found = chip_folders(root, names_file, problems)
    for kind, where in problems:  # the report data.py's build gives, but an empty class folder stops here
        if kind == "class folder has no images":
            extensions = " ".join(IMAGE_EXTENSIONS)
            raise ValueError(f"{where}: class folder has no images ({extensions} or MSTAR's own files)")
        print(f"{where}: {kind}", file=sys.stderr)
    folders = class_names or list(found)
    if not folders:
        raise ValueError(f"{root}: no class folders (expected one sub-folder of images per class)")
    if class_names and (missing := sorted(set(found) - set(class_names))):
        raise ValueError(f"{root}: classes {missing} have no training folder (the training classes: "
                         f"{', '.join(class_names)})")
    paths, labels = [], []
    for label, name in enumerate(folders):  # a test set may lack a class; its training set may not
        paths += found.get(name, [])
        labels += [label] * len(found.get(name, []))
    return paths, torch.tensor(labels, dtype=torch.long), folders


def read_class_names(path, folders):
    """Prompt phrases for the class folders, in folder order, from a names file of lines "folder phrase"
    ("T72 T72 tank"); None: no file. chip_class_phrases's rule, the one chip captions follow; a name
    with no folder is printed to stderr."""
    problems = []
    phrases = chip_class_phrases(path, folders, problems)
    for _, where in problems:
        print(f"{where}: no class folder of that name (ignored)", file=sys.stderr)
    return [phrases[folder] for folder in folders]
