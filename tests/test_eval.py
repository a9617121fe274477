"""Tests for eval.py: counting prompts, then all five tasks end to end on synthetic SAR data with a
tiny random model, then the errors bad input must raise (the metrics and their table: test_metrics.py)."""
import json
import shutil
from dataclasses import asdict

import pytest
import torch

import chips
import data
import metrics
import rasters
import synthetic as synthetic_module
from synthetic import make_synthetic
import eval as evaluation
from anyreader import AnyReader
from sarclip import CLIP, CLIPConfig, Tokenizer


# ----------------------------------------------------------------------------- counting prompts

def test_count_prompts_read_like_d2c_captions():
    assert evaluation.count_prompt(1, "ship") == "a SAR image of one ship."
    assert evaluation.count_prompt(3, "ship") == "a SAR image of three ships."
    assert evaluation.count_prompt(10, "T72") == "a SAR image of ten T72s."


# ----------------------------------------------------------------------------- end to end on synthetic SAR

# A CLIP small enough to evaluate in a second or two: width 16, one layer a tower, 32-px images.
TINY = dict(embed_dim=16, image_size=32, patch_size=8, in_channels=1, vision_width=16, vision_layers=1,
            vision_heads=2, context_length=32, text_width=16, text_layers=1, text_heads=2)
EVAL_KEYS = {"retrieval": {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean_recall",
                           "chance_mean_recall"},
             "zero_shot": {"top1", "chance"}, "linear_probe": {"top1"},
             "counting": {"accuracy", "within1", "mae", "chance", "chance_within1", "constant", "constant_within1"}}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic SAR set: 40 scenes, 6 chip classes of 10, 6 counting images per number."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), n_scenes=40, chips_per_class=10,
                          images_per_count=6)


def save_run(folder, synthetic, seed=0, **args):
    """A train.py-style run folder holding a random tiny model: ckpt.pt + tokenizer.json."""
    folder.mkdir(parents=True, exist_ok=True)
    captions = [c for e in data.read_manifest(synthetic["scenes"]) for c in e["captions"]]
    tokenizer = Tokenizer.train(captions, vocab_size=600, context_length=TINY["context_length"])
    cfg = CLIPConfig(**TINY, vocab_size=tokenizer.vocab_size)
    torch.manual_seed(seed)
    model = CLIP(cfg)
    tokenizer.save(folder / "tokenizer.json")
    args = {"init": "scratch", "anyreader": False, "max_tiles": 4, "data": [str(synthetic["scenes"])],
            "seed": seed, **args}
    state = model.state_dict()
    if args["anyreader"]:
        reader = AnyReader(model, max_tiles=args["max_tiles"])
        with torch.no_grad():
            reader.fusion.gate.fill_(0.5)  # tiles count: a reader that is more than its global view
        state |= reader.fusion_state_dict()
    torch.save({"model": state, "config": asdict(cfg), "tokenizer": "tokenizer.json", "args": args},
               folder / "ckpt.pt")
    return folder / "ckpt.pt", model


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic):
    """A run that started from a 'CLIP' checkpoint (another random tiny model), so both baselines apply."""
    folder = tmp_path_factory.mktemp("run")
    init, _ = save_run(folder / "clip", synthetic, seed=1)
    init_weights = folder / "clip.pt"
    torch.save(torch.load(init, weights_only=True)["model"], init_weights)  # a plain state dict, as OpenAI's
    ckpt, _ = save_run(folder, synthetic, init=str(init_weights))
    return ckpt


