"""What training reads: MMSAR manifest entries served as (image, caption tokens), augmented with their boxes.

data.py builds manifests; this file serves them. Box-aware augmentation flips, turns and crops a scene
together with its boxes (a chip keeps its sensor's geometry; its crops are small), and D2C writes the
caption of the transformed record, so a caption stays true of the pixels it is served with ("upper-left"
becomes "upper-right" after a flip, "three ships" becomes "two ships" when a crop leaves two). Each item's
transform and caption depend only on (seed, epoch, index), so a resumed run serves exactly what the
uninterrupted one would have.

    dataset = ManifestDataset(["mmsar.jsonl"], tokenizer, image_size=64, augment=True)
    dataset.set_epoch(0)
    image, tokens = dataset[0]   # [1, 64, 64] in [0, 1], [context_length]
"""
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch

import d2c
from data import read_manifest
from rasters import SARDataError, load_sar_image, redisplay, squeeze_to_square


# ---- box-aware augmentation: the image and its boxes move together, D2C re-captions -------------------

AUGMENT_ODDS = {"flip_x": 0.5, "flip_y": 0.5, "crop": 0.5, "display": 0.5}  # how often each transform is drawn
CROP_SIDE = (0.5, 1.0)  # a crop window's width and height, as fractions of the image's, drawn uniformly
CHIP_CROP_SIDE = (0.75, 1.0)  # the same for a chip: its target up to 1/8 of its side off centre, 4/3 as large
CROP_TRIES = 10         # crop windows drawn before giving up on a crop (each must cut no box)
CROP_MARGIN = 0.02      # a box left out must lie this far (a fraction of the image's longer side) off the window
AUGMENT_STREAM = 7919   # a 4th seed word of its own: the augmentation's numbers are not the stand-ins'
DISPLAY_RANGE = (0.5, 2.0)  # display gammas and gains, each drawn log-uniformly in this range (draw_display)
NO_DISPLAY = {"gamma": 1.0, "gain": 1.0}  # the image as the release stores it
CAPTION_STYLES = ("diverse", "simple", "both")  # ManifestDataset's caption_style, train.py's --captions


def captioned_from_boxes(entry):
    """True for an entry whose captions D2C wrote from its boxes; False for a csv set's own captions,
    which may say anything (positions too), so nothing may re-caption or move them."""
    return "captions_from" not in entry


def entry_record(entry):
    """The D2C record of a manifest entry: its boxes, per-object near_coast, size unknown for chips,
    and the source only when the user named it (source_named)."""
    near = entry.get("near_coast") or [None] * len(entry["boxes"])
    objects = []
    for (*box, category), near_coast in zip(entry["boxes"], near):
        obj = {"category": category, "box": box}
        if near_coast is not None:
            obj["near_coast"] = near_coast
        if entry.get("chip"):
            obj["size_known"] = False
        objects.append(obj)
    return {"width": entry["width"], "height": entry["height"], "objects": objects,
            "pixel_spacing": entry.get("pixel_spacing"), "scene": entry.get("scene"),
            "source": entry["source"] if entry.get("source_named") else None}


def box_inside(box, window, margin=0):
    """True when box lies wholly inside window, False when wholly outside it and at least margin
    (pixels) away, None when window cuts it or it lies outside but within margin."""
    if box[0] >= window[0] and box[1] >= window[1] and box[2] <= window[2] and box[3] <= window[3]:
        return True
    if (box[2] <= window[0] - margin or box[0] >= window[2] + margin
            or box[3] <= window[1] - margin or box[1] >= window[3] + margin):
        return False
    return None


def crop_window(rng, width, height, boxes, sides=CROP_SIDE):
    """A crop window (x0, y0, x1, y1), whole pixels, each side a fraction in `sides` of the image's,
    at a random place.

    The rule for targets, so that the caption stays true: a window that cuts any box (part of a target
    inside, part out) is redrawn, since a half ship is neither one ship nor none; boxes wholly outside
    are dropped, and the count drops with them ("two ships" when two of three remain); a window that
    would leave no object of an image that has some is redrawn too. A box left out must also lie
    CROP_MARGIN off the window, else the window is redrawn: a box drawn a little tight or a target's
    brightest sidelobes reach past its box, and the window is cut at the loaded image's whole pixels,
    so a box just outside may still show a sliver of its target ("four ships" beside the edge of a fifth).
    After CROP_TRIES windows, None: no crop (a scene crowded with targets is served whole).
    """
    margin = CROP_MARGIN * max(width, height)
    for _ in range(CROP_TRIES):
        w, h = (max(1, round(side * rng.uniform(*sides))) for side in (width, height))
        x0, y0 = int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1))
        window = (x0, y0, x0 + w, y0 + h)
        inside = [box_inside(box, window, margin) for box in boxes]
        if None not in inside and (any(inside) or not boxes):
            return window
    return None


