"""Evaluate SARCLIP on the paper's five downstream tasks: `python eval.py --checkpoint out/ckpt.pt`.

1. image-text retrieval      image->text and text->image R@1/5/10 and their mean (mean recall)
2. zero-shot classification  class names in SAR prompt templates; top-1, per class, confusion matrix
3. few-shot classification   k = 1..16 images per class, logistic regression on frozen features
4. linear probing            logistic regression on all training features, weight decay from validation
5. object counting           SARCount: "a SAR image of {n} ships" for n = 1..10, the model picks n;
                             per true count, beside a uniform guess, the best constant count and
                             a classical CFAR detector (cfar.py) fitted on the training images

    python eval.py --checkpoint out/ckpt.pt           # all five, on the held-out part of the run's data
    python eval.py --checkpoint out/ckpt.pt --chips-train mstar/17deg --chips-test mstar/15deg \
                   --class-names mstar_names.txt --tasks zero-shot few-shot linear-probe
    python eval.py zero-shot --checkpoint out/ckpt.pt --image scene.tif --labels "ship,aircraft,bridge"

Read top to bottom: prompts, checkpoints, features, the three tasks that read text, data plumbing,
then `evaluate` and `main`; the metric cores (pure tensor functions, tested on hand-made embeddings)
and the table and plots that show them are in metrics.py. Every number is a percentage, except counting's mean absolute
error, which is in objects. Beside the checkpoint sit an untrained model of the same size and, when
train.py started from CLIP (--init), that CLIP: the paper's "SARCLIP versus CLIP" in one command.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import cfar
import d2c
import data
import rasters
import synthetic
from anyreader import AnyReader, largest_useful_side
from chips import read_chip_folder, read_class_names
from metrics import (COUNTS, category_of, chance_level, classification_metrics, counting_report, few_shot,
                     format_counting, format_table, held_out, linear_probe, plot_confusion, plot_few_shot,
                     retrieval_metrics)
from sarclip import CLIP, OPENAI_PIXEL_MEAN, OPENAI_PIXEL_STD, CLIPConfig, Tokenizer, load_clip

# Zero-shot prompts: SAR words around the class name with its article ("a ship", "an aircraft", as D2C
# writes them); their embeddings are averaged per class (prompt ensembling, as CLIP does), so no single
# phrasing decides the class.
TEMPLATES = (
    "a SAR image of {}.",
    "a synthetic aperture radar image of {}.",
    "a radar image showing {}.",
    "a SAR image showing {}.",
    "a SAR scene with {}.",
    "a SAR image chip of {}.",
    "a high-resolution SAR image of {}.",
    "a radar scene of {}.",
)


# ----------------------------------------------------------------------------- checkpoints

def load_checkpoint(path):
    """(model, tokenizer, info) from a train.py ckpt.pt; info: path, config, args, reader (AnyReader or None)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path}: not a train.py checkpoint (expected a dict with 'model' and 'config')")
    if not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{path}: has no 'config' entry (the CLIPConfig fields train.py saves)")
    if not ckpt.get("tokenizer"):
        raise ValueError(f"{path}: names no tokenizer; train.py saves 'tokenizer' (e.g. 'tokenizer.json'), "
                         "and text cannot be read without the vocabulary the model was trained with")
    tokenizer_path = path.parent / ckpt["tokenizer"]
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{path}: its tokenizer {tokenizer_path} is missing "
                                "(train.py writes it beside the checkpoint; keep the two together)")
    model = load_clip(ckpt).eval()
    tokenizer = Tokenizer.load(tokenizer_path)
    check_tokenizer(tokenizer, model.cfg, str(tokenizer_path))
    args = ckpt.get("args") or {}
    reader = load_reader(model, ckpt["model"], args, str(path)) if args.get("anyreader") else None
    return model, tokenizer, {"path": path, "config": ckpt["config"], "args": args, "reader": reader}