def test_all_five_tasks_end_to_end(run, synthetic, tmp_path, capsys):
    out = tmp_path / "eval"
    report = evaluation.main(["--checkpoint", str(run), "--data", str(synthetic["scenes"]),
                              "--counting", str(synthetic["count"]), "--chips", str(synthetic["chips"]),
                              "--out", str(out)])
    written = json.loads((out / "eval.json").read_text())
    assert written["few_shot"] == report["few_shot"]
    assert (out / "zero_shot_confusion.png").is_file() and (out / "few_shot.png").is_file()
    assert set(written["baselines"]) == {"untrained", "init", "pixels", "cfar"}
    assert set(written["baselines"]["pixels"]) == {"few_shot", "linear_probe"}  # the chips' pixels: probes only
    # The CFAR detector counts only; the synthetic count set is all test, so it was fitted on the scenes'
    # training images of 1-10 targets of one category.
    counted = written["baselines"]["cfar"]["counting"]
    assert set(written["baselines"]["cfar"]) == {"counting"} and counted["images"] == written["counting"]["images"]
    fit_on = data.sarcount_split(evaluation.train_entries([synthetic["scenes"]]))[0]
    categories = {p["category"] for p in counted["predictions"]}
    assert set(counted["fitted_on"]) <= categories | {"all"} and set(counted["settings"]) == set(counted["fitted_on"])
    for category, n in counted["fitted_on"].items():  # each category's own training images, else all of them
        own = [e for e in fit_on if next(iter(e["counts"])) == category]
        assert n == min(len(own or fit_on), 300) > 0
    assert counted["accuracy"] == pytest.approx(100 * sum(p["predicted"] == p["true"] for p in counted["predictions"])
                                                / counted["images"])
    for results in (written, written["baselines"]["untrained"], written["baselines"]["init"]):
        for block, keys in EVAL_KEYS.items():
            assert keys <= set(results[block]), block
            assert all(0 <= results[block][k] <= 100 for k in keys if k != "mae")
        assert 0 <= results["counting"]["mae"] <= 9
        # 10 chips a class, 2 held out for test: 8 to draw from, so k = 16 cannot be run.
        assert set(results["few_shot"]) == {"1", "2", "4", "8", "16"} and results["few_shot"]["16"] is None
        assert all(0 <= v["mean"] <= 100 and v["std"] >= 0 for k, v in results["few_shot"].items() if k != "16")
    assert written["zero_shot"]["chance"] == pytest.approx(100 / 6)  # six chip classes
    assert written["counting"]["chance"] == pytest.approx(10)
    assert "counting by true count" in capsys.readouterr().out


def test_cfar_needs_training_images(run, synthetic, tmp_path, capsys):
    # The count set alone is all test: no image to fit the detector's setting on, so it is skipped, said so.
    report = evaluation.main(["--checkpoint", str(run), "--data", str(synthetic["count"]), "--tasks", "counting",
                              "--baselines", "cfar", "--out", str(tmp_path)])
    assert report["baselines"] == {} and "cfar: skipped" in capsys.readouterr().err


def test_cfar_is_never_fitted_on_a_tested_image(run, synthetic, tmp_path):
    # A count set whose train split repeats its test images: those are left out, so the scenes' train split
    # (the data's) is what the detector is fitted on.
    rows = data.read_manifest(synthetic["count"])
    both = tmp_path / "count_twice.jsonl"
    both.write_text("".join(json.dumps({**row, "image": str(row["image"]), "split": split}) + "\n"
                            for split in ("test", "train") for row in rows))
    args = evaluation.parse_args(["--checkpoint", str(run), "--data", str(synthetic["scenes"]), "--counting", str(both),
                                  "--tasks", "counting"])
    sets = evaluation.prepare_sets(args, {"args": {}})
    tested = {str(e["image"]) for e in sets["counting"]}
    assert len(tested) == len(rows) and sets["counting_train"]
    assert not tested & {str(e["image"]) for e in sets["counting_train"]}
    assert {e["split"] for e in sets["counting_train"]} == {"train"}


