"""Benchmarks: `python bench.py [section ...]`, sections listed in SECTIONS; no section runs them all but
the hour-long ablations (`python bench.py ablations [--steps N]`).

Numbers depend on the machine; the README records what they were on a 2-core CPU.
"""
import sys
import time
from pathlib import Path

import torch

from sarclip import CLIP, SIZES, CLIPConfig, clip_loss

ROOT = Path(__file__).resolve().parent  # the project folder: subprocess cells, docs and runs are found from it


def timed(step, warmup=3, repeats=10):
    """Seconds per call of step(), after a few warm-up calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


CAPTION_TOKENS = (12, 32)  # shortest and longest caption the bench feeds, end-of-text included (22 on average)


def training_step(size, batch_size, device="cpu", dtype=None, image_size=None, count_negatives=True,
                  text_groups=None):
    """A function doing one training step of preset `size` as train.py does it by default: forward
    (train.Trainee's, with one false-count caption per image, --count-negatives 1: a second text
    pass; count_negatives=False leaves it out), the symmetric loss, backward, AdamW. image_size
    overrides the preset's, as train.py --image-size does; text_groups Trainee.TEXT_GROUPS."""
    import train
    torch.manual_seed(0)
    cfg = CLIPConfig(**{**SIZES[size], "in_channels": 1,  # train.py's SAR models are single-channel
                        "image_size": image_size or SIZES[size]["image_size"]})
    model = CLIP(cfg).to(device)
    trainee, optimizer = train.Trainee(model), torch.optim.AdamW(model.parameters(), lr=1e-4)
    trainee.TEXT_GROUPS = text_groups or trainee.TEXT_GROUPS
    images = torch.rand(batch_size, 1, cfg.image_size, cfg.image_size, device=device)
    tokens = torch.randint(1, cfg.vocab_size - 2, (batch_size, cfg.context_length), device=device)
    # End-of-text spread as D2C's synthetic captions spread under the tiny tokenizer (CAPTION_TOKENS);
    # padding after it.
    ends = torch.randint(CAPTION_TOKENS[0] - 1, CAPTION_TOKENS[1], (batch_size,),
                         generator=torch.Generator().manual_seed(0)).to(device)
    tokens[torch.arange(batch_size, device=device), ends] = cfg.vocab_size - 1
    tokens[torch.arange(cfg.context_length, device=device) > ends[:, None]] = 0
    false_counts = tokens.clone()[:, None]  # [B, 1, L]: each caption with one word (its count) changed
    false_counts[:, :, 5] = false_counts[:, :, 5] % (cfg.vocab_size - 3) + 1
    autocast = torch.autocast(device, dtype=dtype) if dtype else torch.autocast(device, enabled=False)

    def step():
        with autocast:
            image, text, scale, extra = trainee(images, tokens, false_counts if count_negatives else None)
        loss = clip_loss(image.float(), text.float(), scale, counterfactuals=None if extra is None else extra.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return step, model


def flops_per_pair(model, texts=2):
    """Training FLOPs for one image and its `texts` captions (its caption and a false-count one, as
    training_step runs them): 6 per weight per token (forward 2, backward 4), plus attention's T x T
    products (nanoGPT's estimate), summed over the towers. A caption counts its mean length, not the
    context length: the padding after it is not computed (train.Trainee.encode_text)."""
    cfg, total = model.cfg, 0
    caption_tokens = sum(CAPTION_TOKENS) / 2
    towers = ((model.visual, 1, (cfg.image_size // cfg.patch_size) ** 2 + 1, cfg.vision_width, cfg.vision_layers),
              (model.transformer, texts, caption_tokens, cfg.text_width, cfg.text_layers))
    for tower, passes, tokens, width, layers in towers:
        weights = sum(p.numel() for p in tower.parameters())
        total += passes * (6 * weights * tokens + 12 * layers * width * tokens ** 2)
    return total


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, from NVIDIA's data sheets


def bench_train_step(batch_size=64):
    """Tiny preset on the CPU as train.py runs it, with its captions in one length group, and
    without the false-count text pass; tiny16 as train.py runs it and as the real recipe does
    (--count-negatives 0); with a GPU also b16 in bf16, with its model FLOP utilisation (MFU)."""
    for size, label, count_negatives, groups in (("tiny", "as train.py runs it", True, None),
                                                 ("tiny", "captions in one length group", True, 1),
                                                 ("tiny", "without the false-count pass", False, None),
                                                 ("tiny16", "as train.py runs it", True, None),
                                                 ("tiny16", "without the false-count pass (the real recipe)", False, None)):
        step, _ = training_step(size, batch_size, count_negatives=count_negatives, text_groups=groups)
        seconds = timed(step)
        print(f"train_step  {size}, batch {batch_size}, {label}, CPU, {torch.get_num_threads()} threads: "
              f"{1 / seconds:.2f} steps/s, {batch_size / seconds:.0f} images/s")
    if not torch.cuda.is_available():
        return print("train_step  b16 bf16: skipped, no GPU")
    step, model = training_step("b16", 256, "cuda", torch.bfloat16)
    seconds = timed(step)
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    mfu = f", MFU {flops_per_pair(model) * 256 / seconds / peak:.0%}" if peak else " (peak FLOPs unknown)"
    print(f"train_step  b16, batch 256, bf16, {name}: {256 / seconds:,.0f} images/s{mfu}")


def bench_d2c(n_records=2000):
    """D2C captions per second on the synthetic scenes' records (5 diverse captions each, with the
    claims train.py's dedup targets check)."""
    import d2c
    import data
    import synthetic
    from dataset import entry_record
    entries = data.read_manifest(synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC)["scenes"])[:n_records]
    records = [entry_record(entry) for entry in entries]  # what training hands D2C
    start = time.perf_counter()
    for i, record in enumerate(records):
        d2c.captions(record, n=5, seed=i, claims=True)
    seconds = time.perf_counter() - start
    print(f"d2c         {5 * len(records) / seconds:,.0f} captions/s ({len(records)} records, 5 captions each, "
          "with claims)")


# The shared real SAR sets (../shared/sar), as data.build_manifest reads them.
REAL_SETS = (("SSDD", "voc:{sar}/ssdd_train"),  # 3-channel gray JPEGs, 190-668 px
             ("MSTAR scenes", "voc:{sar}/mstar_scenes:{root}/docs/classes/mstar_scenes.txt"),  # JPEG ~491 x 594
             ("HRSID", "coco:{sar}/hrsid_mini/annotations.json"))  # 800 x 800 JPEG


class Epochs(torch.utils.data.Dataset):
    """n items of a ManifestDataset served epoch after epoch (1, 2, ...), as training serves a set: item k
    is index k % len(dataset) of epoch 1 + k // len(dataset), so D2C's memo never answers for a caption
    it already wrote (a set smaller than n cycled in one epoch would be served from it)."""

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, n

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        self.dataset.set_epoch(1 + k // len(self.dataset))
        return self.dataset[k % len(self.dataset)]


def loading_rate(dataset, n_images, n_workers):
    """Images/s through a DataLoader (batch 64) over n_images items (Epochs) of a fresh dataset, as from a
    training run's second epoch on: the files are read once first, so that the page cache, not the disk,
    serves them, and with 0 workers the training process has kept their decoded pixels
    (ManifestDataset.decoded, up to CACHE_BYTES); a worker process, made anew each epoch, keeps none."""
    items = Epochs(dataset, n_images)
    for i in range(min(n_images, len(dataset))):
        if n_workers == 0:
            dataset.decoded(i)
        else:
            Path(dataset.entries[i]["image"]).read_bytes()
    loader = torch.utils.data.DataLoader(items, batch_size=64, num_workers=n_workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    return n_images / (time.perf_counter() - start)


def loading_table(manifests, tokenizer, n_images, sizes):
    """Prints bench_loading's table: a row per (image size, manifest), training images/s beside."""
    from dataset import ManifestDataset
    print(f"loading     {n_images} images a cell (smaller sets epoch after epoch), batch 64, {torch.get_num_threads()} threads;"
          f" training: the tiny preset, batch 64\n")
    print("| data | px | 0 workers | 1 worker | 0 workers, augmented | training | loading / training |\n"
          + "|---" * 7 + "|")
    for size in sizes:
        step, _ = training_step("tiny", 64, image_size=size)
        training = 64 / timed(step, warmup=2, repeats=5)
        for name, manifest, split in manifests:
            cells = [(False, 0), (False, 1), (True, 0)]  # (augment, workers), a fresh dataset each
            datasets = [ManifestDataset(manifest, tokenizer, image_size=size, split=split, augment=augment)
                        for augment, _ in cells]
            rates = [loading_rate(dataset, n_images, workers) for dataset, (_, workers) in zip(datasets, cells)]
            print(f"| {name} ({len(datasets[0])} images) | {size} | " + " | ".join(f"{r:,.0f}" for r in rates) +
                  f" | {training:,.0f} | {rates[2] / training:.1f}x |", flush=True)


def bench_loading(n_images=256, sizes=(64, 128)):
    """ManifestDataset images/s (decode or keep, resize, caption, tokenise) beside the tiny model's training images/s.

    On the synthetic set and, when ../shared/sar exists, on real SSDD, MSTAR and HRSID JPEGs, at the
    tiny preset's 64 px and at 128 px (`train.py --image-size 128`). Loading should be at least 3x
    faster than training, or the model waits for data: the ratio is for train.py's defaults (0 workers,
    box-aware augmentation on), where each batch is loaded in the training process between steps.
    """
    import tempfile

    import data
    import synthetic
    from sarclip import Tokenizer
    manifests = [("synthetic", synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC)["scenes"], "train")]
    captions = [c for e in data.read_manifest(manifests[0][1]) for c in e["captions"]]
    tokenizer = Tokenizer.train(captions, SIZES["tiny"]["vocab_size"], SIZES["tiny"]["context_length"])
    sar = ROOT.parent / "shared" / "sar"
    if not sar.is_dir():
        print(f"loading     real SAR: skipped, no {sar}")
    with tempfile.TemporaryDirectory() as folder:
        for name, source in REAL_SETS if sar.is_dir() else ():
            path = Path(folder) / f"{name.replace(' ', '_')}.jsonl"
            data.build_manifest([source.format(sar=sar, root=ROOT)], path, verbose=False)
            manifests.append((name, path, None))
        loading_table(manifests, tokenizer, n_images, sizes)


def bench_eval(checkpoint=None):
    """Feature extraction images/s and the wall time of all five evaluations (+ the untrained, pixels and CFAR baselines).

    Uses `--checkpoint` out/ckpt.pt from `python train.py --size tiny` when it exists, else a fresh tiny model
    saved the way train.py saves one (the timing does not depend on what the weights learned).
    """
    import tempfile
    from dataclasses import asdict

    import data
    import eval as evaluation
    import synthetic
    from sarclip import Tokenizer
    manifest = synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC)["scenes"]
    folder = Path(tempfile.mkdtemp())
    checkpoint = Path(checkpoint or "out/ckpt.pt")
    if not checkpoint.is_file():
        cfg = CLIPConfig(**{**SIZES["tiny"], "in_channels": 1})
        tokenizer = Tokenizer.train([c for e in data.read_manifest(manifest) for c in e["captions"]],
                                    cfg.vocab_size, cfg.context_length)
        cfg.vocab_size = tokenizer.vocab_size
        tokenizer.save(folder / "tokenizer.json")
        torch.save({"model": CLIP(cfg).state_dict(), "config": asdict(cfg), "tokenizer": "tokenizer.json",
                    "args": {"init": "scratch", "anyreader": False, "max_tiles": 4, "data": [], "seed": 0}},
                   folder / "ckpt.pt")
        checkpoint = folder / "ckpt.pt"
    model, _, _ = evaluation.load_checkpoint(checkpoint)
    side = model.cfg.image_size
    images = list(torch.rand(256, model.cfg.in_channels, side, side, generator=torch.Generator().manual_seed(0)))
    evaluation.encode_images(model.eval(), images[:64])  # warm-up
    start = time.perf_counter()
    evaluation.encode_images(model, images)
    print(f"eval        features: {256 / (time.perf_counter() - start):,.0f} images/s (tiny, 64 px, batch 64)")
    start = time.perf_counter()
    evaluation.main(["--checkpoint", str(checkpoint), "--out", str(folder / "eval")])
    print(f"eval        five tasks + untrained, pixels and CFAR baselines on the synthetic set: {time.perf_counter() - start:.1f} s")


# AnyReader's cost: one square image per side, each measurement in a fresh process (see anyreader_cell).
ANYREADER_SIDES = (224, 512, 1024, 2048, 4096, 8192)
ANYREADER_METHODS = ("plain resize", "AnyReader", "full-res ViT")
MAX_FULL_RES_TOKENS = 16384  # 1024 px at patch 8: past this the full-resolution ViT takes minutes a call


def resident_kb(field):
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in kB, from /proc (Linux)."""
    import re
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def anyreader_cell(method, side, max_tiles=4):
    """Prints {ms, mb, ...} for embedding one side x side image with the tiny preset, for bench_anyreader.

    Memory is the process's peak resident set during the first call, above what it held before (the
    model, the image, torch warmed up on one native-size image). Linux's clear_refs resets the peak, and
    a fresh process per cell keeps one method's freed memory from hiding the next one's. Time is the
    best of later calls (the fastest run is the least disturbed by whatever else the machine is doing).
    """
    import json

    import torch.nn.functional as F

    from anyreader import AnyReader
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(**SIZES["tiny"])).eval()
    S, image = clip.cfg.image_size, torch.rand(1, side, side)
    tokens = (side // clip.cfg.patch_size) ** 2
    if method == "full-res ViT" and tokens > MAX_FULL_RES_TOKENS:
        return print(json.dumps({"skipped": tokens}))
    reader = AnyReader(clip, max_tiles=max_tiles)
    run = {"plain resize": lambda: clip.encode_image(
               F.interpolate(image[None], size=(S, S), mode="bilinear", antialias=True, align_corners=False)),
           "AnyReader": lambda: reader([image]),
           "full-res ViT": lambda: clip.encode_image(image[None])}[method]  # positions interpolated
    with torch.no_grad():
        clip.encode_image(torch.rand(1, 1, S, S))  # torch's one-time start-up, so that no method pays for it
        Path("/proc/self/clear_refs").write_text("5")  # peak resident set := resident set now
        before = resident_kb("VmRSS")
        start = time.perf_counter()
        run()
        first, mb = time.perf_counter() - start, (resident_kb("VmHWM") - before) / 1024
        seconds = min(timed(run, warmup=0, repeats=1) for _ in range(max(1, min(10, round(2 / first)))))
    grid = "x".join(map(str, reader.views(image)[1])) if method == "AnyReader" else None
    print(json.dumps({"ms": 1000 * seconds, "mb": mb, "tokens": tokens, "grid": grid}))


def bench_anyreader(sides=ANYREADER_SIDES, plot="docs/anyreader_cost.png"):
    """Time and peak memory to embed one image, 224 to 8192 px a side: plain resize, AnyReader, full-res ViT."""
    import json
    import subprocess
    cells = {}
    for side in sides:
        for method in ANYREADER_METHODS:
            code = f"import bench; bench.anyreader_cell({method!r}, {side})"
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
            cells[method, side] = json.loads(out.stdout.splitlines()[-1])
    print(f"anyreader  tiny preset (64 px native, patch 8), AnyReader max_tiles=4, one 1-channel image, "
          f"{torch.get_num_threads()} threads; peak MB above the loaded model and image\n")
    print("| side (px) | plain resize | AnyReader | full-resolution ViT |\n|---|---|---|---|")
    for side in sides:
        plain, reader, full = (cells[m, side] for m in ANYREADER_METHODS)
        full_text = (f"skipped: {full['skipped']:,} tokens" if "skipped" in full
                     else f"{full['ms']:,.0f} ms, {full['mb']:,.0f} MB ({full['tokens']:,} tokens)")
        print(f"| {side} | {plain['ms']:,.1f} ms, {plain['mb']:,.0f} MB | {reader['ms']:,.1f} ms, "
              f"{reader['mb']:,.0f} MB ({reader['grid']} grid) | {full_text} |")
    plot_anyreader_cost(cells, sides, ROOT / plot)


def plot_anyreader_cost(cells, sides, path):
    """Two log-log panels, time and peak memory against the image side, one line per method."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for ax, key, label in zip(axes, ("ms", "mb"), ("milliseconds per image", "peak MB above model and image")):
        for method, marker in zip(ANYREADER_METHODS, "os^"):
            done = [s for s in sides if key in cells[method, s]]
            ax.plot(done, [max(cells[method, s][key], 0.1) for s in done], marker=marker, label=method)
        ax.set(xscale="log", yscale="log", xlabel="image side (pixels, square, 1 channel)", ylabel=label)
        ax.minorticks_off()
        ax.set_xticks(sides, [str(s) for s in sides])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.10g}"))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(title=f"tiny preset; full-res ViT stops at {MAX_FULL_RES_TOKENS:,} tokens")
    fig.suptitle("Embedding one SAR image of growing size: AnyReader's cost stops growing with the grid")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Loading huge TIFFs: one load of a square uint16 scene per side, each in a fresh process (see tiff_cell).