def check_tokenizer(tokenizer, cfg, name):
    """The tokenizer must write ids the model has embeddings for, in rows as long as its context."""
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ValueError(f"{name}: {tokenizer.vocab_size} ids, but the model embeds {cfg.vocab_size}")
    if tokenizer.context_length != cfg.context_length:
        raise ValueError(f"{name}: {tokenizer.context_length} tokens a row, the model reads {cfg.context_length}")


def load_reader(model, state_dict, args, name):
    """The AnyReader train.py trained beside CLIP, its fusion weights read from the 'anyreader.' keys."""
    reader = AnyReader(model, max_tiles=args.get("max_tiles", 4), fusion=args.get("fusion", "attention"))
    return reader.load_fusion_state_dict(state_dict, name).eval()


# ----------------------------------------------------------------------------- features

def load_image(item, channels, max_side=None):
    """An image item -> [channels, H, W] in [0, 1]: a tensor (as it is), a path, or (path, box) for a target chip."""
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (str, Path)):
        return rasters.load_sar_image(item, channels, max_side=max_side)  # shrunk on load: bounded memory
    path, box = item
    return crop(rasters.load_sar_image(path, channels), box)  # full resolution: boxes are in its pixels


def crop(image, box, context=0.25):
    """The box with a margin of `context` times its size on every side (targets need their surroundings)."""
    _, H, W = image.shape
    x0, y0, x1, y1 = box[:4]
    dx, dy = context * (x1 - x0), context * (y1 - y0)
    x0, y0 = max(0, int(x0 - dx)), max(0, int(y0 - dy))
    x1, y1 = min(W, math.ceil(x1 + dx)), min(H, math.ceil(y1 + dy))
    return image[:, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]


@torch.no_grad()
def encode_images(model, images, reader=None, batch_size=64, display=None):
    """L2-normalised features [N, embed_dim] of N image items, loaded a batch at a time.

    Through AnyReader when given (any size: tiles plus a global view); otherwise each image is
    squeezed whole into the model's native square, as train.py's dataset feeds it, but decoded at up
    to 4x that side where training decodes at up to 2x (ManifestDataset.max_side, for loading speed):
    on the held-out SSDD scenes the two differ by 0.005 of the pixel range on average, and reading
    them at 2x moved the README recipe's seed 0 scores by about one image (counting 53.5 / 1.26
    against 54.7 / 1.22, retrieval 14.7 against 14.8).
    display=(gamma, gain, db) shows every image as rasters.redisplay does, as an 8-bit release stored
    otherwise might; it is applied after the shrink to max_side, as a release shrunk on reading would
    be (squaring first would keep a small bright target brighter). --display-augment in training
    applies it later still, at the model's size, so a dB stretch's percentiles there come from fewer
    pixels.
    """
    cfg, device = model.cfg, next(model.parameters()).device
    # Decode no more pixels than the encoder can use: 4x its side is plenty for an antialiased shrink.
    max_side = largest_useful_side(cfg.image_size, reader.max_tiles) if reader is not None else 4 * cfg.image_size
    features = []
    for start in range(0, len(images), batch_size):
        batch = [load_image(item, cfg.in_channels, max_side).to(device)
                 for item in images[start:start + batch_size]]
        batch = [rasters.redisplay(image, *display) for image in batch] if display else batch
        if reader is not None:
            out = reader(batch)
        else:
            out = model.encode_image(torch.stack([rasters.squeeze_to_square(image, cfg.image_size) for image in batch]))
        features.append(F.normalize(out.float(), dim=-1).cpu())
    return torch.cat(features) if features else torch.empty(0, cfg.embed_dim)


@torch.no_grad()
def encode_texts(model, tokenizer, texts, batch_size=256):
    """L2-normalised features [M, embed_dim] of M texts."""
    device = next(model.parameters()).device
    features = [model.encode_text(tokenizer(texts[i:i + batch_size]).to(device)).float()
                for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(features), dim=-1).cpu() if features else torch.empty(0, model.cfg.embed_dim)