def test_counting_keeps_every_prediction(run, synthetic, tmp_path):
    out = tmp_path / "eval"
    evaluation.main(["--checkpoint", str(run), "--counting", str(synthetic["count"]), "--tasks", "counting",
                     "--baselines", "untrained", "--out", str(out)])
    assert (out / "counting_confusion.png").is_file()
    written = json.loads((out / "eval.json").read_text())
    entries = data.sarcount_entries(evaluation.held_out_entries([synthetic["count"]]))
    for counting in (written["counting"], written["baselines"]["untrained"]["counting"]):
        predictions = counting["predictions"]
        assert [p["image"] for p in predictions] == [str(e["image"]) for e in entries]
        assert [{p["category"]: p["true"]} for p in predictions] == [e["counts"] for e in entries]
        assert all(p["predicted"] in evaluation.COUNTS for p in predictions)
        # The scores are those of the predictions kept: nothing else went into them.
        right = sum(p["predicted"] == p["true"] for p in predictions)
        assert counting["accuracy"] == pytest.approx(100 * right / len(predictions))
        assert sum(c["images"] for c in counting["per_count"].values()) == counting["images"] == len(entries)


def test_evaluation_is_deterministic(run, synthetic, tmp_path):
    common = ["--checkpoint", str(run), "--data", str(synthetic["scenes"]), "--chips", str(synthetic["chips"]),
              "--tasks", "retrieval", "few-shot", "--baselines", "untrained"]
    first = evaluation.main(common + ["--out", str(tmp_path / "a")])
    second = evaluation.main(common + ["--out", str(tmp_path / "b")])
    for report in (first, second):
        report.pop("seconds")
    assert first == second


def test_display_shows_every_image_as_another_release_might(run, synthetic, capsys, monkeypatch):
    model, _, _ = evaluation.load_checkpoint(run)
    paths = [entry["image"] for entry in evaluation.held_out_entries([synthetic["scenes"]])[:5]]
    side = 4 * model.cfg.image_size  # what encode_images decodes
    by_hand = [rasters.redisplay(evaluation.load_image(p, 1, side), 2.0, 0.5) for p in paths]  # 0.5 x^2
    assert torch.equal(evaluation.encode_images(model, paths, display=(2.0, 0.5, False)),
                       evaluation.encode_images(model, by_hand))
    in_db = [rasters.redisplay(evaluation.load_image(p, 1, side), 1.0, 1.0, db=True) for p in paths]
    assert torch.equal(evaluation.encode_images(model, paths, display=(1.0, 1.0, True)),
                       evaluation.encode_images(model, in_db))
    assert not torch.allclose(evaluation.encode_images(model, paths), evaluation.encode_images(model, by_hand))
    loaded, shown = [], []  # every image any task loads, for every model, is shown with the display
    monkeypatch.setattr(evaluation, "load_image", lambda *a, _load=evaluation.load_image: loaded.append(a) or _load(*a))
    monkeypatch.setattr(rasters, "redisplay", lambda image, *d, _show=rasters.redisplay: shown.append(d) or _show(image, *d))
    evaluation.main(["--checkpoint", str(run), "--data", str(synthetic["scenes"]), "--counting",
                     str(synthetic["count"]), "--chips", str(synthetic["chips"]), "--display", "2", "0.5",
                     "--baselines", "untrained", "init"])  # the pixels baseline's display: its own test
    n = len(loaded) // 3  # the checkpoint and its two baselines read the same images, all five tasks'
    assert n > 100 and loaded == loaded[:n] * 3 and len(shown) == len(loaded) and set(shown) == {(2.0, 0.5, False)}
    assert "every image shown as min(1, 0.5 x^2)" in capsys.readouterr().out
    written = json.loads((run.parent / "display_2_0.5" / "eval.json").read_text())  # eval.json as stored stays
    assert written["display"] == [2.0, 0.5, False] and set(written["baselines"]) == {"untrained", "init"}
    assert evaluation.parse_args(["--checkpoint", str(run), "--display", "db"]).display == (1.0, 1.0, True)
    for bad in (["0", "1"], ["2", "nan"]):
        with pytest.raises(SystemExit):
            evaluation.parse_args(["--checkpoint", str(run), "--display", *bad])
        assert f"gamma and gain must be positive numbers, got {bad[0]} {bad[1]}" in capsys.readouterr().err
    for bad in (["2"], ["db", "1"], ["dB1"]):
        with pytest.raises(SystemExit):
            evaluation.parse_args(["--checkpoint", str(run), "--display", *bad])
        assert f"give GAMMA GAIN (two numbers) or db, got {' '.join(bad)}" in capsys.readouterr().err


