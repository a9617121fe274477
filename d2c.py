"""D2C (detection-to-caption): true, varied captions for a SAR image, made from its detection boxes.

SAR has almost no caption corpora but many object-detection sets. D2C turns one detection record,
the image size plus its boxes, into sentences such as

    "a SAR image of three ships in a row along the top, about 120 m long."

Every fact is read off the boxes: how many objects of each category, where they sit on a 3x3 grid,
how big they are, how a group of three or more is arranged, whether they are near the coast, and the
scene type. Variety (synonyms, templates, fact order, facts left out) comes from a seeded
random.Random: a fact may be left out, never invented.

A record is a plain dict; the last three keys are optional, and so are an object's flags:

    {"width": 800, "height": 600,                                   # pixels
     "objects": [{"category": "ship", "box": [x0, y0, x1, y1]},     # pixels, x right, y down
                 {"category": "aircraft", "box": [...], "near_coast": True},
                 {"category": "T72 tank", "box": [...], "size_known": False}],
     "pixel_spacing": 3.0, "scene": "inshore", "source": "HRSID"}  # metres/pixel, offshore|inshore

"size_known": False says the box marks where the object is but not how big it is (a classification
chip: the target is centred, its extent unknown). No size word ("small") and no length ("about 8 m
long") is then said of it, or of a group it belongs to; its position and count still are.

captions(record, claims=True) also gives each caption's claim, the statements it makes (its counts,
and the place, size, arrangement, coast, length, scene or source it names), and claim_holds says
whether a claim is true of another record (true_statements): train.py uses it to count a caption as a
right answer for every image of a batch it is true of, not only the one it was drawn for.

counterfactuals.py goes the other way: it reads the counts back out of a caption and makes one false
("three ships" -> "five ships"), hard negatives for count-aware training (Paiss et al., ICCV 2023).

Standard library only, so data.py, notebooks and tests can use it anywhere.
"""
import math
import numbers
import random
from collections import Counter

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six",
                "seven", "eight", "nine", "ten", "eleven", "twelve")

# Plurals that are not "add -s/-es"; any noun ending in "craft" also stays as it is.
IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children",
                     "wharf": "wharves", "fish": "fish", "sheep": "sheep", "deer": "deer",
                     "series": "series"}

SAID_AS_WORDS = {"SAR", "MSTAR"}  # capitalised, yet read as words: "a SAR image", not "an S-A-R"
IMAGE_NOUNS = ("SAR image", "synthetic aperture radar image", "radar image", "SAR scene", "radar scene")

# A box centre's cell on a 3x3 grid, (row, col) with row 0 at the top, in two phrasings each.
CELL_PHRASES = {
    (0, 0): ("in the upper-left", "in the top-left corner"),
    (0, 1): ("at the top", "in the upper middle"),
    (0, 2): ("in the upper-right", "in the top-right corner"),
    (1, 0): ("on the left side", "at the left of the image"),
    (1, 1): ("at the centre", "in the middle of the image"),
    (1, 2): ("on the right side", "at the right of the image"),
    (2, 0): ("in the lower-left", "in the bottom-left corner"),
    (2, 1): ("at the bottom", "in the lower middle"),
    (2, 2): ("in the lower-right", "in the bottom-right corner"),
}
ROW_PHRASES = ("along the top", "through the middle", "along the bottom")
COLUMN_PHRASES = ("along the left side", "down the middle", "along the right side")
ARRANGEMENT_PHRASES = {"row": ("in a row", "lined up", "in a line"),
                       "clustered": ("clustered together", "in a tight group", "close together"),
                       "scattered": ("scattered", "spread out", "dispersed")}
COAST_PHRASES = ("near the coast", "close to the coastline", "near the shore")
ABOUT_WORDS = ("about", "roughly", "around")  # before a length: "about 120 m long"
SIZE_WORDS = ("small", "medium-sized", "large")  # size_class's three answers

# Scene words. Only "offshore" earns "sea": an unknown scene may be land clutter (MSTAR), so it gets none.
SCENES = {"offshore": {"adjective": "offshore", "places": ("open sea", "the open sea", "open water"),
                       "trailing": ("in open sea", "at sea", "in open water")},
          "inshore": {"adjective": "inshore",
                      "places": ("an inshore area", "a coastal area", "a nearshore area"),
                      "trailing": ("in inshore waters", "in a coastal area", "in an inshore area")}}

