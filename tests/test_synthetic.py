"""synthetic.py: the speckle model, point scatterers, scenes with exact boxes, the cached default set."""
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import data
import synthetic


# ---- synthetic SAR ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("looks", [1, 4])
def test_speckle_has_mean_one_and_variance_one_over_looks(looks):
    sample = synthetic.speckle((1000, 1000), looks, np.random.default_rng(0))
    # A million draws: the standard error of the mean is 0.001/sqrt(L), of the variance about 0.3%.
    assert sample.mean() == pytest.approx(1.0, abs=0.005)
    assert sample.var() == pytest.approx(1 / looks, rel=0.02)


def test_strong_scatterers_draw_sidelobe_crosses():
    image = synthetic.add_scatterers(np.zeros((21, 21)), [(10, 10, 1000.0)])
    assert image[10, 10] == 1000.0
    # 3 px along an axis a sidelobe keeps 1.3% of the peak (-19 dB); off the axes it is that squared.
    assert image[10, 13] == image[13, 10] == pytest.approx(12.9, abs=0.1)
    assert image[13, 13] == pytest.approx(12.9 ** 2 / 1000, abs=0.01)


def test_synthetic_scene_is_deterministic_for_a_seed():
    one = synthetic.synthetic_scene(np.random.default_rng(7), 160, 128, "coast")
    two = synthetic.synthetic_scene(np.random.default_rng(7), 160, 128, "coast")
    other = synthetic.synthetic_scene(np.random.default_rng(8), 160, 128, "coast")
    assert np.array_equal(one[0], two[0]) and one[1:] == two[1:]
    assert not np.array_equal(one[0], other[0])


def test_synthetic_targets_are_boxed_exactly_and_stand_out():
    inside, clutter, categories = [], [], Counter()
    for i, kind in enumerate(["offshore", "coast", "channel", "airport"] * 5):
        image, objects, scene = synthetic.synthetic_scene(np.random.default_rng(i), 192, 160, kind)
        assert scene == synthetic.SCENE_LABEL[kind]
        background = np.ones(image.shape, bool)
        for obj in objects:
            x0, y0, x1, y1 = obj["box"]
            assert 0 < x0 < x1 < 192 and 0 < y0 < y1 < 160    # inside the image, clear of its edge
            inside.append(image[y0:y1, x0:x1].mean())
            background[max(y0 - 10, 0):y1 + 10, max(x0 - 10, 0):x1 + 10] = False  # away from sidelobes
            categories[obj["category"]] += 1
            assert ("near_coast" in obj) == (scene == "inshore")
        clutter.append(image[background].mean())
    assert set(categories) == {"ship", "aircraft", "car", "tank", "bridge", "harbor"}
    assert np.mean(inside) > 1.8 * np.mean(clutter)   # bright scatterers over sea, land and apron


def test_make_synthetic_layout_manifests_and_cache(tmp_path):
    paths = synthetic.make_synthetic(tmp_path, seed=3, n_scenes=10, chips_per_class=2, images_per_count=1)
    scenes = data.read_manifest(paths["scenes"])
    assert len(scenes) == 10 and all(e["pixel_spacing"] == synthetic.SYNTH_SPACING for e in scenes)
    for entry in scenes:  # the reader picked up D2C's extra facts from the VOC files
        assert ("near_coast" in entry) == (entry.get("scene") == "inshore" and bool(entry["boxes"]))
    assert sorted(p.name for p in paths["chips"].iterdir()) == sorted(synthetic.CHIP_KIND)
    assert all(Image.open(p).size == (64, 64) for p in paths["chips"].glob("*/*.png"))
    counting = data.read_manifest(paths["count"])
    assert len(counting) == 10 and {e["split"] for e in counting} == {"test"}  # kept for evaluation
    for entry in counting:  # the folder says how many there are
        assert sum(entry["counts"].values()) == int(entry["image"].split("/")[-2])
    stamp = paths["scenes"].stat().st_mtime_ns
    assert synthetic.make_synthetic(tmp_path, seed=3, n_scenes=10, chips_per_class=2, images_per_count=1) == paths
    assert paths["scenes"].stat().st_mtime_ns == stamp   # complete already: nothing rewritten