def test_pixels_baseline_probes_the_chips_own_pixels(synthetic):
    """What a chip set gives away with no model: few-shot and linear probe on each chip's pixels (here at
    16 x 16; eval.py reads them at the model's side, at most 64), its mean taken off, with the display
    eval.py shows every image in."""
    chips = evaluation.folder_chips(synthetic["chips"])
    train_items, train_labels, test_items, test_labels, classes = chips
    by_hand = [rasters.squeeze_to_square(evaluation.load_image(p, 1, 64), 16).flatten() for p in test_items]
    by_hand = torch.nn.functional.normalize(torch.stack([x - x.mean() for x in by_hand]), dim=1)
    assert torch.allclose(evaluation.pixel_features(test_items, 16), by_hand)
    shown = [rasters.squeeze_to_square(rasters.redisplay(evaluation.load_image(p, 1, 64), 2.0, 0.5), 16).flatten()
             for p in test_items]
    shown = torch.nn.functional.normalize(torch.stack([x - x.mean() for x in shown]), dim=1)
    assert torch.allclose(evaluation.pixel_features(test_items, 16, (2.0, 0.5, False)), shown)
    pixels = evaluation.pixel_baseline(chips, ["linear-probe"], 16)
    train = evaluation.pixel_features(train_items, 16)
    assert pixels["linear_probe"]["top1"] == metrics.linear_probe(train, train_labels, by_hand, test_labels)["top1"]
    assert pixels["linear_probe"]["chance"] == pytest.approx(100 / len(classes)) and "few_shot" not in pixels


def test_untrained_baseline_is_where_training_started(synthetic, tmp_path):
    ckpt, start = save_run(tmp_path, synthetic, seed=3)  # save_run seeds its model as train.py does
    _, _, info = evaluation.load_checkpoint(ckpt)
    untrained, _ = evaluation.untrained_model(info, seed=3)
    assert all(torch.equal(v, untrained.state_dict()[k]) for k, v in start.state_dict().items())


def test_default_data_is_the_synthetic_set(synthetic, tmp_path, monkeypatch):
    ckpt, _ = save_run(tmp_path / "run", synthetic, data=[])  # trained on the synthetic default
    made = []
    monkeypatch.setattr(synthetic_module, "make_synthetic", lambda out, seed=0: made.append((out, seed)) or synthetic)
    report = evaluation.main(["--checkpoint", str(ckpt), "--tasks", "retrieval", "counting", "--baselines"])
    assert made == [(synthetic_module.DEFAULT_SYNTHETIC, 0)]  # where and how train.py makes it
    assert set(report) >= {"retrieval", "counting"} and report["baselines"] == {}
    assert (tmp_path / "run" / "eval.json").is_file()  # beside the checkpoint


def test_the_word_synthetic_among_a_checkpoints_data_is_the_synthetic_set(synthetic, tmp_path, monkeypatch):
    """train.py --data synthetic real.jsonl: eval.py with no --data reads the same two (held out)."""
    other = str(synthetic["count"])  # any manifest of one's own
    ckpt, _ = save_run(tmp_path / "run", synthetic, data=["synthetic", other])
    monkeypatch.setattr(synthetic_module, "make_synthetic", lambda out, seed=0: synthetic)
    args = evaluation.parse_args(["--checkpoint", str(ckpt), "--tasks", "retrieval", "counting"])
    sets = evaluation.prepare_sets(args, evaluation.load_checkpoint(ckpt)[2])
    assert sets["retrieval"] == evaluation.held_out_entries([synthetic["scenes"], other])
    assert sets["counting"] == data.sarcount_entries(evaluation.held_out_entries([synthetic["count"]]))
    assert evaluation.describe(sets).endswith(f"counting: {len(sets['counting'])} images")  # none left out


