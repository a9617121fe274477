"""AnyReader: read a SAR image of any size and aspect with CLIP's low-resolution image tower.

A ViT learns its position embeddings for one square size (224 px for OpenAI's, 64 for tiny), and
squeezing an 800 x 800 HRSID scene or a 1:8 Sentinel-1 strip into that square averages a ten-pixel
ship away. AnyReader instead
  1. chooses a grid of rows x cols tiles whose aspect fits the image (`choose_grid`),
  2. resizes the image onto that grid and cuts it into native-size tiles (`tile_image`), and adds
     one global view: the whole image at native size, as plain CLIP would see it,
  3. encodes the views of a whole batch as one batch of native-size images (the encoder never sees
     a size it was not trained on), and
  4. fuses the tiles into the global view's embedding with an attention pooling that knows where
     each tile sits (`AttentionFusion`), or with a plain mean, the baseline (`MeanFusion`).
The fusion starts as the identity on the global view, so a fresh AnyReader embeds every image
exactly as CLIP embeds its resized global view, and fine-tuning starts where CLIP is. Its weights
are saved under the prefix 'anyreader.', so the OpenAI-layout CLIP keys of a checkpoint stay as they are.

    reader = AnyReader(clip, max_tiles=4)                  # fusion="mean" for the baseline
    embeddings = reader([scene, strip])                    # [C, H, W] each, any sizes -> [2, embed_dim]
    checkpoint = {**clip.state_dict(), **reader.fusion_state_dict()}
    reader.load_fusion_state_dict(checkpoint)              # CLIP's keys are ignored
    side = largest_useful_side(clip.cfg.image_size, 4)     # a loader need not decode more than this
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from sarclip import load_weights

PREFIX = "anyreader."   # checkpoint keys of the fusion; load_clip skips them
BAND_PIXELS = 1 << 22   # shrink_for_canvas converts at most this many pixels a channel to float at once


# ----------------------------------------------------------------------------- grids and tiles

def choose_grid(height, width, max_tiles, tile_size=224):
    """The (rows, cols) of tiles, rows * cols <= max_tiles, that keeps most of the image and wastes least.

    Each grid has a canvas of rows*S x cols*S pixels (height x width, S = tile_size). Fit the image into
    it, aspect kept:
      kept   = the fitted image's area, but at most the image's own area (upscaling adds no detail),
      wasted = canvas area - kept (pixels the encoder pays for that carry nothing new).
    The grid with the largest kept - wasted wins; on a tie, the one with fewer tiles (then fewer rows).
    Example, an 800 x 800 HRSID scene, S = 224, max_tiles = 4:
      1 x 1  canvas 224 x 224  fits 224 x 224  kept  50,176  wasted       0  score  50,176
      1 x 2  canvas 224 x 448  fits 224 x 224  kept  50,176  wasted  50,176  score       0
      2 x 2  canvas 448 x 448  fits 448 x 448  kept 200,704  wasted       0  score 200,704  <- chosen
    A 300 x 300 image stays 1 x 1: on 2 x 2 it would keep its 90,000 pixels but waste 110,704.
    """
    if min(height, width) < 1 or max_tiles < 1:
        raise ValueError(f"need an image of at least 1 x 1 pixels and max_tiles >= 1, got "
                         f"{height} x {width} and max_tiles={max_tiles}")
    best, best_key = None, None
    for rows in range(1, max_tiles + 1):
        for cols in range(1, max_tiles // rows + 1):
            scale = min(rows * tile_size / height, cols * tile_size / width)  # fit inside, aspect kept
            kept = min(scale * scale, 1.0) * height * width
            wasted = rows * cols * tile_size ** 2 - kept
            key = (kept - wasted, -rows * cols, -rows)
            if best_key is None or key > best_key:
                best, best_key = (rows, cols), key
    return best


def resize(image, height, width):
    """[C, H, W] -> [C, height, width], bilinear and antialiased (as CLIP's preprocessing); no-op at size."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]


def tile_image(image, grid, tile_size):
    """[C, H, W] -> (tiles [rows*cols, C, S, S] in reading order, their (row, col) positions [rows*cols, 2]).

    The image is stretched onto the grid's canvas of rows*S x cols*S: choose_grid picked the grid whose
    aspect fits, so the only distortion is the rounding of the image's aspect to whole tiles.
    """
    (rows, cols), S, C = grid, tile_size, image.shape[0]
    canvas = resize(image, rows * S, cols * S)  # [C, rows*S, cols*S]
    tiles = canvas.reshape(C, rows, S, cols, S).permute(1, 3, 0, 2, 4)  # [rows, cols, C, S, S]
    positions = torch.cartesian_prod(torch.arange(rows), torch.arange(cols))  # [rows*cols, 2], reading order
    return tiles.reshape(rows * cols, C, S, S), positions


def largest_useful_side(image_size, max_tiles):
    """The longest side worth decoding for AnyReader: no grid is longer than max_tiles tiles.

    A loader may shrink an image (aspect kept) until its longer side is this: every grid's fitted image
    is then still no larger than the image, so choose_grid picks the same grid (tested), and only an
    image more elongated than 1:max_tiles loses some detail along its short side.
    """
    return image_size * max_tiles


def shrink_for_canvas(image, height, width):
    """Average fy x fx blocks of a huge [C, H, W] image, the largest whole factors that keep it >= height x width.

    Block averaging (area downsampling; on SAR intensity, multi-looking, whose looks in range and azimuth
    may differ too) brings an 8192-px scene down to less than twice the canvas a side, so the canvas and
    the global view are then resized from a small image. The factors may differ between the axes: the
    canvas is stretched to the grid's aspect anyway. It runs band by band, so an 8-bit scene is never
    copied whole as float: memory stays bounded whatever the size. Integer images come back as float,
    their values unscaled; fewer than fy rows and fx columns are cut at the bottom and right edges.
    """
    C, H, W = image.shape
    fy, fx = max(1, H // height), max(1, W // width)
    if fy * fx == 1:
        return image.float()
    H, W = H - H % fy, W - W % fx
    band = fy * max(1, BAND_PIXELS // (fy * W))  # rows per band, a whole number of blocks
    pooled = [F.avg_pool2d(image[None, :, y:y + band, :W].float(), (fy, fx))[0] for y in range(0, H, band)]
    return torch.cat(pooled, dim=1)  # [C, H // fy, W // fx]


# ----------------------------------------------------------------------------- fusion

class AttentionFusion(nn.Module):
    """Attention pooling of the tiles, queried by the global view; each key knows its tile's position."""

    def __init__(self, dim, table=4):
        super().__init__()
        # Positions are a small 2-D table interpolated to each grid (as the ViT does with its patch
        # positions), so one table serves 1 x 4 strips and 2 x 2 squares, and any max_tiles.
        self.position = nn.Parameter(0.02 * torch.randn(dim, table, table))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.gate = nn.Parameter(torch.zeros(()))  # 0 at start: the output is the global view, exactly

    def forward(self, global_view, tiles, grid):
        """global_view [D], tiles [rows*cols, D] in reading order -> one embedding [D]."""
        D = global_view.shape[-1]
        position = F.interpolate(self.position[None], size=grid, mode="bilinear", align_corners=False)[0]
        position = position.flatten(1).t()  # [D, rows, cols] -> [rows*cols, D], reading order like the tiles
        # Directions, not lengths, carry CLIP's meaning (it compares cosines), so keys and query are
        # made from unit vectors: the attention's sharpness does not depend on the embeddings' norms.
        query = self.query(F.normalize(global_view, dim=-1))  # [D]
        keys = self.key(F.normalize(tiles, dim=-1) + position)  # [rows*cols, D]
        weights = (keys @ query / D ** 0.5).softmax(dim=0)  # [rows*cols], sums to 1
        pooled = weights @ tiles  # [D], a weighted mean of tile embeddings: still in CLIP's space
        return global_view + self.gate * (pooled - global_view)


class MeanFusion(nn.Module):
    """The baseline: the plain mean of the global view and every tile; no parameters."""

    def forward(self, global_view, tiles, grid):
        return torch.cat([global_view[None], tiles]).mean(dim=0)


# ----------------------------------------------------------------------------- AnyReader

class AnyReader(nn.Module):
    """Embeds images of any sizes with clip's image tower: tiles + a global view, fused. Like encode_image."""

    def __init__(self, clip, max_tiles=4, fusion="attention", chunk_size=64):
        super().__init__()
        if fusion not in ("attention", "mean"):
            raise ValueError(f"fusion must be 'attention' or 'mean', got {fusion!r}")
        self.clip, self.max_tiles, self.chunk_size = clip, max_tiles, chunk_size
        self.tile_size, self.channels = clip.cfg.image_size, clip.cfg.in_channels
        self.fusion = AttentionFusion(clip.cfg.embed_dim) if fusion == "attention" else MeanFusion()

    def views(self, image):
        """[C, H, W] -> (views [1 + tiles, C, S, S]: the global view, then the tiles in reading order; grid)."""
        S = self.tile_size
        rows, cols = grid = choose_grid(image.shape[1], image.shape[2], self.max_tiles, S)
        image = shrink_for_canvas(image, rows * S, cols * S)
        global_view = resize(image, S, S)[None]  # [1, C, S, S]: the whole image, as plain CLIP reads it
        if grid == (1, 1):
            return global_view, grid  # the one tile would be the global view: encode it once
        tiles, _ = tile_image(image, grid, S)  # [rows*cols, C, S, S]
        return torch.cat([global_view, tiles]), grid

    def encode_views(self, views):
        """[V, C, S, S] -> [V, embed_dim], at most chunk_size views through the encoder at once."""
        return torch.cat([self.clip.encode_image(views[i:i + self.chunk_size])
                          for i in range(0, len(views), self.chunk_size)])

    def forward(self, images):
        """A list of B images [C, H, W] of any sizes -> embeddings [B, embed_dim], as encode_image gives."""
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != self.channels:
                raise ValueError(f"image {i}: expected [{self.channels}, H, W], got {list(image.shape)}")
        prepared = [self.views(image) for image in images]
        counts = [len(views) for views, _ in prepared]
        # Every view of every image is a native-size image, whatever its grid: one batch for the encoder.
        embeddings = self.encode_views(torch.cat([views for views, _ in prepared]))  # [sum(counts), D]
        fused = []
        for views, (_, grid) in zip(embeddings.split(counts), prepared):  # views [1 + tiles, D]
            tiles = views[1:] if len(views) > 1 else views  # a 1 x 1 grid's tile is the global view
            fused.append(self.fusion(views[0], tiles, grid))
        return torch.stack(fused)  # [B, D]

    def fusion_state_dict(self):
        """The fusion's weights as checkpoint entries {'anyreader.<name>': tensor}, beside CLIP's keys."""
        return {PREFIX + k: v for k, v in self.fusion.state_dict().items()}

    def load_fusion_state_dict(self, state_dict, name="checkpoint"):
        """Load the fusion from a checkpoint's 'anyreader.' keys (CLIP's are ignored) or from its own keys.

        A fusion that does not fit (another embed_dim, 'mean' against 'attention', none saved) raises
        a ValueError naming every missing, extra and mis-shaped tensor.
        """
        own = {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
        if not own:  # already stripped of the prefix (or nothing saved): everything that is not CLIP's
            clip_keys = self.clip.state_dict().keys()
            own = {k: v for k, v in state_dict.items() if k not in clip_keys}
        load_weights(self.fusion, own, f"{name}: AnyReader's {type(self.fusion).__name__} ('{PREFIX}' keys)")
        return self


# ----------------------------------------------------------------------------- the figure

def draw_grids(path, max_tiles=6, tile_size=224):
    """docs/anyreader_grids.png: the grid chosen for one SAR scene cut to a few aspects."""
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    found = sorted((Path(__file__).resolve().parent.parent / "shared/sar/sar_aircraft_mini/JPEGImages").glob("*.jpg"))
    if found:  # the largest real scene; a user's checkout without ../shared gets synthetic speckle
        source = max(found, key=lambda p: Image.open(p).size[0])
        scene, name = np.asarray(Image.open(source).convert("L"), dtype=np.float32), f"SAR-Aircraft {source.name}"
    else:
        scene, name = np.random.default_rng(0).gamma(1.0, 40.0, (1500, 1500)).astype(np.float32), "synthetic speckle"
    scene = np.clip(scene / np.percentile(scene, 99.5), 0, 1) ** 0.6  # display stretch: SAR is mostly dark
    side = min(scene.shape)
    crops = {"1:1": scene[:side, :side], "16:9": scene[:side * 9 // 16, :side], "1:3 (tall)": scene[:side, :side // 3],
             "small 1:1": scene[:300, :300], "4:1 (strip)": scene[:side // 4, :side]}  # aspects are width:height
    fig, axes = plt.subplot_mosaic([["1:1", "16:9", "1:3 (tall)", "small 1:1"], ["4:1 (strip)"] * 4],
                                   figsize=(16, 9), height_ratios=[2, 1], layout="constrained")
    for label, crop in crops.items():
        (H, W), ax = crop.shape, axes[label]
        rows, cols = choose_grid(H, W, max_tiles, tile_size)
        ax.imshow(crop, cmap="gray", vmin=0, vmax=1, extent=(0, W, H, 0))
        for c in range(1, cols):
            ax.axvline(c * W / cols, color="cyan", lw=2)
        for r in range(1, rows):
            ax.axhline(r * H / rows, color="cyan", lw=2)
        for r in range(rows):
            for c in range(cols):
                ax.text((c + 0.5) * W / cols, (r + 0.5) * H / rows, f"({r}, {c})", color="cyan", ha="center",
                        va="center", fontsize=11, bbox=dict(facecolor="black", alpha=0.6, edgecolor="none"))
        canvas = "more tiles would only upscale it" if (rows, cols) == (1, 1) else \
            f"canvas {cols * tile_size} x {rows * tile_size} px"
        ax.set_title(f"{label}: {W} x {H} px -> {rows} x {cols} grid\n{canvas}")
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    fig.suptitle(f"AnyReader's grids over {name} (at most {max_tiles} tiles of {tile_size} px, plus one global "
                 "view of the whole image)\nsizes are width x height, grids rows x cols; the image is stretched "
                 "onto the canvas and cut at the cyan lines")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Draw AnyReader's grids over a SAR scene.")
    parser.add_argument("--figure", default="docs/anyreader_grids.png", help="where to save the PNG")
    parser.add_argument("--max-tiles", type=int, default=6)
    parser.add_argument("--tile-size", type=int, default=224)
    args = parser.parse_args()
    draw_grids(args.figure, args.max_tiles, args.tile_size)
    print(f"saved {args.figure}")