# ----------------------------------------------------------------------------- the tasks that read text

def check_labels(tokenizer, labels):
    """Raise ValueError naming a label that is empty once tokenised (a prompt would carry no class)."""
    tokens = tokenizer(list(labels))
    for label, end in zip(labels, tokens.argmax(dim=-1).tolist()):
        if end <= 1:  # end-of-text right after start-of-text: no token between
            raise ValueError(f"label {label!r} tokenizes to nothing; give each class a name in words")


def zero_shot_classifier(model, tokenizer, labels, templates=TEMPLATES):
    """[C, embed_dim]: each label's prompts embedded, averaged over the templates, renormalised."""
    check_labels(tokenizer, labels)
    texts = [template.format(f"{d2c.article(label)} {label}") for label in labels for template in templates]
    features = encode_texts(model, tokenizer, texts).view(len(labels), len(templates), -1)
    return F.normalize(features.mean(dim=1), dim=-1)  # the mean of unit vectors is shorter than one


def zero_shot(model, tokenizer, image_features, labels, class_names):
    """Zero-shot top-1, per-class accuracy and confusion: each image takes its most similar class prompt."""
    classifier = zero_shot_classifier(model, tokenizer, class_names)
    predictions = (image_features @ classifier.t()).argmax(dim=1)
    return classification_metrics(predictions, labels, len(class_names))


def count_prompt(n, category):
    """"a SAR image of three ships.": D2C's number words and plurals, so prompts read like training captions."""
    return f"a SAR image of {d2c.count_word(n)} {d2c.plural(category, n)}."


def counting(model, tokenizer, entries, reader=None, batch_size=64, display=None):
    """SARCount: each image (1-10 targets of one class) picks the best of ten prompts, one per number.

    The prompts differ only in the number ("a SAR image of {n} ships."), so only the model's sense of
    how many targets it sees can choose between them. Returns metrics.counting_report(entries, answers):
    counting_metrics' scores and "predictions", one {"image", "category", "true", "predicted"} per image.
    """
    categories = sorted({category_of(entry) for entry in entries})
    prompts = [count_prompt(n, category) for category in categories for n in COUNTS]
    text = encode_texts(model, tokenizer, prompts).view(len(categories), len(COUNTS), -1)  # [class, number, D]
    image = encode_images(model, [entry["image"] for entry in entries], reader, batch_size, display)  # [N, D]
    own = text[[categories.index(category_of(entry)) for entry in entries]]  # [N, number, D]
    similarity = torch.einsum("nd,nkd->nk", image, own)
    return counting_report(entries, torch.tensor(list(COUNTS))[similarity.argmax(dim=1)])


def retrieval(model, tokenizer, entries, reader=None, batch_size=64, display=None):
    """Retrieval metrics on manifest entries (dicts with 'image' and 'captions'), or a dataset holding them.

    Each distinct sentence is one caption, right for every image it was written for: D2C writes
    "a SAR image of one ship." for many images, and identical texts have identical embeddings, so
    counting only one owner would turn their ties into coin flips.
    """
    entries = getattr(entries, "entries", entries)  # a dataset.py dataset keeps its manifest entries
    captions = list(dict.fromkeys(c for entry in entries for c in entry["captions"]))  # distinct, in order
    index = {caption: j for j, caption in enumerate(captions)}
    positives = torch.zeros(len(entries), len(captions), dtype=torch.bool)
    for i, entry in enumerate(entries):
        positives[i, [index[c] for c in entry["captions"]]] = True
    image = encode_images(model, [entry["image"] for entry in entries], reader, batch_size, display)
    return retrieval_metrics(image, encode_texts(model, tokenizer, captions), positives)


# ----------------------------------------------------------------------------- data plumbing

def cap_per_class(items, labels, limit):
    """The first `limit` items of each class (all when limit is None), order kept."""
    if limit is None:
        return items, labels
    keep = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        keep[(labels == c).nonzero()[:limit, 0]] = True
    return [item for item, k in zip(items, keep.tolist()) if k], labels[keep]


