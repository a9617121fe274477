"""Benchmarks: `python bench.py [section ...]`, sections listed in SECTIONS; no section runs them all.

Numbers depend on the machine; the README records what they were on a 2-core CPU.
"""
import sys
import time

import torch

from sarclip import CLIP, SIZES, CLIPConfig, clip_loss


def timed(step, warmup=3, repeats=10):
    """Seconds per call of step(), after a few warm-up calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def training_step(size, batch_size, device="cpu", dtype=None):
    """A function doing one training step of preset `size` (forward, symmetric loss, backward, AdamW)."""
    torch.manual_seed(0)
    cfg = CLIPConfig(**{**SIZES[size], "in_channels": 1})  # train.py's SAR models are single-channel
    model = CLIP(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(batch_size, 1, cfg.image_size, cfg.image_size, device=device)
    tokens = torch.randint(1, cfg.vocab_size - 2, (batch_size, cfg.context_length), device=device)
    tokens[:, 20] = cfg.vocab_size - 1  # end-of-text
    autocast = torch.autocast(device, dtype=dtype) if dtype else torch.autocast(device, enabled=False)

    def step():
        with autocast:
            loss = clip_loss(*model(images, tokens))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return step, model


def flops_per_pair(model):
    """Training FLOPs for one image-caption pair: 6 per weight per token (forward 2, backward 4), plus
    attention's T x T products (nanoGPT's estimate), summed over the two towers."""
    cfg, total = model.cfg, 0
    for tower, tokens, width, layers in ((model.visual, (cfg.image_size // cfg.patch_size) ** 2 + 1,
                                          cfg.vision_width, cfg.vision_layers),
                                         (model.transformer, cfg.context_length, cfg.text_width, cfg.text_layers)):
        weights = sum(p.numel() for p in tower.parameters())
        total += 6 * weights * tokens + 12 * layers * width * tokens ** 2
    return total


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, from NVIDIA's data sheets


def bench_train_step(batch_size=64):
    """Tiny preset on the CPU; with a GPU also b16 in bf16, with its model FLOP utilisation (MFU)."""
    step, _ = training_step("tiny", batch_size)
    seconds = timed(step)
    print(f"train_step  tiny, batch {batch_size}, CPU, {torch.get_num_threads()} threads: "
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
    """D2C captions per second on the synthetic scenes' records (5 diverse captions each)."""
    import d2c
    import data
    import synthetic
    entries = data.read_manifest(synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC)["scenes"])[:n_records]
    records = [{"width": e["width"], "height": e["height"], "objects": [{"category": b[4], "box": b[:4]} for b in e["boxes"]],
                "pixel_spacing": e.get("pixel_spacing"), "scene": e.get("scene")} for e in entries]
    start = time.perf_counter()
    for i, record in enumerate(records):
        d2c.captions(record, n=5, seed=i)
    seconds = time.perf_counter() - start
    print(f"d2c         {5 * len(records) / seconds:,.0f} captions/s ({len(records)} records, 5 captions each)")


def bench_loading(n_images=512, workers=(0, 1)):
    """Data loading images/s at the tiny preset's resolution: PNG decode, resize to 64 px, tokenise."""
    import data
    import synthetic
    from sarclip import Tokenizer
    manifest = synthetic.make_synthetic(synthetic.DEFAULT_SYNTHETIC)["scenes"]
    captions = [c for e in data.read_manifest(manifest) for c in e["captions"]]
    tokenizer = Tokenizer.train(captions, SIZES["tiny"]["vocab_size"], SIZES["tiny"]["context_length"])
    dataset = data.ManifestDataset(manifest, tokenizer, image_size=SIZES["tiny"]["image_size"], split="train")
    for n_workers in workers:
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n_images)), batch_size=64,
                                             num_workers=n_workers)
        start = time.perf_counter()
        for _ in loader:
            pass
        print(f"loading     {n_images / (time.perf_counter() - start):,.0f} images/s at 64 px, {n_workers} workers")


def bench_eval(checkpoint=None):
    """Feature extraction images/s and the wall time of all five evaluations (+ the untrained baseline).

    Uses `--checkpoint` out/ckpt.pt from `python train.py --size tiny` when it exists, else a fresh tiny model
    saved the way train.py saves one (the timing does not depend on what the weights learned).
    """
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

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
    print(f"eval        features: {evaluation.feature_throughput(model.eval()):,.0f} images/s (tiny, 64 px, batch 64)")
    start = time.perf_counter()
    evaluation.main(["--checkpoint", str(checkpoint), "--out", str(folder / "eval")])
    print(f"eval        five tasks + untrained baseline on the synthetic set: {time.perf_counter() - start:.1f} s")