def draw_augmentation(rng, width, height, boxes, chip=False):
    """Random transform parameters for an image of width x height pixels with boxes [[x0, y0, x1, y1], ...].

    {"crop": a crop_window or None, "flip_x": bool, "flip_y": bool, "turns": 0-3 quarter turns
    anticlockwise}, applied in that order by augment_record and augment_image. rng: a numpy Generator.

    chip=True keeps a chip's geometry: no flip, no turn. A chip set is cut in one sensor geometry, and its
    test chips share it: MSTAR's radar looks up from the bottom of every chip, so a target's bright
    returns face down and its shadow falls up. A draw that does not keep up as up (a quarter or half
    turn, or an up-down flip that no half turn undoes; three draws in four) shows a shadow where none
    ever falls in the set, and spends the model's capacity on it: with chips kept as they are, the
    recipe's held-out MSTAR chips went from 94-96% to 99% zero-shot (README: Train on real SAR). A chip
    is cropped, at the scenes' odds, by a window CHIP_CROP_SIDE of its side that keeps its middle half
    (chips.chip_object's box) whole: the target off centre by up to 1/8 of the chip's side and up to 4/3 as
    large. Why: a target in a detector's crop or in another release's chips need not sit where this
    set's chipping put it, and a model shown every chip centred exactly as its test chips are learns
    that alignment: the recipe without chip crops classified held-out MSTAR chips 99.8% zero-shot as
    stored and 31% moved by 4 of their 128 pixels (three seeds; docs/experiments.md). The flips and
    turn are still drawn, and the crop window, D2C seed and display after them, as for a scene.
    """
    params = {"flip_x": bool(rng.random() < AUGMENT_ODDS["flip_x"]),
              "flip_y": bool(rng.random() < AUGMENT_ODDS["flip_y"]), "turns": int(rng.integers(4))}
    wants_crop = rng.random() < AUGMENT_ODDS["crop"]
    if chip:
        params = {"flip_x": False, "flip_y": False, "turns": 0}
    sides = CHIP_CROP_SIDE if chip else CROP_SIDE
    params["crop"] = crop_window(rng, width, height, boxes, sides) if wants_crop else None
    return params


def draw_display(rng):
    """{"gamma", "gain"}: a new display of an image in [0, 1], x -> min(1, gain * x ** gamma); half the
    time (AUGMENT_ODDS) none, gamma = gain = 1; else each factor log-uniform in DISPLAY_RANGE.

    SAR releases store the same backscatter as amplitude, intensity (amplitude squared) or a stretch of
    either, calibrated and mapped to 8 bits each its own way: a gamma of 2 turns an amplitude image into
    an intensity image and 0.5 back, a gain is another calibration or stretch. Both are monotonic, so
    what is bright stays at least as bright as what is dark and no caption (counts, places, sizes) can
    become false. A model that has seen them still reads a release displayed unlike its training data
    (measured in the README: Train on real SAR); ManifestDataset(display_augment=True) draws them,
    rasters.redisplay shows an image so, and eval.py --display measures a model on images shown so.
    """
    gamma, gain = np.exp(rng.uniform(*np.log(DISPLAY_RANGE), size=2))
    if rng.random() >= AUGMENT_ODDS["display"]:
        return dict(NO_DISPLAY)
    return {"gamma": float(gamma), "gain": float(gain)}


def moved_box(box, width, height, params):
    """A box [x0, y0, x1, y1] of an uncropped width x height image after the flips and turns of params."""
    x0, y0, x1, y1 = box
    if params["flip_x"]:
        x0, x1 = width - x1, width - x0
    if params["flip_y"]:
        y0, y1 = height - y1, height - y0
    for _ in range(params["turns"]):  # a quarter turn anticlockwise on screen: (x, y) -> (y, width - x)
        x0, y0, x1, y1, width, height = y0, width - x1, y1, width - x0, height, width
    return [x0, y0, x1, y1]