def folder_chips(train_dir, test_dir=None, class_names_file=None):
    """(train items, train labels, test items, test labels, class phrases) from chip folders.

    With one folder, every 5th image of each class (in file-name order) is the test split: a rule that
    never moves, whatever the seed. MSTAR's protocol has two folders: 17 degrees train, 15 degrees test.
    """
    paths, labels, folders = read_chip_folder(train_dir, names_file=class_names_file)
    if test_dir is None:
        test = held_out(labels)
        train_items, test_items = [p for p, t in zip(paths, test) if not t], [p for p, t in zip(paths, test) if t]
        train_labels, test_labels = labels[~test], labels[test]
    else:
        train_items, train_labels = paths, labels
        test_items, test_labels, _ = read_chip_folder(test_dir, folders, class_names_file)
    return train_items, train_labels, test_items, test_labels, read_class_names(class_names_file, folders)


def manifest_chips(train_entries, test_entries):
    """Target chips cropped from the boxes of manifest entries: (items, labels, items, labels, classes)."""
    classes = sorted({box[4] for entry in train_entries + test_entries for box in entry["boxes"]})

    def chips(entries):
        items = [(entry["image"], box) for entry in entries for box in entry["boxes"]]
        return items, torch.tensor([classes.index(box[4]) for _, box in items], dtype=torch.long)
    return (*chips(train_entries), *chips(test_entries), classes)


def train_entries(manifests):
    """Every manifest's train split."""
    return [row for path in manifests for row in data.read_manifest(path) if row["split"] == "train"]


def held_out_entries(manifests):
    """Every manifest's test split, or its val split when it has no test split."""
    entries = []
    for path in manifests:
        rows = data.read_manifest(path)
        splits = {row["split"] for row in rows}
        split = "test" if "test" in splits else "val" if "val" in splits else None
        if split is None:
            raise ValueError(f"{path}: has no 'test' or 'val' split to evaluate on")
        entries += [row for row in rows if row["split"] == split]
    return entries


def prepare_sets(args, info):
    """The evaluation data each task needs, read once for all models: entries for retrieval and
    counting, chips for the three classification tasks.

    Flags first; else the manifests the checkpoint was trained on (their held-out split); else the
    synthetic default set, made on first use exactly as train.py makes it. The word synthetic stands
    for that set among manifests too, as in train.py --data; with it, counting and the chip tasks use
    the synthetic set's own (unless --counting or --chips say otherwise).
    """
    manifests = args.data or info["args"].get("data") or ["synthetic"]
    synthetic_set = synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC) if "synthetic" in manifests else None
    manifests = [synthetic_set["scenes"] if path == "synthetic" else path for path in manifests]
    for path in [*manifests, *(args.counting or [])]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such manifest (give the evaluation data with --data)")
    tasks, sets = set(args.tasks), {}
    if "retrieval" in tasks:
        sets["retrieval"] = held_out_entries(manifests)
    if "counting" in tasks:
        counting_manifests = args.counting or ([synthetic_set["count"]] if synthetic_set else manifests)
        sets["counting"], sets["counting_left_out"] = data.sarcount_split(held_out_entries(counting_manifests),
                                                                         max(COUNTS))
        # The CFAR baseline is fitted on training images: the counting manifests', else those of the data
        # (the synthetic count set is all test; its scenes' train split holds images of 1-10 targets too),
        # never on an image it is tested on (a count set built with --split test over training scenes).
        tested = {str(entry["image"]) for entry in sets["counting"]}

        def untested(paths):  # the SARCount images of their train split that are not also tested
            return [e for e in data.sarcount_split(train_entries(paths))[0] if str(e["image"]) not in tested]
        sets["counting_train"] = untested(counting_manifests) or untested(manifests)
    if tasks & {"zero-shot", "few-shot", "linear-probe"}:
        sets["chips"] = chip_sets(args, manifests, synthetic_set)
    return sets


