"""dataset.py: ManifestDataset serves a manifest per (seed, epoch, index), and box-aware augmentation keeps
every caption true of the pixels it is served with."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import counterfactuals
import d2c
import synthetic
from data import build_manifest
from dataset import (ManifestDataset, augment_image, augment_record, box_inside, collate_keep_size, crop_window,
                     draw_augmentation, draw_display, NO_DISPLAY)
from rasters import load_sar_image, squeeze_to_square
from sarclip import Tokenizer
from test_data import caption_file, chip_folder, fake_tokenizer, gray_image, voc_object


# ---- the Dataset --------------------------------------------------------------------------------------

def test_dataset_draws_one_caption_per_epoch(tmp_path):
    for i in range(4):
        gray_image(tmp_path / "s" / "JPEGImages" / f"{i}.png", 50 + 10 * i, 40, 20 * i)
        (tmp_path / "s" / "Annotations").mkdir(exist_ok=True)
        objects = [voc_object("ship", [2, 2, 12, 6 + i]), voc_object("ship", [20, 20, 40, 30])]
        xml = synthetic.voc_xml(f"{i}.png", 50, 40, objects, "offshore", 3.0)
        (tmp_path / "s" / "Annotations" / f"{i}.xml").write_text(xml)
    build_manifest([f"voc:{tmp_path / 's'}"], tmp_path / "m.jsonl", n_captions=5, verbose=False)
    dataset = ManifestDataset(tmp_path / "m.jsonl", fake_tokenizer, image_size=32, split=None, seed=1)
    image, tokens = dataset[2]
    assert image.shape == (1, 32, 32) and tokens.shape == (8,) and tokens.dtype == torch.long
    assert float(image.mean()) == pytest.approx(40 / 255, abs=1e-6)  # a flat image stays flat when resized
    drawn = [[dataset.caption(i) for i in range(4)] for dataset.epoch in range(6)]
    assert all(c in dataset.captions[i] for row in drawn for i, c in enumerate(row))
    assert len({tuple(row) for row in drawn}) > 1                      # the draw changes with the epoch
    again = ManifestDataset(tmp_path / "m.jsonl", fake_tokenizer, image_size=32, split=None, seed=1)
    again.set_epoch(3)
    assert [again.caption(i) for i in range(4)] == drawn[3]            # and is the same for (seed, epoch, index)
    assert dataset.counts[0] == {"ship": 2}
    simple = ManifestDataset(tmp_path / "m.jsonl", fake_tokenizer, image_size=32, split=None, caption_style="simple")
    assert simple.captions[0] == ["a SAR image of two ships."]
    native = ManifestDataset(tmp_path / "m.jsonl", fake_tokenizer, None, channels=3, split=None, return_index=True)
    images, tokens, index = collate_keep_size([native[0], native[3]])
    assert [im.shape for im in images] == [(3, 40, 50), (3, 40, 80)] and tokens.shape == (2, 8)
    assert index.tolist() == [0, 3]


# ---- box-aware augmentation ---------------------------------------------------------------------------

NO_CHANGE = {"crop": None, "flip_x": False, "flip_y": False, "turns": 0, **NO_DISPLAY}


def scene_entry(boxes, width=90, height=60, **extra):
    """A manifest entry (as read_manifest returns it) of ships at boxes."""
    return {"image": "x.png", "width": width, "height": height, "source": "SSDD", "source_named": True,
            "counts": {"ship": len(boxes)} if boxes else {}, "boxes": [[*box, "ship"] for box in boxes],
            "captions": ["d2c's"], "split": "train", **extra}


def test_a_horizontal_flip_moves_the_caption_to_the_mirrored_cell():
    entry = scene_entry([[5, 5, 20, 15]])  # upper-left of 90 x 60
    record = augment_record(entry, {**NO_CHANGE, "flip_x": True})
    assert record["objects"] == [{"category": "ship", "box": [70, 5, 85, 15]}]  # x -> 90 - x
    texts = [c for seed in range(40) for c in d2c.captions(record, n=3, seed=seed)]
    assert any(p in t for t in texts for p in d2c.CELL_PHRASES[0, 2])          # upper-right
    assert not any(p in t for t in texts for p in d2c.CELL_PHRASES[0, 0])      # never upper-left
    turned = augment_record(entry, {**NO_CHANGE, "turns": 1})  # a quarter turn anticlockwise
    assert (turned["width"], turned["height"], turned["objects"][0]["box"]) == (60, 90, [5, 70, 15, 85])  # lower-left


def test_a_crop_never_cuts_a_target_and_its_count_is_the_boxes_left():
    entry = scene_entry([[5, 5, 15, 15], [30, 5, 40, 15], [70, 40, 80, 50]], scene="inshore", pixel_spacing=3.0,
                        near_coast=[True, False, False])
    record = augment_record(entry, {**NO_CHANGE, "crop": (0, 0, 45, 30)})  # the third ship is left out
    assert [o["box"] for o in record["objects"]] == [[5, 5, 15, 15], [30, 5, 40, 15]]
    assert all("near_coast" not in o for o in record["objects"])  # the coast may lie outside the window
    assert (record["width"], record["height"], record["pixel_spacing"], record["scene"]) == (45, 30, 3.0, None)
    assert all(re.search(r"\b(two|2) (small |medium-sized |large )?ships\b", c) for c in d2c.captions(record, n=10))
    rng, boxes = np.random.default_rng(0), [b[:4] for b in entry["boxes"]]
    windows = [crop_window(rng, 90, 60, boxes) for _ in range(300)]
    assert all(None not in [box_inside(b, w, 0.02 * 90) for b in boxes] for w in windows if w)  # whole or well gone
    assert all(any(box_inside(b, w) for b in boxes) for w in windows if w)         # never all gone
    assert all(45 <= w[2] - w[0] <= 90 and 30 <= w[3] - w[1] <= 60 for w in windows if w)
    assert len({w for w in windows if w}) > 50
    assert crop_window(rng, 90, 60, [[1, 1, 89, 59]]) is None  # every window would cut it: no crop


def test_a_box_left_out_just_past_the_window_counts_as_cut():
    """A box a pixel outside a window may still show its target's sidelobes there: within the margin
    it is cut, and crop_window redraws such windows."""
    assert box_inside([10, 0, 20, 5], (0, 0, 9, 10)) is False
    assert box_inside([10, 0, 20, 5], (0, 0, 9, 10), margin=2) is None
    assert box_inside([10, 0, 20, 5], (0, 0, 8, 10), margin=2) is False
    assert box_inside([2, 2, 5, 5], (0, 0, 9, 10), margin=2) is True
    rng, boxes = np.random.default_rng(1), [[40, 20, 50, 30], [60, 20, 70, 30]]  # 90 x 60: margin 1.8 px
    windows = [w for _ in range(300) if (w := crop_window(rng, 90, 60, boxes))]
    gaps = [w[0] - b[2] if b[2] <= w[0] else b[0] - w[2] for w in windows for b in boxes if b[2] <= w[0] or b[0] >= w[2]]
    assert len(gaps) > 10 and min(gaps) >= 1.8


def bright_square(box, width, height):
    """A dark [1, height, width] image with the pixels of box set to 1."""
    image = torch.zeros(1, height, width)
    image[0, box[1]:box[3], box[0]:box[2]] = 1
    return image


def bright_box(image):
    """[x0, y0, x1, y1] around an image's pixels above 0.5."""
    ys, xs = (image[0] > 0.5).nonzero(as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_pixels_and_boxes_move_together(flip_x, flip_y, turns):
    box, entry = [10, 4, 22, 12], scene_entry([[10, 4, 22, 12], [70, 30, 80, 40]], width=90, height=60)
    for crop, scale in ((None, 1), ((6, 2, 60, 50), 1), ((6, 2, 60, 50), 0.5)):  # 0.5: loaded at half size
        params = {**NO_CHANGE, "crop": crop, "flip_x": flip_x, "flip_y": flip_y, "turns": turns}
        image = augment_image(bright_square([round(v * scale) for v in box], round(90 * scale), round(60 * scale)),
                                   params, 90, 60)
        record = augment_record(entry, params)
        assert tuple(image.shape[1:]) == tuple(round(v * scale) for v in (record["height"], record["width"]))
        assert bright_box(image) == [round(v * scale) for v in record["objects"][0]["box"]]
    resized_last = squeeze_to_square(augment_image(bright_square(box, 90, 60), params, 90, 60), 32)
    resized_first = augment_image(bright_square(box, 90, 60), params, 90, 60, size=32)
    assert torch.allclose(resized_first, resized_last, atol=1e-5)  # the same picture, made faster


def test_chips_keep_their_geometry_and_move_their_target_a_little():
    entry = scene_entry([[32, 32, 96, 96]], width=128, height=128, chip=True)  # chips.chip_object's middle half
    rng, crops = np.random.default_rng(1), 0
    for _ in range(200):  # a scene's draws would flip and turn it
        params = draw_augmentation(rng, 128, 128, [[32, 32, 96, 96]], chip=True)
        assert (params["flip_x"], params["flip_y"], params["turns"]) == (False, False, 0)  # the shadow stays put
        [obj] = augment_record(entry, params)["objects"]
        if params["crop"] is None:
            assert obj["box"] == [32, 32, 96, 96]
            continue
        crops += 1
        x0, y0, x1, y1 = params["crop"]
        assert 96 <= x1 - x0 <= 128 and 96 <= y1 - y0 <= 128  # CHIP_CROP_SIDE: at most 4/3 as large
        assert 0 <= x0 <= 32 <= 96 <= x1 <= 128 and 0 <= y0 <= 32 <= 96 <= y1 <= 128  # the middle half kept whole
        assert obj["box"] == [32 - x0, 32 - y0, 96 - x0, 96 - y0] and obj["size_known"] is False
        assert abs((x0 + x1) / 2 - 64) <= 16 and abs((y0 + y1) / 2 - 64) <= 16  # off centre by 1/8 of the side at most
    assert 80 < crops < 120  # AUGMENT_ODDS["crop"], as scenes


def test_a_new_display_keeps_the_boxes_the_caption_and_what_is_brighter():
    rng = np.random.default_rng(0)
    displays = [draw_display(rng) for _ in range(1000)]
    unchanged = sum(d == NO_DISPLAY for d in displays)
    assert 420 < unchanged < 580  # AUGMENT_ODDS["display"]: half are served as stored
    for key in ("gamma", "gain"):
        values = np.array([d[key] for d in displays if d != NO_DISPLAY])
        assert 0.5 <= values.min() < 0.55 and 1.8 < values.max() <= 2.0
        assert 0.85 < np.median(values) < 1.15  # log-uniform: as often darker as brighter
    image = torch.tensor([[[0.0, 0.25, 0.5, 0.8]]])  # [1, 1, 4]
    assert torch.allclose(augment_image(image, {**NO_CHANGE, "gamma": 2.0, "gain": 2.0}, 4, 1),
                          torch.tensor([[[0.0, 0.125, 0.5, 1.0]]]))  # 2 x^2, capped at 1: amplitude as intensity
    assert torch.allclose(augment_image(image, {**NO_CHANGE, "gamma": 0.5}, 4, 1), image.sqrt())
    entry = scene_entry([[5, 5, 20, 15]])
    assert augment_record(entry, {**NO_CHANGE, "gamma": 0.5, "gain": 2.0}) == augment_record(entry, NO_CHANGE)


def test_only_a_named_source_reaches_an_augmented_caption():
    for named in (True, False):
        record = augment_record(scene_entry([[5, 5, 20, 15]], source_named=named), NO_CHANGE)
        assert record["source"] == ("SSDD" if named else None)


def augment_set(tmp_path):
    """A manifest of four 90 x 60 scenes with three ships each, a chip and a csv image; the scenes dark
    with bright ships."""
    root = tmp_path / "s"
    (root / "Annotations").mkdir(parents=True)
    boxes = [[5, 5, 15, 15], [30, 5, 40, 15], [70, 40, 80, 50]]
    for i in range(4):
        pixels = np.zeros((60, 90), np.uint8)
        for x0, y0, x1, y1 in boxes:
            pixels[y0:y1, x0:x1] = 255
        (root / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{i}.png")
        xml = synthetic.voc_xml(f"{i}.png", 90, 60, [voc_object("ship", b) for b in boxes], "offshore", 3.0)
        (root / "Annotations" / f"{i}.xml").write_text(xml)
    chip_folder(tmp_path / "chips", {"T72": 1})
    gray_image(tmp_path / "cap" / "a.png")
    caption_file(tmp_path / "cap" / "c.csv", [("a.png", "a ship in the upper-left")])
    build_manifest([f"voc:{root}", f"chips:{tmp_path / 'chips'}", f"csv:{tmp_path / 'cap' / 'c.csv'}"],
                   tmp_path / "m.jsonl", verbose=False)
    return tmp_path / "m.jsonl"


def test_augmented_items_are_deterministic_and_their_captions_true(tmp_path):
    manifest = augment_set(tmp_path)
    dataset = ManifestDataset(manifest, fake_tokenizer, None, split=None, seed=3, augment=True)
    plain = ManifestDataset(manifest, fake_tokenizer, None, split=None, seed=3)
    moved = chips_cropped = 0
    for dataset.epoch in range(8):
        again = ManifestDataset(manifest, fake_tokenizer, None, split=None, seed=3, augment=True)
        again.set_epoch(dataset.epoch)
        for i in range(4):  # the scenes
            image, tokens = dataset[i]
            assert torch.equal(image, again[i][0]) and dataset.caption(i) == again.caption(i)
            counts, caption = dataset.item_counts(i), dataset.caption(i)
            assert dataset.item_captions(i) == [caption]  # D2C writes only the caption it serves
            assert [(c.category, c.n) for c in counterfactuals.read_counts(caption, counts)] == list(counts.items())
            assert int((image > 0.5).sum()) == 100 * counts["ship"]  # one 10 x 10 bright square per ship
            moved += not torch.equal(image, plain[i][0])
        chip_image, _ = dataset[4]
        params = dataset.augmentation(4)[0]  # its geometry kept, a small crop at most; its captions written anew
        assert (params["flip_x"], params["flip_y"], params["turns"]) == (False, False, 0)
        x0, y0, x1, y1 = params["crop"] or (0, 0, plain[4][0].shape[-1], plain[4][0].shape[-2])
        assert chip_image.equal(plain[4][0][:, y0:y1, x0:x1]) and dataset.item_counts(4) == {"T72": 1}
        chips_cropped += params["crop"] is not None
        assert dataset[5][0].equal(plain[5][0]) and dataset.caption(5) == "a ship in the upper-left"  # csv: as it is
        assert dataset.item_captions(5) == ["a ship in the upper-left"]
    assert moved > 20 and 0 < chips_cropped < 8  # of 32 scene items, most were flipped, turned or cropped


def test_display_augment_changes_only_the_display(tmp_path):
    manifest = augment_set(tmp_path)
    plain = ManifestDataset(manifest, fake_tokenizer, None, split=None, seed=3, augment=True)
    shown = ManifestDataset(manifest, fake_tokenizer, None, split=None, seed=3, augment=True, display_augment=True)
    redisplayed = 0
    for plain.epoch in range(6):
        shown.set_epoch(plain.epoch)
        for i in range(5):  # the scenes and the chip: same transform, same caption, a new display
            params, seed = shown.augmentation(i)
            assert ({**params, **NO_DISPLAY}, seed) == plain.augmentation(i)
            assert shown.caption(i) == plain.caption(i) and shown.item_truth(i) == plain.item_truth(i)
            expected = plain.image(i).pow(params["gamma"]).mul(params["gain"]).clamp(0, 1)
            assert torch.allclose(shown.image(i), expected)
            redisplayed += params["gamma"] != 1
        assert shown[5][0].equal(plain[5][0])  # the csv image: served as it is
    assert 6 <= redisplayed <= 24  # half of 30, give or take


@pytest.mark.parametrize("memo_size", [3, ManifestDataset.MEMO_SIZE])
def test_written_captions_are_kept_per_epoch_in_a_bounded_memo(tmp_path, monkeypatch, memo_size):
    manifest = augment_set(tmp_path)
    monkeypatch.setattr(ManifestDataset, "MEMO_SIZE", memo_size)
    dataset = ManifestDataset(manifest, fake_tokenizer, 32, split=None, seed=3, augment=True)
    for dataset.epoch in range(4):
        fresh = ManifestDataset(manifest, fake_tokenizer, 32, split=None, seed=3, augment=True)
        fresh.set_epoch(dataset.epoch)
        for i in range(6):  # scenes written anew each epoch, the chip, the csv image
            assert dataset.item_captions(i) == fresh.item_captions(i) and dataset.caption(i) == fresh.caption(i)
            assert 1 <= len(dataset.written) <= memo_size


def test_decoded_images_are_kept_within_a_byte_budget_and_served_as_copies(tmp_path, monkeypatch):
    manifest = augment_set(tmp_path)
    loads = []
    monkeypatch.setattr("dataset.load_sar_image", lambda *a, **k: loads.append(a[0]) or load_sar_image(*a, **k))
    monkeypatch.setattr(ManifestDataset, "CACHE_BYTES", 2 * 90 * 60 * 4)  # two 90 x 60 float32 scenes
    dataset = ManifestDataset(manifest, fake_tokenizer, None, split=None, seed=3, augment=True)
    for _ in range(2):
        dataset.decoded(0).fill_(0.0)  # the caller's copy, decoded, then kept
    assert dataset.decoded(0).max() == 1.0 and len(loads) == 1  # the kept pixels stay as decoded
    dataset.decoded(1)
    dataset.decoded(0)
    dataset.decoded(2)  # a third scene: the least recently used, 1, goes
    kept = [dataset.entries[i]["image"] for i in (0, 2)]
    assert list(dataset.cache) == kept and dataset.cached_bytes == 2 * 90 * 60 * 4 and len(loads) == 3
    fresh = ManifestDataset(manifest, fake_tokenizer, None, split=None, seed=3, augment=True)
    fresh.CACHE_BYTES = 0  # decodes every time
    for dataset.epoch in range(3):  # served from kept pixels, items are what a fresh decode gives
        fresh.set_epoch(dataset.epoch)
        assert all(torch.equal(dataset[i][0], fresh[i][0]) for i in (0, 2))
    assert not fresh.cache and len(loads) == 3 + 6
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: "a DataLoader worker")
    worker = ManifestDataset(manifest, fake_tokenizer, None, split=None)
    worker.decoded(0)
    assert not worker.cache  # a worker is made anew each epoch: it keeps nothing


def test_a_manifest_listed_twice_is_served_twice_and_decoded_once(tmp_path, monkeypatch):
    manifest = augment_set(tmp_path)
    loads = []
    monkeypatch.setattr("dataset.load_sar_image", lambda *a, **k: loads.append(a[0]) or load_sar_image(*a, **k))
    dataset = ManifestDataset([manifest, manifest], fake_tokenizer, 32, split=None, seed=3, augment=True)
    n = len(dataset) // 2
    for i in range(len(dataset)):
        dataset[i]
    assert len(loads) == n and sorted(loads) == sorted(e["image"] for e in dataset.entries[:n])
    # each copy draws its own flips, turns and crop: the two copies of a scene are not served alike
    scenes = [i for i in range(n) if dataset.augmentation(i) is not None and not dataset.entries[i].get("chip")]
    assert len(scenes) == 4 and any(dataset.augmentation(i)[0] != dataset.augmentation(i + n)[0] for i in scenes)


def test_both_styles_add_the_simple_template_as_one_more_caption(tmp_path):
    manifest = augment_set(tmp_path)  # four scenes with five D2C captions each, a chip, a csv image
    for augment in (False, True):
        both = ManifestDataset(manifest, fake_tokenizer, 32, split=None, seed=3, caption_style="both", augment=augment)
        served_simple = 0
        for both.epoch in range(30):
            for i in range(5):  # the scenes and the chip
                captions, counts = both.item_captions(i), both.item_counts(i)
                assert len(captions) == (2 if augment else 6)  # augmented: the one diverse caption D2C wrote
                assert captions[-1] == d2c.simple_sentence(counts)  # "a SAR image of two ships."
                assert both.caption(i) in captions
                served_simple += both.caption(i) == captions[-1]
            assert both.item_captions(5) == ["a ship in the upper-left"]  # csv captions: as they are, no template
        assert 10 <= served_simple <= 40  # one caption in six: 25 of 150 expected


def test_an_augmented_stand_in_brings_its_own_caption(tmp_path):
    manifest = augment_set(tmp_path)
    (tmp_path / "s" / "JPEGImages" / "0.png").write_bytes(b"not a png")
    dataset = ManifestDataset(manifest, fake_tokenizer, 32, split=None, augment=True, return_index=True,
                              replace_unreadable=True)
    image, tokens, served = dataset[0]
    assert served != 0 and torch.equal(tokens, fake_tokenizer([dataset.caption(served)])[0])
    assert torch.equal(image, dataset.image(served))


def test_augmented_captions_fit_the_tokenizer_whole(tmp_path):
    """With a sarclip.Tokenizer, D2C writes each augmented caption to its context length (none is cut),
    stating every count served; the stored captions, written for 77 tokens, would be cut."""
    manifest = augment_set(tmp_path)
    stored = [c for e in ManifestDataset(manifest, fake_tokenizer, None, split=None).entries for c in e["captions"]]
    tokenizer = Tokenizer.train(stored, vocab_size=600, context_length=14)
    assert not all(tokenizer.fits(c) for c in stored)
    dataset = ManifestDataset(manifest, tokenizer, 32, split=None, seed=1, augment=True)
    for dataset.epoch in range(4):
        for i in range(5):  # the scenes and the chip
            assert all(tokenizer.fits(c) for c in dataset.item_captions(i))
            caption, tokens = dataset.caption(i), dataset[i][1]
            assert tokenizer.decode(tokens).replace(" ", "") == caption.lower().replace(" ", "")  # read whole
            assert [(c.category, c.n) for c in counterfactuals.read_counts(caption, dataset.item_counts(i))] \
                == list(dataset.item_counts(i).items())


# ---- real SAR data (../shared) -------------------------------------------------------------------------------

def test_real_ssdd_augmented_captions_state_the_counts_served(shared, tmp_path):
    root = shared / "sar" / "ssdd_train"
    build_manifest([f"voc:{root}"], tmp_path / "ssdd.jsonl", verbose=False)
    dataset = ManifestDataset(tmp_path / "ssdd.jsonl", fake_tokenizer, 64, split=None, augment=True)
    fewer = 0
    for i in range(0, len(dataset), 5):
        counts, caption = dataset.item_counts(i), dataset.caption(i)
        assert [(c.category, c.n) for c in counterfactuals.read_counts(caption, counts)] == list(counts.items())
        assert set(counts) == set(dataset.counts[i]) and counts.get("ship", 0) <= dataset.counts[i].get("ship", 0)
        fewer += counts != dataset.counts[i]
    assert fewer > 5  # some crops left ships out, and said so