TIFF_SIDES = (1024, 2048, 4096, 8192, 16384)


def sar_bands(side, height=256):
    """A side x side SAR-like uint16 scene, 256 rows at a time: a smooth gradient (DN 50 to 500, as in
    Sentinel-1 GRD products) times 4-look gamma speckle, seeded per band, so the same pixels come out
    every time and no scene is ever held whole."""
    import numpy as np
    for top in range(0, side, height):
        rows, cols = np.ogrid[top:top + height, 0:side]
        speckle = np.random.default_rng((side, top)).gamma(4, 1 / 4, (height, side))
        yield np.clip((50 + 450 * (rows + cols) / (2 * side)) * speckle, 0, 65535).astype(np.uint16)


def scene_tiff(side, tiled=True):
    """The cached test scene (under the temp dir), written on first use: 256 x 256 tiles, deflate; or
    uncompressed strips of 256 rows, which the reader reads a strip at a time. tifffile writes from an iterator of
    tiles, or of raw strip bytes, one at a time."""
    import tempfile

    import tifffile
    path = Path(tempfile.gettempdir()) / "sarclip_bench_tiff" / f"{side}_{'tiled_zlib' if tiled else 'strips_raw'}.tif"
    if path.is_file():
        with tifffile.TiffFile(path) as tif:
            if tif.pages.first.shape == (side, side):
                return path
    path.parent.mkdir(parents=True, exist_ok=True)
    start, part = time.perf_counter(), path.with_suffix(".part")
    if tiled:
        tiles = (band[:, left:left + 256] for band in sar_bands(side) for left in range(0, side, 256))
        tifffile.imwrite(part, tiles, shape=(side, side), dtype="uint16", tile=(256, 256), compression="zlib")
    else:
        tifffile.imwrite(part, (band.tobytes() for band in sar_bands(side)), shape=(side, side), dtype="uint16",
                         rowsperstrip=256)
    part.rename(path)
    print(f"tiff        wrote {path} in {time.perf_counter() - start:.1f} s")
    return path