def test_testing_on_images_the_checkpoint_trained_on_is_warned(synthetic, tmp_path, capsys):
    """A manifest built for evaluation (`data.py build --split test`) may hold images another manifest
    trained the checkpoint on; eval.py names them, since their scores are not held out."""
    entries = data.read_manifest(synthetic["scenes"])
    ckpt, _ = save_run(tmp_path / "run", synthetic, data=[str(synthetic["scenes"])])
    as_test = tmp_path / "all_test.jsonl"
    as_test.write_text("".join(json.dumps({**e, "split": "test"}) + "\n" for e in entries[:20]))
    args = evaluation.parse_args(["--checkpoint", str(ckpt), "--data", str(as_test), "--tasks", "retrieval"])
    sets = evaluation.prepare_sets(args, evaluation.load_checkpoint(ckpt)[2])
    trained = sorted(str(e["image"]) for e in entries[:20] if e["split"] == "train")
    assert trained and evaluation.trained_on(sets, {"args": {"data": [str(synthetic["scenes"])]}}) == trained
    args = evaluation.parse_args(["--checkpoint", str(ckpt), "--data", str(synthetic["scenes"]), "--tasks", "retrieval"])
    assert evaluation.trained_on(evaluation.prepare_sets(args, {"args": {}}), {"args": {"data": [str(synthetic["scenes"])]}}) == []
    evaluation.main(["--checkpoint", str(ckpt), "--data", str(as_test), "--tasks", "retrieval", "--baselines"])
    assert f"warning: {len(trained)} evaluated images are in the train split" in capsys.readouterr().err


def test_chips_cropped_from_manifest_boxes(run, synthetic, tmp_path):
    report = evaluation.main(["--checkpoint", str(run), "--data", str(synthetic["scenes"]),
                              "--tasks", "zero-shot", "linear-probe", "--baselines", "--out", str(tmp_path)])
    categories = {box[4] for entry in data.read_manifest(synthetic["scenes"]) for box in entry["boxes"]}
    assert set(report["zero_shot"]["per_class"]) == categories  # one class per box category


def test_zero_shot_on_ones_own_image(run, synthetic, capsys):
    image = next((synthetic["chips"] / "ship").iterdir())
    probabilities = evaluation.main(["zero-shot", "--checkpoint", str(run), "--image", str(image),
                                     "--labels", "ship, aircraft,bridge"])
    assert list(probabilities) == ["ship", "aircraft", "bridge"]
    assert sum(probabilities.values()) == pytest.approx(1)
    assert "ship" in capsys.readouterr().out


def test_anyreader_checkpoint_reads_images_through_its_tiles(synthetic, tmp_path):
    ckpt, _ = save_run(tmp_path / "run", synthetic, anyreader=True, max_tiles=4)
    model, tokenizer, info = evaluation.load_checkpoint(ckpt)
    assert info["reader"].fusion.gate.item() == 0.5  # the trained fusion, not a fresh one
    entries = evaluation.held_out_entries([synthetic["scenes"]])
    through_tiles = evaluation.encode_images(model, [e["image"] for e in entries], info["reader"])
    resized = evaluation.encode_images(model, [e["image"] for e in entries])
    assert through_tiles.shape == resized.shape and not torch.allclose(through_tiles, resized)
    report = evaluation.main(["--checkpoint", str(ckpt), "--data", str(synthetic["scenes"]),
                              "--counting", str(synthetic["count"]), "--tasks", "retrieval", "counting"])
    assert set(report["baselines"]["untrained"]) == {"retrieval", "counting"}


