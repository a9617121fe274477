"""Tests for cfar.py, the classical counting baseline: bright targets on speckle are found one blob each,
speckle and small specks are not, and fit picks a setting that counts images it never saw."""
import numpy as np
import pytest

import cfar


def scene(ships, specks=(), side=200, seed=0):
    """[side, side] speckled sea (exponential intensity, mean 0.05) with bright 8 x 16 ships at the (row,
    col) corners given and bright 3 x 3 specks (a sidelobe, a buoy: no ship) at theirs."""
    rng = np.random.default_rng(seed)
    image = rng.exponential(0.05, (side, side))
    for r, c in ships:
        image[r:r + 8, c:c + 16] = 0.6 + 0.2 * rng.random((8, 16))
    for r, c in specks:
        image[r:r + 3, c:c + 3] = 0.8
    return np.clip(image, 0, 1)


SHIPS = [(20, 30), (100, 120), (160, 40), (60, 150)]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_each_ship_is_one_blob(n):
    assert cfar.count(scene(SHIPS[:n]), window=61, guard=21, k=4.0, min_area=20) == n


def test_speckle_alone_counts_as_the_smallest_answer():
    # no blob survives: the answer is clamped to SARCount's range, 1-10, as the model's prompts are
    assert cfar.count(scene([]), window=61, guard=21, k=4.0, min_area=20) == 1
    assert cfar.count(scene(SHIPS), window=61, guard=21, k=4.0, min_area=20, answers=(1, 3)) == 3


def test_blobs_smaller_than_min_area_are_not_targets():
    image = scene(SHIPS[:2], specks=[(180, 180), (10, 180)])
    assert cfar.count(image, window=61, guard=21, k=4.0, min_area=8) == 4  # a 3 x 3 speck is 9 pixels
    assert cfar.count(image, window=61, guard=21, k=4.0, min_area=20) == 2


def test_flat_black_is_no_clutter():
    # One grey level above pure black is no target: the clutter's spread is taken as at least one level.
    image = np.zeros((120, 120))
    image[[20, 60, 100], [30, 70, 90]] = 1 / 255
    assert cfar.count(image, window=41, guard=15, k=3.0, min_area=1) == 1  # none found: the smallest answer
    image[50:58, 40:56] = 0.5
    assert cfar.count(image, window=41, guard=15, k=3.0, min_area=20) == 1 and cfar.blobs(
        cfar.contrast(image, 41, 15) > 3.0)[1].tolist() == [8 * 16]


def test_contrast_is_finite_on_flat_clutter():
    image = np.full((90, 90), 0.3)
    image[45, 45] = 1.0
    z = cfar.contrast(image, 41, 15)
    assert np.isfinite(z).all() and z[45, 45] > 100 and abs(z[0, 0]) < 1e-3


def test_fit_picks_a_setting_that_counts_unseen_images():
    # Each training image holds 1-4 ships and two specks: only min_area above 9 pixels counts them right.
    def image(i):
        n = 1 + i % 4
        return scene(SHIPS[:n], specks=[(185, 10 + 20 * i % 150), (5, 100)], seed=i), n
    train, test = [image(i) for i in range(8)], [image(i) for i in range(8, 12)]
    setting = cfar.fit([im for im, _ in train], [n for _, n in train])
    assert set(setting) == {"window", "guard", "k", "min_area"} and setting["min_area"] > 9
    assert [cfar.count(im, **setting) for im, _ in test] == [n for _, n in test]
    with pytest.raises(ValueError, match="no training images"):
        cfar.fit([], [])


def test_evenly_spreads_over_the_whole_split():
    assert cfar.evenly(list(range(5)), 10) == [0, 1, 2, 3, 4]
    assert cfar.evenly(list(range(708)), 4) == [0, 236, 471, 707]


def test_baseline_fits_each_category_and_pools_for_the_rest(tmp_path):
    from PIL import Image

    def entry(i, n, category):
        path = tmp_path / f"{category}_{i}.png"
        Image.fromarray((255 * scene(SHIPS[:n], seed=i)).astype(np.uint8)).save(path)
        return {"image": str(path), "counts": {category: n}}
    train = [entry(i, 1 + i % 4, "ship") for i in range(8)]
    test = [entry(i, 1 + i % 4, "ship") for i in range(8, 12)] + [entry(12, 3, "tank")]
    result = cfar.baseline(train, test)
    assert result["fitted_on"] == {"ship": 8, "all": 8}  # no tank to train on: tanks get the pooled setting
    assert [p["predicted"] for p in result["predictions"]] == [1, 2, 3, 4, 3] and result["accuracy"] == 100.0
    with pytest.raises(ValueError, match="no training images"):
        cfar.baseline([], test)