def augment_record(entry, params):
    """The D2C record of an entry as transformed by params (draw_augmentation's): what its caption is of.

    A crop keeps the objects wholly inside it (crop_window never cuts one), shifted into the window;
    pixel_spacing stays (a crop does not rescale pixels). What the window may not show is dropped: an
    "inshore" scene label, since a crop of a harbour may show only sea ("offshore" stays: part of open
    sea is open sea), and each object's near_coast, since the coast it is near may lie outside the
    window. Flips and turns move every box; turns by an odd number swap width and height.
    """
    record = entry_record(entry)
    width, height, objects = record["width"], record["height"], record["objects"]
    if window := params["crop"]:
        x0, y0, x1, y1 = window
        objects = [{**{key: value for key, value in obj.items() if key != "near_coast"},
                    "box": [obj["box"][0] - x0, obj["box"][1] - y0, obj["box"][2] - x0, obj["box"][3] - y0]}
                   for obj in objects if box_inside(obj["box"], window)]
        width, height = x1 - x0, y1 - y0
        record["scene"] = None if record["scene"] == "inshore" else record["scene"]
    record["objects"] = [{**obj, "box": moved_box(obj["box"], width, height, params)} for obj in objects]
    record["width"], record["height"] = (height, width) if params["turns"] % 2 else (width, height)
    return record


def augment_image(image, params, width, height, size=None):
    """image [C, h, w] transformed by params, whose crop is in pixels of the annotated width x height
    image (the image itself may be loaded smaller, at max_side: the window is scaled to it), then shown
    with params' "gamma" and "gain" (draw_display's, or NO_DISPLAY's to leave the pixels as they are).

    size: squeeze_to_square to size x size after the crop, before the flips and turns, which then move
    fewer pixels (the same picture as resizing last, up to rounding).
    """
    if window := params["crop"]:
        sx, sy = image.shape[-1] / width, image.shape[-2] / height
        x0, y0 = round(window[0] * sx), round(window[1] * sy)
        x1, y1 = max(x0 + 1, round(window[2] * sx)), max(y0 + 1, round(window[3] * sy))
        image = image[:, y0:y1, x0:x1]
    if size is not None:
        image = squeeze_to_square(image, size)
    if params["flip_x"]:
        image = image.flip(-1)
    if params["flip_y"]:
        image = image.flip(-2)
    image = torch.rot90(image, params["turns"], dims=(-2, -1))  # anticlockwise, as moved_box
    return redisplay(image, params["gamma"], params["gain"])  # NO_DISPLAY leaves the pixels as stored


# ---- the Dataset ------------------------------------------------------------------------------------