def test_mstar_chips_zero_and_few_shot(run, shared, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("T72 T72 tank\nT62 T62 tank\nD7 D7 bulldozer\n")
    report = evaluation.main(["--checkpoint", str(run), "--chips", str(shared / "sar/mstar_chips_17deg"),
                              "--class-names", str(names), "--max-per-class", "10", "--tasks", "zero-shot",
                              "few-shot", "--baselines", "--out", str(tmp_path)])
    assert len(report["zero_shot"]["per_class"]) == 10 and "T72 tank" in report["zero_shot"]["per_class"]
    assert report["zero_shot"]["chance"] == 10
    assert report["few_shot"]["8"] is not None and report["few_shot"]["16"] is None  # 10 training chips a class


# ----------------------------------------------------------------------------- bad input

def test_anyreader_checkpoint_without_its_weights_is_refused(synthetic, tmp_path):
    ckpt, model = save_run(tmp_path, synthetic)
    saved = torch.load(ckpt, weights_only=True)
    saved["args"]["anyreader"] = True  # says AnyReader read the images, but holds no 'anyreader.' weights
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match="AnyReader"):
        evaluation.load_checkpoint(ckpt)


def test_checkpoint_without_tokenizer_is_refused(run, tmp_path):
    ckpt = torch.load(run, weights_only=True)
    del ckpt["tokenizer"]
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="names no tokenizer"):
        evaluation.load_checkpoint(tmp_path / "ckpt.pt")


def test_missing_tokenizer_file_is_named(run, tmp_path):
    torch.save(torch.load(run, weights_only=True), tmp_path / "ckpt.pt")  # tokenizer.json left behind
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        evaluation.load_checkpoint(tmp_path / "ckpt.pt")


def test_empty_class_folder_is_named(tmp_path, synthetic):
    for name in ("ship", "tank"):
        (tmp_path / name).mkdir()
    (tmp_path / "ship" / "a.png").write_bytes((synthetic["chips"] / "ship" / "00000.png").read_bytes())
    with pytest.raises(ValueError, match="tank: class folder has no images"):
        chips.read_chip_folder(tmp_path)


def test_separate_train_and_test_chip_folders(tmp_path, synthetic):
    for split, classes in (("train", ("ship", "tank")), ("test", ("ship",))):
        for name in classes:
            shutil.copytree(synthetic["chips"] / name, tmp_path / split / name)
    train, train_labels, test, test_labels, phrases = evaluation.folder_chips(tmp_path / "train", tmp_path / "test")
    assert phrases == ["ship", "tank"] and len(train) == 20 and train_labels.tolist() == [0] * 10 + [1] * 10
    assert len(test) == 10 and test_labels.tolist() == [0] * 10  # the test set's ship is the training set's class 0
    shutil.copytree(synthetic["chips"] / "car", tmp_path / "test" / "car")
    with pytest.raises(ValueError, match=r"classes \['car'\] have no training folder"):
        evaluation.folder_chips(tmp_path / "train", tmp_path / "test")


def test_label_that_tokenizes_to_nothing_is_named(run):
    model, tokenizer, _ = evaluation.load_checkpoint(run)
    with pytest.raises(ValueError, match="label ' ' tokenizes to nothing"):
        evaluation.zero_shot_classifier(model, tokenizer, ["ship", " "])


def test_empty_label_on_the_command_line(run, synthetic):
    image = next((synthetic["chips"] / "ship").iterdir())
    with pytest.raises(ValueError, match="non-empty names"):
        evaluation.main(["zero-shot", "--checkpoint", str(run), "--image", str(image), "--labels", "ship,,bridge"])


def test_unreadable_image_is_named(run, tmp_path):
    bad = tmp_path / "scene.tif"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="scene.tif"):
        evaluation.main(["zero-shot", "--checkpoint", str(run), "--image", str(bad), "--labels", "ship,aircraft"])