OBJECT_TEMPLATES = ("{a_image} of {objects}.",
                    "{a_image}{source} showing {objects}.",
                    "{a_image}{source} with {objects}.",
                    "there {be_first} {objects_mid} in this {image}{source}.",
                    "{objects_mid} {be} visible in {a_image}{source}.")
PLACE_TEMPLATE = "{a_image} of {place} with {objects}."
EMPTY_TEMPLATES = ("{a_image}{place} with no targets.",
                   "an empty {image}{place}.",
                   "no targets are visible in this {image}{place}.",
                   "{a_image}{place} showing only background clutter.")

# How often each optional fact makes it into a caption; counts and categories always do.
FACT_ODDS = {"position": 0.6, "size": 0.3, "length": 0.5, "arrangement": 0.6,
             "coast": 0.7, "scene": 0.6, "source": 0.3}
DIGIT_ODDS = 0.3  # how often counts are written "3 ships" rather than "three ships"
MAX_WORDS = 40    # CLIP reads 77 BPE tokens, about 1.8 per word at worst here; longer -> fewer facts


# ---- where, how big, how arranged: facts read off the boxes ---------------------------------------

def box_centre(box):
    """Centre (x, y) of an [x0, y0, x1, y1] box."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2


def grid_position(box, width, height):
    """(row, col) in {0, 1, 2} of the box centre on a 3x3 grid; row 0 is the top (y points down)."""
    cx, cy = box_centre(box)
    # Boxes may reach past the border (some MSTAR scenes' do): clamping keeps the centre on the grid.
    row = min(2, max(0, int(3 * cy / height)))
    col = min(2, max(0, int(3 * cx / width)))
    return row, col


def position_phrase(cells, rng, digits=False):
    """Where a group lies, from its members' grid cells; returns (phrase, is_breakdown).

    One cell: "in the upper-left". Two or three cells: a breakdown, "two in the upper-left and one at
    the centre", or, when they share a row or column, "along the top". More cells: the shared row or
    column, else "in different parts of the image".
    """
    per_cell = Counter(cells)
    if len(per_cell) == 1:
        return rng.choice(CELL_PHRASES[cells[0]]), False
    rows, cols = {r for r, _ in cells}, {c for _, c in cells}
    line = ROW_PHRASES[min(rows)] if len(rows) == 1 else COLUMN_PHRASES[min(cols)] if len(cols) == 1 else None
    if len(per_cell) <= 3 and (line is None or rng.random() < 0.5):
        parts = [f"{count_word(k, digits)} {CELL_PHRASES[cell][0]}" for cell, k in sorted(per_cell.items())]
        return join_and(parts), True
    return line or "in different parts of the image", False


def size_class(box, width, height):
    """"small", "medium-sized" or "large": the box's width as a fraction of the image's width, or its
    height of the image's height, whichever is more, < 0.1, < 0.3, or more.

    Fractions per axis, because the model sees every image squeezed to a square (rasters.squeeze_to_square):
    a box a tenth of a 2:1 image's width fills a tenth of the square's, whatever the image's other side.
    """
    fraction = max((box[2] - box[0]) / width, (box[3] - box[1]) / height)
    return "small" if fraction < 0.1 else "medium-sized" if fraction < 0.3 else "large"


def length_metres(box, pixel_spacing):
    """Object length in metres, the box's longer side times the spacing, rounded as people say it.

    Below 10 m to the metre (at least 1 m); above, to two significant figures: 69, 120, 1200. The box is
    axis-aligned, so a target lying diagonally is longer than this (up to 41% at 45 degrees).
    """
    metres = max(box[2] - box[0], box[3] - box[1]) * pixel_spacing
    if metres < 10:
        return max(1, int(metres + 0.5))
    step = 10 ** (int(math.log10(metres)) - 1)
    return int(metres / step + 0.5) * step


def length_phrase(boxes, pixel_spacing, rng):
    """"about 120 m long" (one length, "each" for a group) or "about 60 to 120 m long" (a range)."""
    lengths = sorted(length_metres(box, pixel_spacing) for box in boxes)
    about = rng.choice(ABOUT_WORDS)
    if lengths[0] == lengths[-1]:
        return f"{'each ' if len(boxes) > 1 else ''}{about} {lengths[0]} m long"
    return f"{about} {lengths[0]} to {lengths[-1]} m long"


def arrangement(centres, width, height):
    """How three or more objects lie: "row", "clustered" or "scattered" (None for fewer than three).

    row:       every centre is within 10% of the group's length of their best-fit line (the principal
               axis), and the group is at least 5% of the image side long, so that a tight knot
               is not called a row.
    clustered: otherwise, every two centres are within 25% of the image side of each other.
    scattered: anything else.
    Judged in fractions of the image's width and height, as the model sees the image squeezed to a
    square (rasters.squeeze_to_square), so that a crop of any aspect is called what its square shows.
    """
    if len(centres) < 3:
        return None
    centres = [(x / width, y / height) for x, y in centres]  # the image side is 1 from here on
    mx = sum(x for x, _ in centres) / len(centres)
    my = sum(y for _, y in centres) / len(centres)
    sxx = sum((x - mx) ** 2 for x, _ in centres)
    syy = sum((y - my) ** 2 for _, y in centres)
    sxy = sum((x - mx) * (y - my) for x, y in centres)
    angle = 0.5 * math.atan2(2 * sxy, sxx - syy)  # direction of the principal axis of the 2x2 covariance
    ux, uy = math.cos(angle), math.sin(angle)
    along = [(x - mx) * ux + (y - my) * uy for x, y in centres]
    across = [(y - my) * ux - (x - mx) * uy for x, y in centres]
    length = max(along) - min(along)
    if length >= 0.05 and max(abs(d) for d in across) <= 0.1 * length:
        return "row"
    if max(math.dist(p, q) for p in centres for q in centres) <= 0.25:
        return "clustered"
    return "scattered"


# ---- words: numbers, plurals, articles -------------------------------------------------------------

def count_word(n, digits=False):
    """A count as a word up to twelve ("three"), as digits above twelve or when digits=True ("3")."""
    return str(n) if digits or n >= len(NUMBER_WORDS) else NUMBER_WORDS[n]


def is_model_name(word):
    """True for designations such as "T72", "2S1", "BMP2" or "SUV" (a digit, or all capitals)."""
    return any(c.isdigit() for c in word) or (len(word) > 1 and word.isupper())


def plural(category, n):
    """The category agreeing with count n: ship/ships, ferry/ferries, aircraft/aircraft, T72/T72s.

    Model designations just take "s" ("three T72s", as people say "two F-16s"), and keep their case.
    A multi-word category pluralises its last word ("storage tank" -> "storage tanks").
    """
    if n == 1:
        return category
    head, _, last = category.rpartition(" ")
    low = last.lower()
    if is_model_name(last):
        last += "s"
    elif low in IRREGULAR_PLURALS or low.endswith("craft"):
        last = IRREGULAR_PLURALS.get(low, last)
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def article(phrase):
    """"a" or "an" by the sound of the first word: an aircraft, a ship, an SUV, an A220, a T72."""
    word = phrase.split()[0]
    if word in SAID_AS_WORDS:
        return "an" if word[0] in "AEIOU" else "a"
    if all(c.isupper() or c.isdigit() for c in word[:2]):  # spelled letter by letter: "an S", "a T"
        return "an" if word[0] in "AEFHILMNORSX8" else "a"
    low = word.lower()
    vowel_sound = low[0] in "aeiou" and not low.startswith(("uni", "use", "usu", "uti", "eu", "one"))
    return "an" if vowel_sound else "a"


def count_phrase(n, noun_phrase, rng, digits=False):
    """A count with its noun phrase: "three ships", "3 ships", "an aircraft" or "one aircraft"."""
    if n == 1:
        return f"{rng.choice((article(noun_phrase), 'one'))} {noun_phrase}"
    return f"{count_word(n, digits)} {noun_phrase}"


def join_and(parts):
    """"a", "a and b", "a, b and c"; "a, x, and b" or "a, x; b; and c" when a part has its own commas."""
    if len(parts) == 1:
        return parts[0]
    if any("," in part for part in parts[:-1]):  # stronger separators keep each part's asides with it
        return ", and ".join(parts) if len(parts) == 2 else "; ".join(parts[:-1]) + "; and " + parts[-1]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# ---- sentences -------------------------------------------------------------------------------------

def group_phrase(category, objects, record, statements, facts, rng, digits=False):
    """All that a caption says about one category: "three small ships in a row, about 60 to 80 m long",
    and the statements it makes, a subset of statements (group_statements of these objects)."""
    boxes = [obj["box"] for obj in objects]
    n, width, height = len(boxes), record["width"], record["height"]
    true = {statement[0]: statement for statement in statements}
    said = {true["count"]}
    noun = plural(category, n)
    if "size" in facts and "size" in true:  # a size word only when every member shares it
        noun = f"{true['size'][2]} {noun}"
        said.add(true["size"])
    head = [count_phrase(n, noun, rng, digits)]
    asides = []  # facts that follow a comma: ", one in the upper-left and one at the centre"
    if "arrangement" in facts and "arrangement" in true:
        head.append(rng.choice(ARRANGEMENT_PHRASES[true["arrangement"][2]]))
        said.add(true["arrangement"])
    if "position" in facts:
        where, is_breakdown = position_phrase([grid_position(b, width, height) for b in boxes], rng, digits)
        (asides if is_breakdown else head).append(where)
        said.add(true["cells"] if is_breakdown or len(true["cells"][2]) == 1 else true["row"] if where in ROW_PHRASES
                 else true["column"] if where in COLUMN_PHRASES else true["spread"])
    if "coast" in facts and "coast" in true:
        near, coast = true["coast"][2], rng.choice(COAST_PHRASES)
        if near == n:
            head.append(coast)
        else:
            asides.append(f"{count_word(near)} of them {coast}")
        said.add(true["coast"])
    if "length" in facts and "length" in true:
        asides.append(length_phrase(boxes, record["pixel_spacing"], rng))
        said.add(true["length"])
    return ", ".join([" ".join(head)] + asides), said


# ---- statements: what a caption claims, to tell which images of a batch it is true of -------------
#
# A caption states a few facts (counts always, a place, a size ...), each a tuple such as
# ("count", "ship", 3), ("cells", "ship", (((0, 0), 2), ((1, 1), 1))), ("row", "ship", 0), ("scene",
# "offshore"). It is true of an image when the image has exactly its counts and every statement it
# makes is among the image's true statements: "a SAR image of a ship on the right side." is true of
# every single-ship scene whose ship is on the right, however D2C worded that scene's own captions.

def group_statements(category, objects, record):
    """Every statement D2C could make about one category's objects in record (true of them), at most
    one of each kind: count, cells, row, column, spread, arrangement, coast, size, length."""
    boxes = [obj["box"] for obj in objects]
    width, height = record["width"], record["height"]
    cells = [grid_position(box, width, height) for box in boxes]
    rows, cols = {r for r, _ in cells}, {c for _, c in cells}
    true = {("count", category, len(boxes)), ("cells", category, tuple(sorted(Counter(cells).items())))}
    true |= {("row", category, *rows)} if len(rows) == 1 else set()
    true |= {("column", category, *cols)} if len(cols) == 1 else set()
    true |= {("spread", category)} if len(rows) > 1 and len(cols) > 1 else set()
    if kind := arrangement([box_centre(box) for box in boxes], width, height):
        true.add(("arrangement", category, kind))
    if near := sum(bool(obj.get("near_coast")) for obj in objects):
        true.add(("coast", category, near))
    if all(obj.get("size_known", True) for obj in objects):  # else a box's size is no fact
        if len(sizes := {size_class(box, width, height) for box in boxes}) == 1:
            true.add(("size", category, sizes.pop()))
        if record.get("pixel_spacing"):
            lengths = sorted(length_metres(box, record["pixel_spacing"]) for box in boxes)
            true.add(("length", category, lengths[0], lengths[-1]))
    return true


def category_groups(record):
    """{category: its objects}, categories in order of first appearance in record["objects"]."""
    groups = {}
    for obj in record["objects"]:
        groups.setdefault(obj["category"], []).append(obj)
    return groups


def true_statements(record):
    """(counts, statements) of a record: its {category: count} as a frozenset of ("count", category,
    n), and every statement D2C could make of it. claim_holds checks a caption's claim against them."""
    groups = category_groups(record)
    true = set().union(*(group_statements(c, objects, record) for c, objects in groups.items()))
    true |= {("scene", record["scene"])} if record.get("scene") in SCENES else set()
    true |= {("source", record["source"])} if record.get("source") else set()
    return frozenset(s for s in true if s[0] == "count"), frozenset(true)