class ManifestDataset(torch.utils.data.Dataset):
    """Manifest images as (image [C, S, S] in [0, 1], caption tokens [L]), one caption drawn per epoch.

    tokenizer: any callable list[str] -> LongTensor [N, L]. image_size=None keeps each image's own size
    (for AnyReader; batch with collate_keep_size), averaged down to max_side when larger. Images are
    resized whole (squeeze_to_square), never cut to a square: a target may sit at an edge.
    caption_style: "diverse" draws among the entry's own captions (D2C's diverse ones); "simple" serves
    D2C's one fixed template instead (the paper's simple-caption ablation: "a SAR image of two ships.");
    "both" adds that template to each image's captions as one more, drawn as often as each of the others
    (more often when D2C happened to write that very sentence too). csv captions stay as they are.
    augment=True transforms each detection scene whose captions D2C wrote from boxes: random flips,
    quarter turns and a crop (crop_window's rule keeps every target whole), then D2C writes the
    caption served from the transformed boxes, so "upper-left" becomes "upper-right" after a horizontal flip
    and "three ships" becomes "two ships" when a crop leaves two; with a sarclip.Tokenizer, D2C writes
    its diverse captions to the context length (Tokenizer.fits), so none is cut unless its counts alone
    are too long (the simple template is served as it is). Chips keep their sensor's geometry
    (draw_augmentation: no flip or turn; a crop moves the target a little off centre), their captions
    written anew; csv entries are served as they are. The transform of an item depends only on (seed,
    epoch, index), and caption(index), item_captions(index), item_counts(index) and, with D2C's claims
    of what each caption states, caption_claim(index) and item_truth(index) recompute it without
    loading the image: what the training loop needs for positives and count negatives.
    display_augment=True (with augment) also shows half of the images D2C captions (scenes and chips)
    with a new display gamma and gain (draw_display), which no caption speaks of.
    return_index=True adds the index of the image served to each item: (image, tokens, index).
    replace_unreadable=True serves, for an image that fails to load, a stand-in drawn from (seed, epoch,
    index, try) with its own caption, so one bad file never ends a run and a resumed run replaces it
    alike; return_index then tells which were replaced. Otherwise the SARDataError is raised.
    The caption drawn for an index depends only on (seed, epoch, index): call set_epoch before each
    epoch (DataLoader workers made with persistent_workers=True keep the epoch they started with).
    Outside DataLoader workers, decoded images are kept for the next epoch, up to CACHE_BYTES (see decoded).
    """
    STAND_IN_TRIES = 20  # this many unreadable images in a row mean the data, not a file, is broken
    MEMO_SIZE = 4096     # D2C's writings kept (per epoch and index) before the memo starts again
    CACHE_BYTES = 2**29  # decoded images kept (512 MiB: the real recipe's mix needs 264 MiB at 64 px), see decoded

    def __init__(self, manifest_paths, tokenizer, image_size, channels=1, split="train", seed=0,
                 caption_style="diverse", return_index=False, max_side=None, replace_unreadable=False,
                 augment=False, display_augment=False):
        if caption_style not in CAPTION_STYLES:
            raise ValueError(f"caption_style must be one of {CAPTION_STYLES}, got {caption_style!r}")
        paths = [manifest_paths] if isinstance(manifest_paths, (str, Path)) else manifest_paths
        self.entries = [e for p in paths for e in read_manifest(p) if split is None or e["split"] == split]
        if caption_style != "diverse":
            for entry in filter(captioned_from_boxes, self.entries):
                template = d2c.captions(entry_record(entry), n=1, simple=True)[0]  # counts in annotation order
                entry["captions"] = [template] if caption_style == "simple" else [*entry["captions"], template]
        self.tokenizer, self.image_size, self.channels = tokenizer, image_size, channels
        self.seed, self.epoch, self.return_index = seed, 0, return_index
        self.caption_style, self.augment, self.display_augment = caption_style, augment, display_augment
        # Decode no more than will be used: twice the input side leaves a half-side crop at full detail.
        self.max_side = max_side or (image_size and 2 * image_size)
        self.replace_unreadable = replace_unreadable
        self.written = {}  # {(epoch, index): (captions, their claims, true_statements, counts)}, memoised
        self.cache, self.cached_bytes = OrderedDict(), 0  # {image path: decoded image}, least recently used first

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

    def augmentation(self, index):
        """(draw_augmentation's parameters, D2C seed) of item index this epoch; None when it is served
        as it is (augment off, or captions not written from boxes)."""
        entry = self.entries[index]
        if not self.augment or not captioned_from_boxes(entry):
            return None
        rng = np.random.default_rng((self.seed, self.epoch, index, AUGMENT_STREAM))
        params = draw_augmentation(rng, entry["width"], entry["height"], [box[:4] for box in entry["boxes"]],
                                   chip=bool(entry.get("chip")))
        seed = int(rng.integers(2**63))  # D2C's; the display is drawn after it, so it changes nothing else
        return {**params, **(draw_display(rng) if self.display_augment else NO_DISPLAY)}, seed

    def item_captions(self, index):
        """Captions true of item index as served this epoch, caption(index) among them: the entry's own,
        or when augmented the one D2C writes for the transformed boxes (augment_record), in the "both"
        style then the simple template."""
        written = self.written_by_d2c(index)
        return self.entries[index]["captions"] if written is None else written[0]

    def item_truth(self, index):
        """d2c.true_statements of item index as served this epoch: all D2C could truly say of the
        transformed record, what caption claims are checked against; None when not augmented."""
        written = self.written_by_d2c(index)
        return None if written is None else written[2]

    def written_by_d2c(self, index):
        """(captions, claims, true_statements, {category: count}) of an augmented item this epoch,
        memoised; else None."""
        if (self.epoch, index) in self.written:
            return self.written[self.epoch, index]
        if (drawn := self.augmentation(index)) is None:
            return None
        params, seed = drawn
        record = augment_record(self.entries[index], params)
        fits = getattr(self.tokenizer, "fits", None)  # a sarclip.Tokenizer says which captions it reads whole
        # Only what can be served is written: D2C's first caption for this seed (the first of five too),
        # and in the "both" style the template. Writing all n took half the loader's time (a tokenizer
        # fit check per try: 574 ms a batch of 64 on 2 cores, 299 without), and the batch's positives
        # need no more: another image's caption is checked against this one's true statements (its
        # claim, d2c.claim_holds).
        pairs = d2c.captions(record, n=1, seed=seed, simple=self.caption_style == "simple", claims=True, fits=fits)
        if self.caption_style == "both":
            pairs += d2c.captions(record, n=1, simple=True, claims=True)
        if len(self.written) >= self.MEMO_SIZE:  # a few batches' worth: enough, and small for any corpus
            self.written.clear()
        captions, claims = (list(column) for column in zip(*pairs))
        counts = dict(Counter(obj["category"] for obj in record["objects"]))  # in order of appearance
        self.written[self.epoch, index] = captions, claims, d2c.true_statements(record), counts  # asked for again
        return self.written[self.epoch, index]

    def item_counts(self, index):
        """{category: number of objects} in item index as served this epoch (a crop may leave fewer)."""
        written = self.written_by_d2c(index)
        return self.entries[index]["counts"] if written is None else written[3]

    def caption(self, index):
        """The caption served with item index this epoch, one of item_captions(index), the same for the
        same (seed, epoch, index). An augmented item's is D2C's first for its transform, or in the "both"
        style the simple template (the last) one time in n, the entry's n captions counting the template."""
        entry, rng = self.entries[index], np.random.default_rng((self.seed, self.epoch, index))
        if (written := self.written_by_d2c(index)) is None:
            return entry["captions"][rng.integers(len(entry["captions"]))]
        captions, n = written[0], len(entry["captions"])
        return captions[-1] if self.caption_style == "both" and rng.integers(n) == n - 1 else captions[0]

    def caption_claim(self, index):
        """The claim (d2c.captions' statements) of caption(index), or None when D2C did not write it
        this epoch (not augmented, or a csv caption)."""
        if (written := self.written_by_d2c(index)) is None:
            return None
        captions, claims = written[:2]
        return claims[captions.index(self.caption(index))]

    def image(self, index):
        """The image, [C, image_size, image_size] (or its own size when image_size is None), transformed
        as augmentation(index) says."""
        entry, size = self.entries[index], self.image_size
        image = self.decoded(index)
        if (drawn := self.augmentation(index)) is not None:
            return augment_image(image, drawn[0], entry["width"], entry["height"], size)
        return image if size is None else squeeze_to_square(image, size)

    def decoded(self, index):
        """load_sar_image of item index's file, at max_side (bounded memory for big scenes), as a copy of
        its decoded pixels. Decoding was a third of the loader's time and every epoch decodes the same
        files, so the pixels are kept for the next epoch, up to CACHE_BYTES, the least recently used
        dropped first. Not in a DataLoader worker: train.py makes its workers anew each epoch, so what
        one kept would be gone when asked for again (a set larger than CACHE_BYTES, served in a new
        order each epoch, also finds little kept). Kept by file: the copies of a manifest listed again
        share one decode."""
        path = self.entries[index]["image"]
        if (image := self.cache.get(path)) is not None:
            self.cache.move_to_end(path)
            return image.clone()  # the caller may change its copy; the kept pixels stay as decoded
        image = load_sar_image(path, self.channels, max_side=self.max_side)
        if torch.utils.data.get_worker_info() is None and image.nbytes <= self.CACHE_BYTES:
            self.cache[path], self.cached_bytes = image.clone(), self.cached_bytes + image.nbytes
            while self.cached_bytes > self.CACHE_BYTES:
                self.cached_bytes -= self.cache.popitem(last=False)[1].nbytes
        return image

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