def tiff_cell(path, max_side=896):
    """Prints {seconds, mb, shape} for one rasters.load_sar_image(path, max_side=896), for bench_tiff.

    Memory is the peak resident set during the load above the resident set just before it (after the
    imports and a warm-up load of a small TIFF, so that lazy imports do not count; clear_refs resets the
    peak). A fresh process per file keeps one load's freed memory from hiding the next one's growth.
    """
    import json

    import rasters
    rasters.load_sar_image(scene_tiff(256), max_side=64)
    Path("/proc/self/clear_refs").write_text("5")  # peak resident set := resident set now
    before = resident_kb("VmRSS")
    start = time.perf_counter()
    image = rasters.load_sar_image(path, max_side=max_side)
    seconds, mb = time.perf_counter() - start, (resident_kb("VmHWM") - before) / 1024
    print(json.dumps({"seconds": seconds, "mb": mb, "shape": list(image.shape)}))


def bench_tiff(sides=TIFF_SIDES):
    """Time and peak memory of rasters.load_sar_image(max_side=896) on tiled deflate uint16 TIFFs, 1k to
    16k a side, and on one uncompressed striped 8k TIFF: a reader that multi-looks tile by tile keeps
    memory flat whatever the file size. Files come from the page cache (just written or read before)."""
    import json
    import subprocess
    scene_tiff(256)  # the warm-up file every cell loads first
    files = [(side, tiled, scene_tiff(side, tiled)) for side, tiled in [(s, True) for s in sides] + [(8192, False)]]
    print("tiff        rasters.load_sar_image(path, max_side=896), one load per fresh process; "
          "peak MB above the process before the load\n")
    print("| TIFF | side (px) | megapixels | file MB (raw MB) | load s | peak MB | output |\n" + "|---" * 7 + "|")
    for side, tiled, path in files:
        code = f"import bench; bench.tiff_cell({str(path)!r})"
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        cell = json.loads(out.stdout.splitlines()[-1])
        layout = "256x256 tiles, deflate" if tiled else "strips, uncompressed"
        print(f"| {layout} | {side} | {side * side / 1e6:,.0f} | {path.stat().st_size / 1e6:,.0f} "
              f"({2 * side * side / 1e6:,.0f}) | {cell['seconds']:.2f} | {cell['mb']:,.0f} | "
              f"{'x'.join(map(str, cell['shape']))} |")


