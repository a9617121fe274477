"""Two-parameter CFAR: the classical SAR target detector, as a counting baseline for SARCount.

A counting model should beat what a SAR analyst would use without one. The standard tool is a
constant-false-alarm-rate (CFAR) detector: a pixel is a target pixel when it is brighter than its
local clutter by k standard deviations,

    (x - mean_ring) / std_ring > k,

the mean and standard deviation taken over a ring around it (a background window with a guard window
cut out of its middle, so that the target's own pixels do not raise its threshold). This is the
"two-parameter" (Gaussian-clutter) CFAR, a standard first detector for ships in SAR (surveyed by
D. J. Crisp, "The state-of-the-art in ship detection in synthetic aperture radar imagery",
DSTO-RR-0272, 2004).
The detections are cleaned with a 3 x 3 opening (one speckle pixel is no target), grouped into
8-connected blobs, and blobs of at least `min_area` pixels are counted.

Nothing here is learned but four numbers (the two windows, k, the smallest blob), which `fit` picks
from a small grid on training images of each category, as a linear probe picks its weight decay.
Image processing is scipy's (ndimage), not ours.
"""
import itertools

import numpy as np
import torch
from scipy import ndimage

import rasters
from metrics import COUNTS, category_of, counting_report

WINDOWS = ((41, 15), (61, 21), (81, 31))  # (background, guard) window sides in pixels of the image as read
THRESHOLDS = (3.0, 4.0, 5.0, 6.0)  # k: clutter standard deviations above the clutter mean
MIN_AREAS = (8, 20, 40, 80)  # pixels: smaller blobs are speckle or sidelobes
MAX_SIDE = 1024  # images are read at up to this side: native resolution for SSDD and HRSID tiles
ANSWERS = (COUNTS[0], COUNTS[-1])  # SARCount's 1-10: like the model's prompts, the detector answers within them
FIT_IMAGES = 300  # training images a setting is picked on, evenly spaced through the split (15-20 s on SSDD)
NOISE_FLOOR = 1 / 255  # the clutter's std is taken as at least one 8-bit grey level: flat black is no clutter


def contrast(image, window, guard):
    """[H, W] float image -> [H, W] (x - ring mean) / ring std, the ring being the window x window box
    around each pixel less its guard x guard middle; edges reflect."""
    image = image.astype(np.float64)
    outer, inner = window * window, guard * guard

    def ring_mean(values):  # box sums of the two windows, the guard's taken off
        return (ndimage.uniform_filter(values, window, mode="reflect") * outer
                - ndimage.uniform_filter(values, guard, mode="reflect") * inner) / (outer - inner)
    mean = ring_mean(image)
    std = np.maximum(np.sqrt(np.maximum(ring_mean(image * image) - mean * mean, 0)), NOISE_FLOOR)
    return (image - mean) / std


def blobs(detections):
    """[H, W] bool -> (labels [H, W] int, 0 where nothing, 1..n a blob; areas [n] in pixels): the
    8-connected blobs of the detections after a 3 x 3 opening."""
    opened = ndimage.binary_opening(detections, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(opened, structure=np.ones((3, 3), bool))
    return labels, np.bincount(labels.ravel(), minlength=n + 1)[1:]


def answer(areas, min_area, answers=ANSWERS):
    """The count of the blobs of at least min_area pixels, brought within answers (lowest, highest)."""
    return min(max(int((areas >= min_area).sum()), answers[0]), answers[1])


def count(image, window, guard, k, min_area, answers=ANSWERS):
    """The number of targets CFAR finds in an [H, W] image in [0, 1], within answers."""
    return answer(blobs(contrast(image, window, guard) > k)[1], min_area, answers)


def grid_counts(image, answers=ANSWERS):
    """{(window, guard, k, min_area): count} for every setting of the grid, sharing the costly steps."""
    out = {}
    for window, guard in WINDOWS:
        z = contrast(image, window, guard)
        for k in THRESHOLDS:
            _, areas = blobs(z > k)
            for min_area in MIN_AREAS:
                out[window, guard, k, min_area] = answer(areas, min_area, answers)
    return out


def fit(images, true_counts, answers=ANSWERS):
    """The grid's setting {"window", "guard", "k", "min_area"} that counts the most training images right
    (ties: the smaller mean absolute error, then the first in grid order). images: [H, W] arrays, any
    iterable (each is counted on the whole grid as it comes, so a generator holds one image at a time);
    true_counts: one per image."""
    found = [grid_counts(image, answers) for image in images]
    if not found:
        raise ValueError("cfar.fit: no training images to pick the detector's setting on")
    if len(found) != len(true_counts):
        raise ValueError(f"cfar.fit: {len(found)} training images for {len(true_counts)} true counts")
    settings = [(*w, k, a) for w, k, a in itertools.product(WINDOWS, THRESHOLDS, MIN_AREAS)]

    def score(setting):
        errors = [abs(f[setting] - t) for f, t in zip(found, true_counts)]
        return errors.count(0), -sum(errors)
    best = max(settings, key=score)  # max keeps the first of equals
    return dict(zip(("window", "guard", "k", "min_area"), best))


def read(entry, display=None):
    """A manifest entry's image as CFAR reads it: [H, W] float array in [0, 1], at up to MAX_SIDE a side,
    shown with display=(gamma, gain, db) as eval.py shows it to the model."""
    image = rasters.load_sar_image(entry["image"], 1, max_side=MAX_SIDE)
    return (rasters.redisplay(image, *display) if display else image)[0].numpy()


def evenly(entries, n=FIT_IMAGES):
    """At most n of the entries, spread evenly from the first to the last (all of them when fewer)."""
    if len(entries) <= n:
        return entries
    return [entries[i] for i in np.linspace(0, len(entries) - 1, n).round().astype(int)]


def baseline(train_entries, test_entries, display=None):
    """SARCount's CFAR baseline: a setting for each category, fitted on (up to FIT_IMAGES of) its training
    entries, or on all of them pooled for a category with none (the model's prompts name the category
    too); then each test entry counted. Entries: SARCount's (1-10 targets of one category,
    data.sarcount_split). Returns metrics.counting_report's scores and "predictions", and
    "settings" ({category or "all": setting}) and "fitted_on" (training images for each setting)."""
    if not train_entries:
        raise ValueError("cfar.baseline: no training images to fit the detector on")
    categories = sorted({category_of(e) for e in test_entries})
    fit_sets = {c: evenly([e for e in train_entries if category_of(e) == c]) for c in categories}
    if not all(fit_sets.values()):
        fit_sets["all"] = evenly(train_entries)  # for the categories with no training image of their own
    fit_sets = {c: entries for c, entries in fit_sets.items() if entries}
    settings = {c: fit((read(e, display) for e in entries), [sum(e["counts"].values()) for e in entries])
                for c, entries in fit_sets.items()}
    predicted = torch.tensor([count(read(e, display), **settings.get(category_of(e), settings.get("all")))
                              for e in test_entries])
    return {**counting_report(test_entries, predicted), "settings": settings,
            "fitted_on": {c: len(entries) for c, entries in fit_sets.items()}}