def chip_sets(args, manifests, synthetic_set):
    """(train items, train labels, test items, test labels, class phrases): folders, else manifest boxes."""
    if args.chips or args.chips_train:
        chips = folder_chips(args.chips or args.chips_train, args.chips_test, args.class_names)
    elif synthetic_set:
        chips = folder_chips(synthetic_set["chips"], class_names_file=args.class_names)
    else:  # target chips cut from the boxes: the train split to learn from, the held-out split to test
        chips = manifest_chips(train_entries(manifests), held_out_entries(manifests))
    train_items, train_labels = cap_per_class(*chips[:2], args.max_per_class)
    test_items, test_labels = cap_per_class(*chips[2:4], args.max_per_class)
    return train_items, train_labels, test_items, test_labels, chips[4]


def trained_on(sets, info):
    """The evaluated images (retrieval, counting, test chips) that are in the train split of a manifest the
    checkpoint learned from (those still here): scores on them are not held out. Sorted paths."""
    trained = {Path(entry["image"]).resolve() for path in info["args"].get("data") or []
               if path != "synthetic" and Path(path).is_file()  # the synthetic set keeps its own test split
               for entry in data.read_manifest(path) if entry["split"] == "train"}
    chips_tested = sets["chips"][2] if "chips" in sets else []
    tested = [entry["image"] for entry in sets.get("retrieval", []) + sets.get("counting", [])]
    tested += [item if isinstance(item, (str, Path)) else item[0] for item in chips_tested]  # (path, box): a crop
    return sorted({str(image) for image in tested if Path(image).resolve() in trained})