# Ablations: the tiny preset's default run, then one train.py option changed at a time.
ABLATIONS = (  # (folder, variant, train.py flags)
    ("default", "default", ()),
    ("anyreader", "AnyReader", ("--anyreader",)),
    ("simple_captions", "simple captions", ("--captions", "simple")),
    ("no_dedup_targets", "no dedup targets", ("--no-dedup-targets",)),
    ("no_count_negatives", "no count negatives", ("--count-negatives", "0")),
    ("no_augment", "no augmentation", ("--no-augment",)),
)
ABLATION_METRICS = (  # (column, keys into eval.json); every one a percentage but the last
    ("retrieval mean recall", ("retrieval", "mean_recall")),
    ("zero-shot top-1", ("zero_shot", "top1")),
    ("linear probe top-1", ("linear_probe", "top1")),
    ("16-shot top-1", ("few_shot", "16", "mean")),
    ("counting accuracy", ("counting", "accuracy")),
    ("counting MAE", ("counting", "mae")),
)


def metric(report, keys):
    """report[keys[0]][keys[1]]..., or None when eval.py did not measure it."""
    for key in keys:
        if not isinstance(report, dict) or key not in report:
            return None
        report = report[key]
    return report


def run_logged(command, log, cwd):
    """Minutes to run command, its output going to the log file; a failure names the log and ends the bench."""
    import subprocess
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"bench.py: {command[1]} failed (exit {done.returncode}); see {log}")
    return (time.perf_counter() - start) / 60


