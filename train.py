"""Train SARCLIP: `python train.py --size tiny` (a 2-core CPU, minutes) up to ViT-L/14 on many GPUs.

Read top to bottom: arguments, the pieces the loop needs (learning-rate schedule, weight-decay groups,
feature gathering across ranks, checkpoints), then `main`: data, model, optimiser, one loop, retrieval.
Multi-GPU: `torchrun --nproc_per_node 8 train.py --size b16 --data mmsar.jsonl ...`.
"""
import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from datetime import timedelta
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn
import torch.nn.functional as F

import counterfactuals
import d2c
import data
import eval as evaluation
import synthetic
from anyreader import AnyReader, largest_useful_side
from dataset import CAPTION_STYLES, ManifestDataset, collate_keep_size
from sarclip import (CLIP, OPENAI_PIXEL_MEAN, OPENAI_PIXEL_STD, SIZES, CLIPConfig, Tokenizer, clip_loss,
                     load_clip)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="tiny", choices=list(SIZES), help="model preset from sarclip.SIZES")
    p.add_argument("--image-size", type=int, help="input side in pixels instead of the preset's (from scratch)")
    p.add_argument("--data", nargs="+", default=[],
                   help="MMSAR manifests (data.py build), and/or the word 'synthetic' for the embedded set (the default)")
    p.add_argument("--init", default="scratch",
                   help="'scratch', an OpenAI/open_clip CLIP checkpoint, or a train.py ckpt.pt to fine-tune")
    p.add_argument("--tokenizer-bpe", help="CLIP's bpe_simple_vocab_16e6.txt.gz, needed with --init of a CLIP checkpoint")
    p.add_argument("--steps", type=int, default=600, help="optimiser steps (overridden by --epochs)")
    p.add_argument("--epochs", type=float, help="train for this many passes over the data instead")
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split over the ranks")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--wd", type=float, default=0.2, help="AdamW weight decay on matrices")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--anyreader", action="store_true", help="read images at any size through AnyReader")
    p.add_argument("--max-tiles", type=int, default=4, help="AnyReader's tile budget per image")
    p.add_argument("--captions", default="diverse", choices=CAPTION_STYLES,
                   help="D2C caption style: diverse, the simple template, or both (the template one caption more)")
    p.add_argument("--dedup-targets", action=argparse.BooleanOptionalAction, default=True,
                   help="a caption also true of another image in the batch is a positive for it too")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="box-aware flips, turns and crops of scenes (chips: small crops only), each caption "
                        "rewritten by D2C to stay true")
    p.add_argument("--display-augment", action="store_true",
                   help="with --augment, show half the images with a random display gamma and gain: a model for "
                        "releases scaled unlike its training data (README: Train on real SAR)")
    p.add_argument("--count-negatives", type=int, default=1,
                   help="false-count copies of each caption, extra negatives for its own image (0: off)")
    p.add_argument("--accum-steps", type=int, default=1,
                   help="split each batch into this many micro-batches, same gradient, less memory (GradCache)")
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower, projection excepted (LiT)")
    p.add_argument("--lock-text", action="store_true", help="freeze the text tower, projection excepted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int,
                   help="data-loading processes per rank (default: 1 when a core is free beside torch's threads, else 0)")
    p.add_argument("--eval-every", type=int, default=200, help="retrieval on the held-out split every N steps")
    p.add_argument("--save-every", type=int, default=100, help="write the checkpoint every N steps")
    p.add_argument("--log-every", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--resume", help="a ckpt.pt to continue from, exactly where it stopped")
    p.add_argument("--out", default="out", help="folder for ckpt.pt, tokenizer.json, metrics.jsonl, curves.png")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "eval_every", "save_every", "max_tiles", "accum_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.count_negatives < 0:
        p.error("--count-negatives must be 0 or more")
    patch = SIZES[args.size]["patch_size"]
    if args.image_size is not None and (args.image_size < patch or args.image_size % patch):
        p.error(f"--image-size must be a multiple of the preset's patch size, {patch}")
    if args.epochs is not None and args.epochs <= 0:
        p.error("--epochs must be positive")
    return args


def learning_rate(step, total, warmup, peak):
    """Linear warm-up to the peak, then a cosine down to zero (CLIP's schedule)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(model, weight_decay):
    """Decay matrices only: gains, biases, embeddings (AnyReader's tile positions too) and the logit
    scale are exempt, as in CLIP."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:  # a locked tower (--lock-image, --lock-text) is not optimised at all
            continue
        exempt = p.ndim < 2 or "embedding" in name or "position" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def gather(features):
    """All ranks' features, concatenated, with gradients flowing back to each rank's own part.

    Every rank then sees the global batch of negatives, as one big batch on one device would. The
    gather's backward sums the (identical) global-loss gradients of all ranks, and DDP averages them,
    so each parameter receives exactly the single-device gradient.
    """
    if not dist.is_initialized():
        return features
    return torch.cat(dist_fn.all_gather(features))


def gather_values(values):
    """All ranks' values [B_local, ...] (no gradient: indices, masks), in the order gather puts features."""
    if not dist.is_initialized():
        return values
    parts = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, values)
    return torch.cat(parts)


def batch_positives(drawn, caption_sets, claims=None, truths=None):
    """[B images, B captions]: caption j is a right answer for image i if D2C wrote it for image i,
    or if its claim holds for image i (claims[j], truths[i] from ManifestDataset: caption_claim and
    item_truth; None where D2C did not write the caption or the image's captions this epoch).

    Why not just "equal drawn captions"? Two images that drew the same sentence give two identical
    text embeddings; the plain loss already cannot tell them apart, so marking them changes nothing.
    What the plain loss gets wrong is a caption drawn for one image that is just as true of another:
    "a radar scene of a ship on the right side." is true of every scene with one ship, on the right.
    """
    claims, truths = claims or [None] * len(drawn), truths or [None] * len(caption_sets)

    def right(caption, claim, captions, truth):
        return caption in captions or (claim is not None and truth is not None and d2c.claim_holds(claim, truth))
    return torch.tensor([[right(caption, claim, captions, truth) for caption, claim in zip(drawn, claims)]
                         for captions, truth in zip(caption_sets, truths)])


def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a crash mid-write never leaves a broken checkpoint."""
    tmp = Path(f"{path}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


MAX_UNREADABLE = 0.01  # a run stops when more than this fraction of its training images fail to load

# A resumed run must be the same run: these arguments shape the data, the model or the schedule.
RESUME_MUST_MATCH = ("size", "image_size", "data", "init", "batch_size", "lr", "wd", "warmup", "anyreader", "max_tiles",
                     "captions", "augment", "display_augment", "dedup_targets", "count_negatives", "accum_steps",
                     "lock_image", "lock_text", "seed", "steps", "epochs", "precision")


def read_resume(path, args):
    """The checkpoint to continue from, checked against this run's arguments before any work."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"--resume {path}: cannot read the checkpoint ({type(e).__name__}: {e})")
    missing = [k for k in ("model", "optimizer", "scaler", "step", "rng", "config", "tokenizer", "args") if k not in ckpt]
    if missing:
        raise SystemExit(f"--resume {path}: not a train.py checkpoint (no {', '.join(missing)})")
    saved = {**vars(parse_args([])), **ckpt["args"]}  # arguments newer than the checkpoint: their defaults
    differ = [f"--{k.replace('_', '-')} {saved[k]!r} there, {getattr(args, k)!r} here"
              for k in RESUME_MUST_MATCH if saved[k] != getattr(args, k)]
    if differ:
        raise SystemExit(f"--resume {path}: the checkpoint comes from a different run: " + "; ".join(differ))
    if not (Path(path).parent / ckpt["tokenizer"]).is_file():
        raise SystemExit(f"--resume {path}: its tokenizer {Path(path).parent / ckpt['tokenizer']} is missing")
    return ckpt


class Trainee(nn.Module):
    """What the optimiser trains: CLIP, plus AnyReader's fusion when AnyReader reads the images.

    locked: modules frozen by lock_towers, kept in eval mode whenever the rest trains.
    """
    TEXT_GROUPS = 4  # captions are encoded in this many groups of similar length (encode_text)

    def __init__(self, clip, reader=None, locked=()):
        super().__init__()
        self.clip, self.reader, self.locked = clip, reader, list(locked)

    def forward(self, images, tokens, counterfactual_tokens=None):
        """(image features [B, D], text features [B, D], temperature, counterfactual features [B, K, D]
        or None), all L2-normalised; counterfactual_tokens [B, K, L] are encoded with the captions."""
        image = self.clip.encode_image(images) if self.reader is None else self.reader(images)
        image, scale = F.normalize(image, dim=-1), self.clip.logit_scale.exp()
        text = F.normalize(self.encode_text(tokens), dim=-1)
        if counterfactual_tokens is None:
            return image, text, scale, None
        present = counterfactual_tokens.any(dim=-1)  # [B, K]: rows of zeros stand for no counterfactual
        extra = text.new_zeros(*present.shape, text.shape[-1])  # [B, K, D]; the loss masks the zeros out
        # With gradients, though that costs a second backward pass: the text tower must learn to tell
        # a false count from the true one, or the image is pushed away from its own caption's twin.
        extra[present] = F.normalize(self.encode_text(counterfactual_tokens[present]), dim=-1)
        return image, text, scale, extra

    def encode_text(self, tokens):
        """clip.encode_text of tokens [N, L] in TEXT_GROUPS groups of similar length: each group
        stops at its own longest caption, so short captions do not pay for the long ones' padding
        (a fifth of the text tower's work on D2C's captions). Same features, in tokens' order."""
        if len(tokens) == 0:
            return self.clip.encode_text(tokens)
        ends = tokens.argmax(dim=-1)  # [N]: end-of-text is the largest id
        order = ends.argsort(stable=True)  # shortest first
        # Causal attention: padding after a group's last end-of-text cannot change its features.
        features = torch.cat([self.clip.encode_text(tokens[group, :int(ends[group].max()) + 1])
                              for group in order.chunk(self.TEXT_GROUPS)])
        return features[order.argsort()]  # back in tokens' order

    def train(self, mode=True):
        super().train(mode)
        for module in self.locked:
            module.eval()
        return self

    def checkpoint_state(self):
        """OpenAI-layout CLIP keys, plus AnyReader's own under the prefix 'anyreader.'."""
        state = self.clip.state_dict()
        return {**state, **self.reader.fusion_state_dict()} if self.reader is not None else state


def lock_towers(clip, image=False, text=False):
    """Freeze the image and/or text tower (LiT, Zhai et al. 2022): no gradients, left out of the
    optimiser, eval mode; the projections and the temperature still learn, so the free tower learns
    to meet the locked one. Returns the locked modules."""
    locked = []
    if image:
        locked += list(clip.visual.children())
        for name, p in clip.visual.named_parameters():
            p.requires_grad_(name == "proj")
    if text:
        tower = [clip.token_embedding, clip.transformer, clip.ln_final]
        for p in [clip.positional_embedding, *(q for m in tower for q in m.parameters())]:
            p.requires_grad_(False)
        locked += tower
    return locked


def counterfactual_tokens(captions, caption_tokens, counts, k, seeds, tokenizer):
    """(tokens [B, k, L], mask [B, k]): up to k copies of each caption with one false object count
    (counterfactuals.count_counterfactuals); a caption with no count to change (an empty scene) gets
    none, its rows all zeros (not encoded, and masked out of the loss). So does a counterfactual whose
    change lies past the tokenizer's context length: cut there, it reads as the caption itself (its
    tokens, caption_tokens [B, L], as the batch serves them), a right answer scored as a wrong one."""
    rows, mask = [], torch.zeros(len(captions), k, dtype=torch.bool)
    for i, (caption, count, seed) in enumerate(zip(captions, counts, seeds)):
        written = counterfactuals.count_counterfactuals(caption, count, k, seed) if count else []
        mask[i, :len(written)] = True
        rows += written + [""] * (k - len(written))
    tokens = tokenizer(rows).view(len(captions), k, -1)  # [B, k, L]
    mask &= (tokens != caption_tokens[:, None]).any(dim=-1)
    return tokens * mask[..., None], mask


def accumulate_gradients(model, images, tokens, extra_tokens, loss_of, accum_steps, scaler, autocast):
    """Backpropagate the loss of one batch; returns the loss. loss_of(image, text, scale, extra) takes
    this rank's fp32 features and returns the loss of the (gathered) global batch.

    accum_steps > 1 splits the batch into micro-batches (GradCache, Gao et al. 2021): features of all
    micro-batches are computed without gradients first, the loss's gradient with respect to each
    feature is taken from them, then each micro-batch is run again with gradients and given its part
    of that gradient. Parameters receive exactly the whole batch's gradient; memory is one micro-batch's.
    """
    def features(part, grad=True):
        with autocast, torch.set_grad_enabled(grad):
            outputs = model(images[part], tokens[part], None if extra_tokens is None else extra_tokens[part])
        return [None if x is None else x.float() for x in outputs]

    if accum_steps == 1:
        loss = loss_of(*features(slice(None)))
        scaler.scale(loss).backward()
        return loss
    size = len(tokens) // accum_steps
    parts = [slice(i * size, (i + 1) * size) for i in range(accum_steps)]
    image, text, scale, extra = zip(*(features(part, grad=False) for part in parts))  # one per micro-batch
    image, text = torch.cat(image).requires_grad_(), torch.cat(text).requires_grad_()  # [B_local, D]
    scale = scale[0].requires_grad_()  # the temperature: one value, not one per micro-batch
    extra = None if extra[0] is None else torch.cat(extra).requires_grad_()  # [B_local, K, D]
    loss = loss_of(image, text, scale, extra)
    scaler.scale(loss).backward()  # gradients with respect to the cached features
    for i, part in enumerate(parts):
        last = i == accum_steps - 1
        with model.no_sync() if hasattr(model, "no_sync") and not last else nullcontext():
            outputs = features(part)
            grads = [image.grad[part], text.grad[part], scale.grad if last else torch.zeros_like(scale.grad),
                     None if extra is None else extra.grad[part]]  # the temperature's gradient counted once
            torch.autograd.backward(*zip(*[(out, grad) for out, grad in zip(outputs, grads) if out is not None]))
    return loss


def setup_distributed():
    """torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; a plain `python train.py` is one rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.cuda.is_available()
    # Rank 0 evaluates alone while the others wait in their next all_gather: allow for a long evaluation.
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def epoch_batches(n_items, batch_size, seed, epoch):
    """The global batches of one epoch: a shuffle fixed by (seed, epoch), so a resumed run sees the same."""
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i:i + batch_size] for i in range(0, n_items - batch_size + 1, batch_size)]


def read_entries(manifests):
    """All manifest entries; a missing image stops the run here, before any training step."""
    try:
        entries = [e for path in manifests for e in data.read_manifest(path)]
    except (OSError, data.SARDataError) as e:  # the message names the file (and the line)
        raise SystemExit(f"cannot read the data: {e}") from None
    missing = [e["image"] for e in entries if not Path(e["image"]).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(entries)} images named in {', '.join(map(str, manifests))} "
                         f"are missing, e.g. {', '.join(missing[:3])}")
    return entries


def train_checkpoint(path):
    """The dict of a train.py ckpt.pt at path (model, config, tokenizer, ...), else None."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an OpenAI TorchScript archive, safetensors, or no checkpoint: load_clip will say
        return None
    return ckpt if isinstance(ckpt, dict) and {"model", "config", "tokenizer"} <= set(ckpt) else None


def build_model(args, train_captions, resume):
    """(model, tokenizer, train.py checkpoint it came from or None): resumed, fine-tuned from a
    train.py checkpoint (its tokenizer comes with it), from OpenAI weights, or from scratch."""
    if resume is not None:  # load_clip reads the config and leaves AnyReader's keys to AnyReader
        return load_clip(resume), Tokenizer.load(Path(args.resume).parent / resume["tokenizer"]), resume
    if args.init != "scratch" and (ckpt := train_checkpoint(args.init)) is not None:
        tokenizer_path = Path(args.init).parent / ckpt["tokenizer"]
        if not tokenizer_path.is_file():
            raise SystemExit(f"--init {args.init}: its tokenizer {tokenizer_path} is missing")
        return load_clip(ckpt), Tokenizer.load(tokenizer_path), ckpt
    if args.init != "scratch":  # SAR is gray: conv1 summed over RGB, OpenAI's pixel normalisation folded in
        if not args.tokenizer_bpe:
            raise SystemExit("--init PATH needs --tokenizer-bpe (CLIP's bpe_simple_vocab_16e6.txt.gz)")
        try:
            model = load_clip(args.init, in_channels=1, pixel_mean=OPENAI_PIXEL_MEAN, pixel_std=OPENAI_PIXEL_STD)
            tokenizer = Tokenizer.from_clip_bpe(args.tokenizer_bpe, model.cfg.context_length)
        except (OSError, ValueError) as e:  # the message names the file and what does not fit
            raise SystemExit(f"--init: {e}") from None
        if tokenizer.vocab_size != model.cfg.vocab_size:
            raise SystemExit(f"--init {args.init}: its vocabulary has {model.cfg.vocab_size} ids, but "
                             f"--tokenizer-bpe {args.tokenizer_bpe} gives {tokenizer.vocab_size}")
        return model, tokenizer, None
    cfg = CLIPConfig(**{**SIZES[args.size], "in_channels": 1, "image_size": args.image_size or SIZES[args.size]["image_size"]})
    tokenizer = Tokenizer.train(train_captions, cfg.vocab_size, cfg.context_length)
    cfg.vocab_size = tokenizer.vocab_size  # a small corpus can run out of merges first
    return CLIP(cfg), tokenizer, None


def log_line(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def plot_curves(metrics_path, png_path):
    """Loss and held-out mean recall against step, from metrics.jsonl."""
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in open(metrics_path)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    losses = [r for r in rows if "loss" in r]
    left.plot([r["step"] for r in losses], [r["loss"] for r in losses])
    left.set(title="training loss", xlabel="step", ylabel="contrastive loss")
    recalls = [r for r in rows if "mean_recall" in r]
    right.plot([r["step"] for r in recalls], [r["mean_recall"] for r in recalls], "o-", label="model")
    right.plot([r["step"] for r in recalls], [r["chance_mean_recall"] for r in recalls], "--", label="chance")
    right.set(title="held-out retrieval", xlabel="step", ylabel="mean recall (%)")
    right.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = setup_distributed()
    master = rank == 0
    if args.batch_size % (world * args.accum_steps):
        raise SystemExit(f"--batch-size {args.batch_size} must divide evenly over {world} rank(s) "
                         f"x {args.accum_steps} micro-batch(es)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = out / "ckpt.pt", out / "metrics.jsonl"
    resume = read_resume(args.resume, args) if args.resume else None

    # ---- data: MMSAR manifests and/or the synthetic SAR default, made once and cached
    use_synthetic = not args.data or "synthetic" in args.data
    if use_synthetic and int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one writer per machine
        if not (synthetic.DEFAULT_SYNTHETIC / "synthetic.json").is_file():
            print(f"writing the synthetic SAR set to {synthetic.DEFAULT_SYNTHETIC} (once, about half a minute)", flush=True)
        synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC)  # cached: instant after the first time
    if world > 1:
        dist.barrier()  # the other ranks wait for it to be written
    synthetic_scenes = synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC)["scenes"] if use_synthetic else None
    manifests = [synthetic_scenes if path == "synthetic" else path for path in args.data] or [synthetic_scenes]
    entries = read_entries(manifests)
    train_entries = [e for e in entries if e["split"] == "train"]
    # A manifest listed again is drawn again (README: Train on real SAR); its held-out images count once.
    val_entries = list({e["image"]: e for e in entries if e["split"] == "val"}.values())
    if not train_entries or not val_entries:
        raise SystemExit(f"{', '.join(map(str, manifests))}: need both 'train' and 'val' images, "
                         f"found {len(train_entries)} and {len(val_entries)}")
    held_out = {e["image"] for e in entries if e["split"] != "train"}  # val and test: never trained on
    if leaked := sorted({e["image"] for e in train_entries} & held_out):
        raise SystemExit(f"{len(leaked)} images are 'train' in one of {', '.join(map(str, manifests))} and held "
                         f"out ('val' or 'test') in another, e.g. {', '.join(leaked[:3])}: build the manifests "
                         "with the same split rule")

    # ---- model, tokenizer, optimiser
    torch.manual_seed(args.seed)  # every rank builds the same initial weights
    clip, tokenizer, start = build_model(args, [c for e in train_entries for c in e["captions"]], resume)
    reader = AnyReader(clip, max_tiles=args.max_tiles) if args.anyreader else None
    if reader is not None and start is not None and any(k.startswith("anyreader.") for k in start["model"]):
        reader.load_fusion_state_dict(start["model"])
    trainee = Trainee(clip, reader, lock_towers(clip, args.lock_image, args.lock_text)).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(trainee, args.wd), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        torch.set_rng_state(resume["rng"])
    model = trainee
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(trainee, device_ids=[device] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    autocast = nullcontext() if args.precision == "fp32" else torch.autocast(
        device.type, dtype=torch.bfloat16 if args.precision == "bf16" else torch.float16)

    dataset = ManifestDataset(manifests, tokenizer, image_size=None if args.anyreader else clip.cfg.image_size,
                              channels=clip.cfg.in_channels, split="train", seed=args.seed,
                              caption_style=args.captions, return_index=True, replace_unreadable=True,
                              augment=args.augment, display_augment=args.display_augment,
                              max_side=largest_useful_side(clip.cfg.image_size, args.max_tiles) if args.anyreader else None)
    steps_per_epoch = len(dataset) // args.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(dataset)} training images are fewer than one batch of {args.batch_size}")
    total = round(args.epochs * steps_per_epoch) if args.epochs else args.steps
    step = resume["step"] if resume is not None else 0
    unreadable = set(resume.get("unreadable", [])) if resume is not None else set()  # training images that failed
    if master:
        n_params = sum(p.numel() for p in trainee.parameters())
        print(f"{len(train_entries)} training / {len(val_entries)} held-out images from {', '.join(map(str, manifests))}")
        print(f"model {args.size if args.init == 'scratch' else args.init}: {n_params / 1e6:.1f}M parameters, "
              f"{world} rank(s) on {device.type}, {total} steps of {args.batch_size}, starting at step {step}")
        if resume is None:
            tokenizer.save(out / "tokenizer.json")
            metrics_path.unlink(missing_ok=True)
        else:  # drop what a killed run logged after its last checkpoint, a half-written last line too
            keep = [line for line in open(metrics_path) if line.endswith("\n")] if metrics_path.exists() else []
            metrics_path.write_text("".join(line for line in keep if json.loads(line)["step"] <= step))

    def evaluate():
        """Held-out retrieval; None (and why) when a held-out image does not load: training goes on."""
        trainee.eval()
        try:
            with torch.no_grad(), autocast:
                return evaluation.retrieval(clip, tokenizer, val_entries, reader=reader)
        except data.SARDataError as e:
            print(f"step {step}: held-out retrieval skipped, fix or remove this image: {e}", flush=True)
        finally:
            trainee.train()

    def checkpoint():
        save_checkpoint(ckpt_path, {
            "model": trainee.checkpoint_state(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "step": step, "rng": torch.get_rng_state(), "config": asdict(clip.cfg), "tokenizer": "tokenizer.json",
            "schedule": {"total": total, "warmup": args.warmup, "peak_lr": args.lr}, "args": vars(args),
            "unreadable": sorted(unreadable)})

    def note_unreadable(asked, served):
        """Report images the loader replaced (a bad file costs its place in one batch, not the run);
        stop, with a checkpoint of the steps done, once more than MAX_UNREADABLE of them fail."""
        for index in sorted({a for a, s in zip(asked, served) if a != s} - unreadable):
            unreadable.add(index)
            if master:
                try:
                    dataset.image(index)
                except data.SARDataError as e:  # the loader's error, with the file and what is wrong
                    print(f"step {step}: skipped an unreadable image, replaced in its batch "
                          f"({len(unreadable)} so far): {e}", flush=True)
        if len(unreadable) > MAX_UNREADABLE * len(dataset):
            if master:
                checkpoint()
            raise SystemExit(f"{len(unreadable)} of {len(dataset)} training images failed to load (more than "
                             f"{MAX_UNREADABLE:.0%}; see the messages above): fix or remove them. The {step} steps "
                             f"done are saved in {ckpt_path}.")

    # ---- the loop
    # A loading process pays only where a core is free beside torch's compute threads (not on 2 cores).
    workers = args.workers if args.workers is not None else int((os.cpu_count() or 1) > torch.get_num_threads())
    trainee.train()
    started, last_log, seen = time.time(), 0.0, 0
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        dataset.set_epoch(epoch)
        global_batches = epoch_batches(len(dataset), args.batch_size, args.seed, epoch)[offset:]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=[batch[rank::world] for batch in global_batches], num_workers=workers,
            collate_fn=collate_keep_size if args.anyreader else None)
        for batch, (images, tokens, served) in zip(global_batches, loader):
            ordered = [i for r in range(world) for i in batch[r::world]]  # the gathered order: rank 0's part first
            served = gather_values(served.to(device)).tolist()  # the images actually in the batch
            note_unreadable(ordered, served)
            lr = learning_rate(step, total, args.warmup, args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = [im.to(device) for im in images] if args.anyreader else images.to(device)
            positives, extra_tokens, extra_mask = None, None, None
            drawn = [dataset.caption(i) for i in served] if args.dedup_targets or args.count_negatives else None
            if args.dedup_targets:
                positives = batch_positives(drawn, [dataset.item_captions(i) for i in served],
                                            [dataset.caption_claim(i) for i in served],
                                            [dataset.item_truth(i) for i in served]).to(device)
            if args.count_negatives:  # this rank's items: their counterfactuals are gathered like features
                mine = slice(rank * len(tokens), (rank + 1) * len(tokens))
                extra_tokens, extra_mask = counterfactual_tokens(
                    drawn[mine], tokens, [dataset.item_counts(i) for i in served[mine]], args.count_negatives,
                    [data.stable_hash(f"{args.seed}/{epoch}/{i}") for i in served[mine]], tokenizer)
                extra_tokens, extra_mask = extra_tokens.to(device), gather_values(extra_mask.to(device))

            def loss_of(image, text, scale, extra):
                # In fp32: at a logit scale of 100, bf16 would round away the differences it ranks.
                return clip_loss(gather(image), gather(text), scale, positives,
                                 None if extra is None else gather(extra), extra_mask)

            optimizer.zero_grad(set_to_none=True)
            loss = accumulate_gradients(model, images, tokens.to(device), extra_tokens, loss_of, args.accum_steps,
                                        scaler, autocast)
            if not torch.isfinite(loss):
                raise SystemExit(f"step {step}: the loss is {loss.item()}; training stopped. The last good checkpoint "
                                 f"({ckpt_path}) is kept: resume from it with a lower --lr or --precision fp32.")
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():  # CLIP's guard: a temperature below 1/100 makes training unstable
                clip.logit_scale.clamp_(0, math.log(100))
            step, seen = step + 1, seen + args.batch_size

            now = time.time()
            if master and (now - last_log >= args.log_every or step == total):
                rate = seen / (now - started)
                skipped = f"  {len(unreadable)} unreadable skipped" if unreadable else ""
                print(f"step {step}/{total}  loss {loss.item():.4f}  lr {lr:.2e}  logit scale {clip.logit_scale.exp().item():.1f}"
                      f"  {rate:.0f} images/s  ETA {(total - step) * args.batch_size / rate / 60:.1f} min{skipped}", flush=True)
                log_line(metrics_path, {"step": step, "loss": loss.item(), "lr": lr, "logit_scale": clip.logit_scale.exp().item(),
                                        "images_per_s": rate, "unreadable": len(unreadable)})
                last_log = now
            if master and step % args.eval_every == 0 and step < total:
                if (result := evaluate()) is not None:
                    print(f"step {step}: held-out mean recall {result['mean_recall']:.1f}% (chance {result['chance_mean_recall']:.1f}%)")
                    log_line(metrics_path, {"step": step, **result})
            if master and (step % args.save_every == 0 or step == total):
                checkpoint()
            if step >= total:
                break

    # ---- the end: retrieval on the held-out split, the curves
    if master:
        if (result := evaluate()) is not None:
            log_line(metrics_path, {"step": step, "final": True, **result})
            print(f"held-out retrieval after {step} steps: mean recall {result['mean_recall']:.1f}% "
                  f"(chance {result['chance_mean_recall']:.1f}%); "
                  + ", ".join(f"{k} {v:.1f}" for k, v in result.items() if k.startswith(("i2t", "t2i"))))
        plot_curves(metrics_path, out / "curves.png")
        print(f"wrote {ckpt_path}, {out / 'tokenizer.json'}, {metrics_path}, {out / 'curves.png'}")
    if world > 1:
        dist.destroy_process_group()
    return step


if __name__ == "__main__":
    main()