def claim_holds(claim, truth):
    """True when a caption's claim (a frozenset of statements, from captions(..., claims=True)) is
    true of the image whose true_statements are truth: the same counts, and nothing else false."""
    counts, true = truth
    return {s for s in claim if s[0] == "count"} == counts and claim <= true


def simple_caption(record):
    """The one fixed template of the paper's simple-caption ablation: "a SAR image of two ships."."""
    return simple_sentence(Counter(obj["category"] for obj in record["objects"]))  # in order of appearance


def simple_sentence(counts):
    """The simple template for {category: count}, in the dict's order: "a SAR image of two ships."."""
    if not counts:
        return "a SAR image with no targets."
    return "a SAR image of " + join_and([f"{count_word(k)} {plural(c, k)}" for c, k in counts.items()]) + "."


def empty_caption(record, rng):
    """A caption for a scene with no objects, and its claim; "open sea" only when the record says offshore."""
    image = rng.choice(IMAGE_NOUNS)
    scene = SCENES.get(record.get("scene"))
    place = f" of {rng.choice(scene['places'])}" if scene and rng.random() < FACT_ODDS["scene"] else ""
    claim = frozenset({("scene", record["scene"])} if place else ())
    return rng.choice(EMPTY_TEMPLATES).format(a_image=f"{article(image)} {image}", image=image, place=place), claim