def finished_run(folder, settings):
    """The ablation.json of a run in folder that ended with eval.json and trained with exactly these
    train.py settings (all but --out: a changed default in train.py means a new run), else None."""
    import json
    if not ((folder / "ablation.json").is_file() and (folder / "eval.json").is_file()):
        return None
    done = torch.load(folder / "ckpt.pt", map_location="cpu", weights_only=True)["args"]
    if {k: v for k, v in done.items() if k != "out"} != {k: v for k, v in settings.items() if k != "out"}:
        return None
    return json.loads((folder / "ablation.json").read_text())


def train_arguments(folder, steps, flags):
    """train.py's command line for one variant."""
    return ["--size", "tiny", "--steps", str(steps), "--out", str(folder), *flags]


def ablation_run(folder, steps, flags, root):
    """Train and evaluate one variant in folder; returns {flags, train_minutes, eval_minutes}, also kept in
    folder/ablation.json."""
    import json
    folder.mkdir(parents=True, exist_ok=True)
    train_command = [sys.executable, "train.py", *train_arguments(folder, steps, flags)]
    train_minutes = run_logged(train_command, folder / "train.log", root)
    # The untrained baseline is the same for every variant: eval.py computes it for the default only.
    evaluate = [sys.executable, "eval.py", "--checkpoint", str(folder / "ckpt.pt"),
                "--baselines", *([] if flags else ["untrained"])]
    eval_minutes = run_logged(evaluate, folder / "eval.log", root)
    record = {"flags": list(flags), "train_minutes": train_minutes, "eval_minutes": eval_minutes}
    (folder / "ablation.json").write_text(json.dumps(record, indent=2))
    return record