def describe(sets):
    """One line on what is evaluated, so a reader knows the size of each test."""
    parts = []
    if "retrieval" in sets:
        captions = len({c for entry in sets["retrieval"] for c in entry["captions"]})
        parts.append(f"retrieval: {len(sets['retrieval'])} images, {captions} distinct captions")
    if "chips" in sets:
        train_items, _, test_items, _, classes = sets["chips"]
        parts.append(f"classification: {len(classes)} classes, "
                     f"{len(train_items)} train / {len(test_items)} test chips")
    if "counting" in sets:
        parts.append(f"counting: {len(sets['counting'])} images{data.left_out_line(sets.get('counting_left_out'))}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- evaluate, baselines, main

TASKS = ("retrieval", "zero-shot", "few-shot", "linear-probe", "counting")


def evaluate(model, tokenizer, sets, tasks=TASKS, reader=None, batch_size=64, display=None):
    """One model's results on the prepared sets: {"retrieval": {...}, "zero_shot": {...}, ...}; with
    display=(gamma, gain, db), on every image shown as rasters.redisplay does."""
    model.eval()
    results = {}
    if "retrieval" in tasks:
        results["retrieval"] = retrieval(model, tokenizer, sets["retrieval"], reader, batch_size, display)
    if {"zero-shot", "few-shot", "linear-probe"} & set(tasks):
        train_items, train_labels, test_items, test_labels, classes = sets["chips"]
        test = encode_images(model, test_items, reader, batch_size, display)  # frozen features, computed once
        if "zero-shot" in tasks:
            zero = zero_shot(model, tokenizer, test, test_labels, classes)
            results["zero_shot"] = {**zero, "per_class": dict(zip(classes, zero["per_class"]))}
        if {"few-shot", "linear-probe"} & set(tasks):
            if not train_items:
                raise ValueError("few-shot and linear probing need training chips: give --chips, --chips-train, "
                                 "or a manifest with a 'train' split")
            train = encode_images(model, train_items, reader, batch_size, display)
            results |= probes(train, train_labels, test, test_labels, tasks, len(classes))
    if "counting" in tasks:
        if sets["counting"]:
            results["counting"] = counting(model, tokenizer, sets["counting"], reader, batch_size, display)
        else:
            print("counting: skipped, no held-out image has 1-10 targets of one class", file=sys.stderr)
    return results


def probes(train, train_labels, test, test_labels, tasks, num_classes):
    """{"few_shot", "linear_probe"} (those in tasks) of logistic regressions on frozen features."""
    results = {}
    if "few-shot" in tasks:
        results["few_shot"] = few_shot(train, train_labels, test, test_labels)
    if "linear-probe" in tasks:
        results["linear_probe"] = {**linear_probe(train, train_labels, test, test_labels), "chance": 100 / num_classes}
    return results


PIXEL_SIDE = 64  # the pixels baseline reads a chip as the tiny model does; a larger model's input is
                 # read at 64 px too, which keeps the probes' features at 4,096 numbers


def pixel_features(items, side=PIXEL_SIDE, display=None):
    """[N, side ** 2]: each image read as encode_images reads it (shown with display, when given),
    squeezed to side x side, its mean taken off, unit length: features that need no model. A chip set
    whose test chips have near-twins among its training chips (the same collection, a degree of aspect
    apart) is solved by these alone."""
    rows = []
    for item in items:
        image = load_image(item, 1, 4 * side)
        image = rasters.redisplay(image, *display) if display else image
        rows.append(rasters.squeeze_to_square(image, side).flatten())
    pixels = torch.stack(rows)
    return F.normalize(pixels - pixels.mean(1, keepdim=True), dim=1)


def pixel_baseline(chips, tasks, side=PIXEL_SIDE, display=None):
    """The few-shot and linear-probe scores of the chips' own pixels (pixel_features): the "pixels" baseline."""
    train_items, train_labels, test_items, test_labels, classes = chips
    return probes(pixel_features(train_items, side, display), train_labels,
                  pixel_features(test_items, side, display), test_labels, tasks, len(classes))


def untrained_model(info, seed):
    """A model of the checkpoint's size with fresh random weights (and a fresh AnyReader when it had one).

    Built as train.py builds its model after torch.manual_seed(seed): with the run's seed, these are
    the very weights a from-scratch run started from.
    """
    with torch.random.fork_rng():  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        model = CLIP(CLIPConfig(**info["config"])).eval()
        reader = None
        if info["reader"] is not None:
            reader = AnyReader(model, info["reader"].max_tiles, fusion=info["args"].get("fusion", "attention"))
    return model, reader


def init_model(path, info, tokenizer):
    """The CLIP checkpoint train.py started from (--init), read as CLIP reads images: resized, no AnyReader."""
    path = Path(path)
    if not path.is_file() and (info["path"].parent / path).is_file():
        path = info["path"].parent / path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the starting CLIP checkpoint (--init) is not there; "
                                "give its path with --init or leave the baseline out with --baselines untrained")
    model = load_clip(path, in_channels=info["config"]["in_channels"],  # as train.py --init loads it
                      pixel_mean=OPENAI_PIXEL_MEAN, pixel_std=OPENAI_PIXEL_STD).eval()
    check_tokenizer(tokenizer, model.cfg, f"the tokenizer of {info['path']} against {path}")
    return model, None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a SARCLIP checkpoint on five tasks "
                                "(or: eval.py zero-shot --checkpoint C --image I --labels a,b,c)")
    p.add_argument("--checkpoint", required=True, help="train.py's ckpt.pt (tokenizer.json beside it)")
    p.add_argument("--data", nargs="+", help="manifests for retrieval and counting (test split, else val); "
                   "default: the checkpoint's training manifests, else the synthetic set")
    p.add_argument("--counting", nargs="+", help="SARCount manifests (data.py sarcount); default: --data")
    p.add_argument("--chips", help="folder-per-class chips, every 5th image of a class held out for test")
    p.add_argument("--chips-train", help="folder-per-class training chips (e.g. MSTAR 17 degrees)")
    p.add_argument("--chips-test", help="folder-per-class test chips (e.g. MSTAR 15 degrees)")
    p.add_argument("--class-names", help="lines 'folder phrase' naming each class for the prompts")
    p.add_argument("--max-per-class", type=int, help="use at most this many chips per class and split")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--baselines", nargs="*", default=["untrained", "init", "pixels", "cfar"],
                   choices=["untrained", "init", "pixels", "cfar"],
                   help="models beside the checkpoint ('init' only when train.py started from CLIP; 'pixels', "
                   "the chips' own pixels, for few-shot and linear probe; 'cfar', a CFAR detector for counting, fitted "
                   "on the counting manifests' train split, else the data's); none: --baselines with no names")
    p.add_argument("--init", help="the starting CLIP checkpoint, if it moved since training")
    p.add_argument("--out", help="folder for eval.json and the PNGs (default: beside the checkpoint, in "
                                 "display_GAMMA_GAIN/ or display_db/ there with --display)")
    p.add_argument("--display", nargs="+", metavar=("GAMMA|db", "GAIN"),
                   help="show every image x in [0, 1] as min(1, GAIN * x^GAMMA), as an 8-bit release stored "
                        "otherwise might (2 1: amplitude read as intensity; 16-bit and float rasters are "
                        "stretched on reading, which undoes any gamma and gain); db: in decibels, stretched "
                        "as a float raster is read (an 8-bit linear-magnitude release as its magnitudes read)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, help="seeds the untrained baseline (default: the run's seed, so it is "
                   "exactly the weights training started from)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.display:
        args.display = parse_display(p, args.display)
    if bool(args.chips_train) != bool(args.chips_test) or (args.chips and args.chips_train):
        p.error("give either --chips DIR, or both --chips-train DIR and --chips-test DIR")
    return args


def parse_display(parser, words):
    """--display's words -> rasters.redisplay's (gamma, gain, db): ["2", "1"] -> (2.0, 1.0, False), ["db"] ->
    (1.0, 1.0, True); anything else is a usage error."""
    if [word.lower() for word in words] == ["db"]:
        return 1.0, 1.0, True
    try:
        gamma, gain = map(float, words)
    except ValueError:
        parser.error(f"--display: give GAMMA GAIN (two numbers) or db, got {' '.join(words)}")
    if not all(0 < value < math.inf for value in (gamma, gain)):  # nan fails too
        parser.error(f"--display: gamma and gain must be positive numbers, got {gamma:g} {gain:g}")
    return gamma, gain, False


def main(argv=None):
    """Evaluate the checkpoint and its baselines; print the table, write eval.json and PNGs; return the report."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["zero-shot"]:
        return zero_shot_main(argv[1:])
    args = parse_args(argv)
    started = time.perf_counter()
    model, tokenizer, info = load_checkpoint(args.checkpoint)
    sets = prepare_sets(args, info)
    print(describe(sets))
    if seen := trained_on(sets, info):
        print(f"warning: {len(seen)} evaluated images are in the train split the checkpoint learned from, e.g. "
              f"{seen[0]}: their scores are not held out", file=sys.stderr)
    if args.display:
        print("every image shown in decibels, stretched as a float raster is read (--display db)" if args.display[2]
              else "every image shown as min(1, {1:g} x^{0:g}) (--display)".format(*args.display))
    models = {"checkpoint": (model, info["reader"])}
    if "untrained" in args.baselines:
        seed = info["args"].get("seed", 0) if args.seed is None else args.seed
        models["untrained"] = untrained_model(info, seed)
    start_from = args.init or info["args"].get("init", "scratch")
    if "init" in args.baselines and start_from != "scratch":
        models["init"] = init_model(start_from, info, tokenizer)
    results = {}
    for name, (clip, reader) in models.items():
        clip = clip.to(args.device)
        reader = reader.to(args.device) if reader is not None else None
        results[name] = evaluate(clip, tokenizer, sets, args.tasks, reader, args.batch_size, args.display)
    if "pixels" in args.baselines and {"few-shot", "linear-probe"} & set(args.tasks):
        side = min(model.cfg.image_size, PIXEL_SIDE)
        results["pixels"] = pixel_baseline(sets["chips"], args.tasks, side, args.display)
    if "cfar" in args.baselines and sets.get("counting"):
        if sets["counting_train"]:
            results["cfar"] = {"counting": cfar.baseline(sets["counting_train"], sets["counting"], args.display)}
        else:
            print("cfar: skipped, neither the counting manifests nor the data have a train image of 1-10 targets "
                  "of one category to fit it on", file=sys.stderr)
    seconds = time.perf_counter() - started
    baselines = {name: result for name, result in results.items() if name != "checkpoint"}
    report = {**results["checkpoint"], "baselines": baselines, "checkpoint": str(args.checkpoint),
              "data": describe(sets), "display": args.display, "seconds": seconds}
    shown = ""  # eval.json as stored stays; a display's goes in a folder of its own
    if args.display:
        shown = "display_db" if args.display[2] else "display_{:g}_{:g}".format(*args.display[:2])
    write_outputs(report, results, sets, Path(args.out or Path(args.checkpoint).parent / shown))
    print(format_table(results))
    if "counting" in report:
        print(format_counting(results))
    print(f"evaluated {len(models)} model(s) in {seconds:.1f} s")
    return report


def write_outputs(report, results, sets, out):
    """eval.json, zero_shot_confusion.png, few_shot.png and counting_confusion.png in the output folder."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    written = [out / "eval.json"]
    if "zero_shot" in report:
        plot_confusion(report["zero_shot"]["confusion"], sets["chips"][4], out / "zero_shot_confusion.png",
                       f"zero-shot top-1 {report['zero_shot']['top1']:.1f}%")
        written.append(out / "zero_shot_confusion.png")
    if "few_shot" in report:
        curves = {name: r["few_shot"] for name, r in results.items() if "few_shot" in r}
        plot_few_shot(curves, chance_level(report, "few_shot", "1"), out / "few_shot.png")
        written.append(out / "few_shot.png")
    if "counting" in report:
        counting = report["counting"]
        plot_confusion(counting["confusion"], [str(n) for n in COUNTS], out / "counting_confusion.png",
                       f"counting: {counting['accuracy']:.1f}% exact, MAE {counting['mae']:.2f} "
                       f"(always {counting['constant_count']['mae']}: {counting['constant_mae']:.2f})", what="count")
        written.append(out / "counting_confusion.png")
    print("wrote " + ", ".join(map(str, written)))


def label_probabilities(model, tokenizer, image, labels, reader=None):
    """CLIP's zero-shot prediction for one image (a path or [C, H, W]): a probability per label."""
    classifier = zero_shot_classifier(model, tokenizer, labels)
    features = encode_images(model, [image], reader)
    return (model.logit_scale.exp().item() * features @ classifier.t()).softmax(dim=-1)[0]


def zero_shot_main(argv):
    """`eval.py zero-shot --checkpoint C --image scene.tif --labels "ship,aircraft,bridge"`."""
    p = argparse.ArgumentParser(prog="eval.py zero-shot", description="label probabilities for one SAR image")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True, help="a SAR image of any size (read through AnyReader when the "
                   "checkpoint was trained with it)")
    p.add_argument("--labels", required=True, help="comma-separated class names, e.g. 'ship,aircraft,bridge'")
    args = p.parse_args(argv)
    labels = [label.strip() for label in args.labels.split(",")]
    if len(labels) < 2 or not all(labels):
        raise ValueError(f"--labels {args.labels!r}: give two or more non-empty names, separated by commas")
    model, tokenizer, info = load_checkpoint(args.checkpoint)
    probabilities = label_probabilities(model, tokenizer, args.image, labels, info["reader"])
    probabilities = dict(zip(labels, probabilities.tolist()))
    for label, p in sorted(probabilities.items(), key=lambda item: -item[1]):
        print(f"{100 * p:6.1f}%  {label}")
    return probabilities


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as error:  # bad input: one clear line, not a traceback
        sys.exit(f"eval.py: {error}")