def object_caption(record, groups, statements, rng, facts):
    """One caption for a scene with objects, saying the counts plus the chosen optional facts, and its
    claim: the statements it makes. groups: category_groups(record); statements: {category:
    group_statements of its objects}, the same for every caption of a record, so computed once."""
    order = list(groups)
    rng.shuffle(order)  # vary which category is named first
    digits = rng.random() < DIGIT_ODDS
    phrases, said = zip(*[group_phrase(c, groups[c], record, statements[c], facts, rng, digits) for c in order])
    claim = set().union(*said)
    objects = join_and(phrases)
    image, template, place = rng.choice(IMAGE_NOUNS), rng.choice(OBJECT_TEMPLATES), None
    scene = SCENES.get(record.get("scene")) if "scene" in facts else None
    if scene:  # say the scene one of three ways: an adjective, a place, or a trailing phrase
        form = rng.choice(("adjective", "place", "trailing"))
        if form == "trailing" and len(groups) == 1 and "," not in objects:  # else it reads as one group's
            objects += " " + rng.choice(scene["trailing"])
        elif form == "place":
            template, place = PLACE_TEMPLATE, rng.choice(scene["places"])
        else:
            image = f"{scene['adjective']} {image}"
        claim.add(("scene", record["scene"]))
    source = f" from {record['source']}" if "source" in facts and record.get("source") else ""
    if source and "{source}" in template:  # the place template has no room for it
        claim.add(("source", record["source"]))
    be = "are" if len(record["objects"]) > 1 else "is"  # "a ship is visible", "a ship and a car are"
    be_first = "are" if len(groups[order[0]]) > 1 else "is"  # nearest noun: "there is a ship and two cars"
    objects_mid = objects + ("," if "," in phrases[-1] else "")  # closes an aside before the sentence goes on
    return template.format(a_image=f"{article(image)} {image}", image=image, objects=objects, place=place,
                           objects_mid=objects_mid, be=be, be_first=be_first, source=source), frozenset(claim)