def ablation_table(rows):
    """Markdown: one row per variant (name, flags, training minutes, the metrics), then the untrained model."""
    header = ["variant", "flag", "train min"] + [name for name, _ in ABLATION_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for variant, flags, minutes, report in rows:
        values = [metric(report, keys) for _, keys in ABLATION_METRICS]
        cells = ["-" if v is None else f"{v:.1f}" for v in values[:-1]]
        cells.append("-" if values[-1] is None else f"{values[-1]:.2f}")  # MAE in objects: two decimals
        flag = f"`{' '.join(flags)}`" if flags else "-"
        minutes = "-" if minutes is None else f"{minutes:.1f}"
        lines.append(f"| {variant} | {flag} | {minutes} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ablations(rows, path, steps):
    """Left: grouped bars, one group per percentage metric, one bar per variant; right: counting MAE."""
    import matplotlib.pyplot as plt
    import numpy as np
    percent = ABLATION_METRICS[:-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=(4, 1), layout="constrained")
    width = 0.8 / len(rows)
    for i, (variant, _, _, report) in enumerate(rows):
        color = "0.7" if variant.startswith("untrained") else f"C{i}"
        values = [metric(report, keys) or 0 for _, keys in percent]
        left.bar(np.arange(len(percent)) + (i - (len(rows) - 1) / 2) * width, values, width, label=variant, color=color)
        right.bar(i, metric(report, ABLATION_METRICS[-1][1]) or 0, color=color)
    left.set_xticks(range(len(percent)), [name for name, _ in percent])
    left.set(ylabel="percent (higher is better)", title=f"the tiny preset, {steps} steps, one option changed at a time")
    left.legend(fontsize=8)
    right.set_xticks(range(len(rows)), [variant for variant, *_ in rows], rotation=60, ha="right", fontsize=8)
    right.set(ylabel="objects (lower is better)", title="counting MAE")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_ablations(steps=600, out="out/ablations", docs="docs"):
    """Train the tiny preset with one option changed at a time, evaluate each with eval.py, and write
    the table to docs/ablations.md and the bars to docs/ablations.png.

    Every run has the same seed (0), data (the synthetic set) and budget (`--steps`, batch 64), so a
    difference is the option's. The variants test: AnyReader (tiles at native resolution instead of
    one resized view), simple captions (one fixed D2C template instead of diverse ones), no dedup
    targets (a caption also true of another image in the batch counts as a negative for it), no count
    negatives (no false-count caption copies: count-aware training off), no augmentation (no box-aware
    flips, turns and crops). A variant whose flag train.py rejects is skipped, with a line saying so.
    Runs go to out/ablations/<variant>; one finished with the same train.py settings is reused, so an
    interrupted bench resumes.
    On a 2-core CPU the full bench (600 steps) takes about an hour: ~7 min training and ~1 min eval a run.
    """
    import contextlib
    import io
    import json

    import train
    rows = []
    for name, variant, flags in ABLATIONS:
        folder = ROOT / out / name
        try:  # what train.py will run with, its defaults included, to compare with a finished run's
            with contextlib.redirect_stderr(io.StringIO()) as complaint:
                settings = vars(train.parse_args(train_arguments(folder, steps, flags)))
        except SystemExit:  # argparse's usage and error, e.g. a flag train.py does not have yet
            print(f"ablations   {variant}: skipped, train.py says {complaint.getvalue().split('error: ')[-1].strip()}")
            continue
        if record := finished_run(folder, settings):
            print(f"ablations   {variant}: reusing the finished run in {folder}")
        else:
            print(f"ablations   {variant}: {steps} steps in {folder} ...", flush=True)
            record = ablation_run(folder, steps, flags, ROOT)
        report = json.loads((folder / "eval.json").read_text())
        rows.append((variant, flags, record["train_minutes"], report))
        print(f"ablations   {variant}: trained in {record['train_minutes']:.1f} min, "
              f"evaluated in {record['eval_minutes']:.1f} min")
    default = rows[0][3]
    rows.append(("untrained (default's start)", (), None, default["baselines"]["untrained"]))
    chance = (f"Chance: retrieval mean recall {default['retrieval']['chance_mean_recall']:.1f}, zero-shot "
              f"{default['zero_shot']['chance']:.1f}, counting accuracy {default['counting']['chance']:.1f} "
              f"and MAE {default['counting']['chance_mae']:.2f} (a uniform guess from 1-10).")
    text = (f"`python bench.py ablations --steps {steps}`: the tiny preset on the synthetic set, seed 0, "
            f"batch 64, {steps} steps, one option changed at a time; {torch.get_num_threads()} CPU threads, "
            f"torch {torch.__version__}. Percentages but counting MAE (objects); 16-shot is the mean over "
            f"eval.py's draws.\n\n{ablation_table(rows)}\n\n{chance}\n")
    print("\n" + text)
    docs = ROOT / docs
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "ablations.md").write_text(text)
    plot_ablations(rows, docs / "ablations.png", steps)
    print(f"ablations   wrote {docs / 'ablations.md'}, {docs / 'ablations.png'}")


SECTIONS = {"train_step": bench_train_step, "d2c": bench_d2c, "loading": bench_loading, "eval": bench_eval,
            "anyreader": bench_anyreader, "tiff": bench_tiff, "ablations": bench_ablations}
ON_REQUEST = ("ablations",)  # an hour of training: run only when named


def parse_args(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", metavar="section",
                   help=f"any of {', '.join(SECTIONS)}; none: all but {', '.join(ON_REQUEST)}")
    p.add_argument("--steps", type=int, default=600, help="ablations: training steps per variant")
    p.add_argument("--out", default="out/ablations", help="ablations: folder for the runs, one per variant")
    p.add_argument("--docs", default="docs", help="ablations: folder for ablations.md and ablations.png")
    args = p.parse_args(argv)
    if unknown := [name for name in args.sections if name not in SECTIONS]:
        p.error(f"unknown section {', '.join(unknown)}; the sections are {', '.join(SECTIONS)}")
    return args


if __name__ == "__main__":
    args = parse_args()
    for name in args.sections or [s for s in SECTIONS if s not in ON_REQUEST]:
        if name == "ablations":
            bench_ablations(args.steps, args.out, args.docs)
        else:
            SECTIONS[name]()
