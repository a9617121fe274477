"""Two-parameter CFAR: the classical SAR target detector, as a counting baseline for SARCount.

A counting model should beat what a SAR analyst would use without one. The standard tool is a
constant-false-alarm-rate (CFAR) detector: a pixel is a target pixel when it is brighter than its
local clutter by k standard deviations,

    (x - mean_ring) / std_ring > k,

the mean and standard deviation taken over a ring around it (a background window with a guard window
cut out of its middle, so that the target's own pixels do not raise its threshold). This is the
"two-parameter" (Gaussian-clutter) CFAR, the first detector most SAR ship-detection work compares
against (surveyed by D. J. Crisp, "The state-of-the-art in ship detection in synthetic aperture
radar imagery", DSTO-RR-0272, 2004).
The detections are cleaned with a 3 x 3 opening (one speckle pixel is no target), grouped into
8-connected blobs, and blobs of at least `min_area` pixels are counted.

Nothing here is learned but four numbers (the two windows, k, the smallest blob), which `fit` picks
from a small grid on training images, as a linear probe picks its weight decay. Image processing is
scipy's (ndimage), not ours.
"""
import itertools

import numpy as np
import torch
from scipy import ndimage

import rasters
from metrics import COUNTS, counting_metrics

WINDOWS = ((41, 15), (61, 21), (81, 31))  # (background, guard) window sides in pixels of the image as read
THRESHOLDS = (3.0, 4.0, 5.0, 6.0)  # k: clutter standard deviations above the clutter mean
MIN_AREAS = (8, 20, 40, 80)  # pixels: smaller blobs are speckle or sidelobes
MAX_SIDE = 1024  # images are read at up to this side: native resolution for SSDD and HRSID tiles
ANSWERS = (COUNTS[0], COUNTS[-1])  # SARCount's 1-10: like the model's prompts, the detector answers within them
FIT_IMAGES = 300  # training images the setting is picked on, evenly spaced through the split (15 s on SSDD)


def contrast(image, window, guard):
    """[H, W] float image -> [H, W] (x - ring mean) / ring std, the ring being the window x window box
    around each pixel less its guard x guard middle; edges reflect."""
    image = image.astype(np.float64)
    outer, inner = window * window, guard * guard

    def ring_mean(values):  # box sums of the two windows, the guard's taken off
        return (ndimage.uniform_filter(values, window, mode="reflect") * outer
                - ndimage.uniform_filter(values, guard, mode="reflect") * inner) / (outer - inner)
    mean = ring_mean(image)
    std = np.sqrt(np.maximum(ring_mean(image * image) - mean * mean, 1e-12))  # flat clutter: no division by 0
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
    (ties: the smaller mean absolute error, then the first in grid order). images: [H, W] arrays."""
    if not images:
        raise ValueError("cfar.fit: no training images to pick the detector's setting on")
    found = [grid_counts(image, answers) for image in images]
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


def baseline(train_entries, test_entries, display=None):
    """SARCount's CFAR baseline: the setting fitted on (up to FIT_IMAGES of) the training entries, then
    each test entry counted. Entries: SARCount's (1-10 targets of one category, data.sarcount_split).
    Returns metrics.counting_metrics' scores, "predictions" as eval.counting's, "setting" and
    "fitted_on" (how many training images it was picked on)."""
    fit_entries = train_entries[::max(1, len(train_entries) // FIT_IMAGES)][:FIT_IMAGES]
    setting = fit([read(e, display) for e in fit_entries], [sum(e["counts"].values()) for e in fit_entries])
    true = torch.tensor([sum(e["counts"].values()) for e in test_entries])
    predicted = torch.tensor([count(read(e, display), **setting) for e in test_entries])
    predictions = [{"image": str(e["image"]), "category": next(iter(e["counts"])), "true": t, "predicted": p}
                   for e, t, p in zip(test_entries, true.tolist(), predicted.tolist())]
    return {**counting_metrics(predicted, true), "predictions": predictions, "setting": setting,
            "fitted_on": len(fit_entries)}