# AnyReader's cost: one square image per side, each measurement in a fresh process (see anyreader_cell).
ANYREADER_SIDES = (224, 512, 1024, 2048, 4096, 8192)
ANYREADER_METHODS = ("plain resize", "AnyReader", "full-res ViT")
MAX_FULL_RES_TOKENS = 16384  # 1024 px at patch 8: past this the full-resolution ViT takes minutes a call


def resident_kb(field):
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in kB, from /proc (Linux)."""
    import re
    from pathlib import Path
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def anyreader_cell(method, side, max_tiles=4):
    """Prints {ms, mb, ...} for embedding one side x side image with the tiny preset, for bench_anyreader.

    Memory is the process's peak resident set during the first call, above what it held before (the
    model, the image, torch warmed up on one native-size image). Linux's clear_refs resets the peak, and
    a fresh process per cell keeps one method's freed memory from hiding the next one's. Time is the
    best of later calls (the fastest run is the least disturbed by whatever else the machine is doing).
    """
    import json
    from pathlib import Path

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
    from pathlib import Path
    root = Path(__file__).resolve().parent
    cells = {}
    for side in sides:
        for method in ANYREADER_METHODS:
            code = f"import bench; bench.anyreader_cell({method!r}, {side})"
            out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
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
    plot_anyreader_cost(cells, sides, root / plot)


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
    from pathlib import Path

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
    """Prints {seconds, mb, shape} for one data.load_sar_image(path, max_side=896), for bench_tiff.

    Memory is the peak resident set during the load above the resident set just before it (after the
    imports and a warm-up load of a small TIFF, so that lazy imports do not count; clear_refs resets the
    peak). A fresh process per file keeps one load's freed memory from hiding the next one's growth.
    """
    import json
    from pathlib import Path

    import data
    data.load_sar_image(scene_tiff(256), max_side=64)
    Path("/proc/self/clear_refs").write_text("5")  # peak resident set := resident set now
    before = resident_kb("VmRSS")
    start = time.perf_counter()
    image = data.load_sar_image(path, max_side=max_side)
    seconds, mb = time.perf_counter() - start, (resident_kb("VmHWM") - before) / 1024
    print(json.dumps({"seconds": seconds, "mb": mb, "shape": list(image.shape)}))


def bench_tiff(sides=TIFF_SIDES):
    """Time and peak memory of data.load_sar_image(max_side=896) on tiled deflate uint16 TIFFs, 1k to
    16k a side, and on one uncompressed striped 8k TIFF: a reader that multi-looks tile by tile keeps
    memory flat whatever the file size. Files come from the page cache (just written or read before)."""
    import json
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent
    scene_tiff(256)  # the warm-up file every cell loads first
    files = [(side, tiled, scene_tiff(side, tiled)) for side, tiled in [(s, True) for s in sides] + [(8192, False)]]
    print("tiff        data.load_sar_image(path, max_side=896), one load per fresh process; "
          "peak MB above the process before the load\n")
    print("| TIFF | side (px) | megapixels | file MB (raw MB) | load s | peak MB | output |\n" + "|---" * 7 + "|")
    for side, tiled, path in files:
        code = f"import bench; bench.tiff_cell({str(path)!r})"
        out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
        cell = json.loads(out.stdout.splitlines()[-1])
        layout = "256x256 tiles, deflate" if tiled else "strips, uncompressed"
        print(f"| {layout} | {side} | {side * side / 1e6:,.0f} | {path.stat().st_size / 1e6:,.0f} "
              f"({2 * side * side / 1e6:,.0f}) | {cell['seconds']:.2f} | {cell['mb']:,.0f} | "
              f"{'x'.join(map(str, cell['shape']))} |")


SECTIONS = {"train_step": bench_train_step, "d2c": bench_d2c, "loading": bench_loading, "eval": bench_eval,
            "anyreader": bench_anyreader, "tiff": bench_tiff}

if __name__ == "__main__":
    unknown = [name for name in sys.argv[1:] if name not in SECTIONS]
    if unknown:
        sys.exit(f"bench.py: unknown section {', '.join(unknown)}; the sections are {', '.join(SECTIONS)}")
    for name in sys.argv[1:] or SECTIONS:
        SECTIONS[name]()