def is_number(value):
    """True for a finite real number (Python or NumPy), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_record(record):
    """Raise ValueError naming the first problem in a detection record (data.py cleans; D2C checks)."""
    if not isinstance(record, dict):
        raise ValueError(f"record must be a dict, got {type(record).__name__}")
    for key in ("width", "height", "objects"):
        if key not in record:
            raise ValueError(f"record is missing {key!r}")
    for key in ("width", "height"):
        if not is_number(record[key]) or record[key] <= 0:
            raise ValueError(f"record {key!r} must be a positive number, got {record[key]!r}")
    spacing = record.get("pixel_spacing")
    if spacing is not None and (not is_number(spacing) or spacing <= 0):
        raise ValueError(f"record 'pixel_spacing' must be a positive number or None, got {spacing!r}")
    if record.get("scene") not in (None, "offshore", "inshore"):
        raise ValueError(f"record 'scene' must be 'offshore', 'inshore' or None, got {record['scene']!r}")
    if not isinstance(record["objects"], (list, tuple)):
        raise ValueError(f"record 'objects' must be a list, got {type(record['objects']).__name__}")
    for i, obj in enumerate(record["objects"]):
        if not isinstance(obj, dict) or "category" not in obj or "box" not in obj:
            raise ValueError(f"object {i} must be a dict with 'category' and 'box', got {obj!r}")
        category, box = obj["category"], obj["box"]
        if not isinstance(category, str) or not category.strip():
            raise ValueError(f"object {i} has no category name, got {category!r}")
        if isinstance(box, str) or len(box) != 4 or not all(is_number(v) for v in box):
            raise ValueError(f"object {i} ({category}) box must be 4 numbers [x0, y0, x1, y1], got {box!r}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"object {i} ({category}) has an empty or negative-size box {list(box)}: "
                             "need x1 > x0 and y1 > y0")
        if not isinstance(obj.get("size_known", True), bool):
            raise ValueError(f"object {i} ({category}) 'size_known' must be True or False, got {obj['size_known']!r}")


def captions(record, n=5, seed=0, simple=False, claims=False, fits=None):
    """n captions true to the record's boxes, varied and distinct where possible, the same for a seed.

    simple=True gives the paper's simple-caption ablation instead: n copies of one fixed template.
    The first caption for a seed is the same for any n up to 5 (training writes only the one it serves).
    claims=True gives (caption, claim) pairs: the claim, a frozenset of the statements the caption
    makes, tells which other images it is true of (claim_holds).
    fits: None, or a function caption -> bool saying whether the model reads it whole (its tokenizer's
    context length: sarclip.Tokenizer.fits). A caption over MAX_WORDS words, or one that does not
    fit, is written again (new wording too) without one of the optional facts drawn for it, picked at
    random, until it fits or none is left; one still too long is left out, and only when no caption
    fits is the shortest given, to be cut. Why: a model that cuts a caption reads half a phrase, maybe
    no count for the last category, while the claim still holds all of it.
    """
    check_record(record)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if simple:  # the template states the counts and nothing else
        found = {simple_caption(record): true_statements(record)[0]}
    else:
        rng = random.Random(seed)  # our own generator: the global one is left untouched
        groups = category_groups(record)  # what is true of each group is the same for every caption tried
        statements = {c: group_statements(c, objects, record) for c, objects in groups.items()}
        whole = lambda caption: len(caption.split()) <= MAX_WORDS and (fits is None or fits(caption))
        found, shortest = {}, None  # caption -> claim, in the order found; the shortest one too long
        # A few tries per caption (a record with few facts has few distinct captions), and at least 100: a
        # crowded record may need many wordings before one fits, and its first caption is the same for n <= 5.
        for _ in range(20 * max(n, 5)):
            if record["objects"]:
                facts = {fact for fact, odds in FACT_ODDS.items() if rng.random() < odds}
                caption, claim = object_caption(record, groups, statements, rng, facts)
                while not (fitting := whole(caption)) and facts:  # each caption tokenised once
                    facts.remove(rng.choice(sorted(facts)))  # sorted: the same fact for the same seed
                    caption, claim = object_caption(record, groups, statements, rng, facts)
            else:
                caption, claim = empty_caption(record, rng)
                fitting = whole(caption)
            if fitting:  # counts alone can be too long too ("a synthetic aperture radar image ...")
                found.setdefault(caption, claim)
            elif shortest is None or len(caption) < len(shortest[0]):
                shortest = caption, claim
            if len(found) == n:
                break
    pairs = list(found.items()) or [shortest]  # when none fits, the shortest: to be cut, but said
    pairs = [pairs[i % len(pairs)] for i in range(n)]  # repeat when fewer distinct captions exist
    return pairs if claims else [caption for caption, _ in pairs]


if __name__ == "__main__":
    harbour = {"width": 800, "height": 800, "pixel_spacing": 3.0, "scene": "inshore", "source": "HRSID",
               "objects": [{"category": "ship", "box": [100, 100, 140, 112], "near_coast": True},
                           {"category": "ship", "box": [300, 102, 335, 114], "near_coast": True},
                           {"category": "ship", "box": [500, 98, 545, 110], "near_coast": True},
                           {"category": "aircraft", "box": [380, 600, 420, 640]}]}
    mstar = {"width": 491, "height": 594,
             "objects": [{"category": "BMP2", "box": [15, 354, 108, 448]},
                         {"category": "T72", "box": [396, 526, 491, 600]}]}
    open_sea = {"width": 800, "height": 800, "scene": "offshore", "objects": []}
    for example in (harbour, mstar, open_sea):
        for caption in captions(example, n=5):
            print(caption)
        print(captions(example, n=1, simple=True)[0], "(simple)\n")
