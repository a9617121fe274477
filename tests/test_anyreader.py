"""AnyReader: grid choice, tiling, exactness against plain CLIP, batching, gradients, checkpoints."""
import itertools
from dataclasses import asdict

import pytest
import torch

from anyreader import (AnyReader, choose_grid, largest_useful_side, resize, shrink_for_canvas,
                       tile_image)
from sarclip import CLIP, CLIPConfig, load_clip


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    return CLIP(CLIPConfig(embed_dim=16, image_size=32, patch_size=8, in_channels=1, vision_width=32,
                           vision_layers=1, vision_heads=2, context_length=8, vocab_size=50, text_width=16,
                           text_layers=1, text_heads=2)).eval()


def score(height, width, grid, S):
    """choose_grid's documented rule, written out again: kept - wasted pixels on the grid's canvas."""
    rows, cols = grid
    scale = min(rows * S / height, cols * S / width)
    kept = min(scale * scale * height * width, height * width)
    return kept - (rows * cols * S * S - kept)


# ----------------------------------------------------------------------------- choose_grid

@pytest.mark.parametrize("height, width, max_tiles, grid", [
    (800, 800, 4, (2, 2)),        # the docstring's example: an HRSID scene
    (800, 800, 1, (1, 1)),        # one tile allowed: plain CLIP
    (20000, 20000, 6, (2, 2)),    # huge square: 2 x 3 would keep no more and waste a column
    (20000, 20000, 9, (3, 3)),
    (1080, 1920, 6, (2, 3)),      # 16:9 -> 2 x 3 (aspect 1.5 is the closest a 6-tile budget allows)
    (1080, 1920, 4, (1, 2)),
    (224, 1792, 8, (1, 8)),       # a 1:8 strip fits a 1 x 8 canvas exactly: nothing wasted
    (256, 2048, 6, (1, 6)),       # the same strip on a smaller budget: as long as the budget goes
    (2048, 256, 6, (6, 1)),       # ... and standing up
    (32, 32, 6, (1, 1)),          # tiny: more tiles would only upscale it
    (20, 200, 6, (1, 1)),         # a tiny strip too
    (300, 300, 6, (1, 1)),        # the docstring's 300 x 300: 2 x 2 would waste 110,704 pixels
    (400, 400, 6, (2, 2)),        # ... while at 400 x 400 the second row and column pay for themselves
])
def test_choose_grid_examples(height, width, max_tiles, grid):
    assert choose_grid(height, width, max_tiles, tile_size=224) == grid


def test_choose_grid_follows_its_documented_rule():
    """On many sizes and aspects, no other grid within the budget scores higher; ties go to fewer tiles."""
    sides = [1, 17, 100, 224, 300, 449, 800, 1080, 1920, 5000, 30000]
    for height, width, max_tiles in itertools.product(sides, sides, [1, 2, 4, 6, 9]):
        grid = choose_grid(height, width, max_tiles, tile_size=224)
        assert grid[0] * grid[1] <= max_tiles
        best = score(height, width, grid, 224)
        for rows in range(1, max_tiles + 1):
            for cols in range(1, max_tiles // rows + 1):
                other = score(height, width, (rows, cols), 224)
                assert other <= best + 1e-6 * height * width
                if abs(other - best) <= 1e-6 * height * width:
                    assert grid[0] * grid[1] <= rows * cols
        assert choose_grid(width, height, max_tiles, tile_size=224) == grid[::-1]  # transposed image, grid


def test_choose_grid_rejects_empty_images():
    with pytest.raises(ValueError, match="at least 1 x 1"):
        choose_grid(0, 100, 4)


# ----------------------------------------------------------------------------- tiles

def test_tiles_at_their_positions_rebuild_the_resized_image():
    torch.manual_seed(0)
    image = torch.rand(2, 90, 250)
    tiles, positions = tile_image(image, (2, 3), tile_size=32)
    assert tiles.shape == (6, 2, 32, 32)
    assert positions.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]  # reading order
    canvas = torch.zeros(2, 64, 96)
    for tile, (row, col) in zip(tiles, positions.tolist()):
        canvas[:, row * 32:(row + 1) * 32, col * 32:(col + 1) * 32] = tile
    assert torch.equal(canvas, resize(image, 64, 96))


def test_shrink_for_canvas_averages_whole_blocks():
    image = torch.arange(12 * 20, dtype=torch.uint8).reshape(1, 12, 20)  # values 0..239, row-major
    small = shrink_for_canvas(image, 5, 6)  # blocks of 12 // 5 = 2 rows by 20 // 6 = 3 columns
    assert small.shape == (1, 6, 6) and small.dtype == torch.float32  # 2 columns cut at the right edge
    assert small[0, 0, 0].item() == (0 + 1 + 2 + 20 + 21 + 22) / 6  # the top-left block, values unscaled
    assert shrink_for_canvas(image, 7, 11).shape == (1, 12, 20)  # both factors 1: nothing to gain
    assert shrink_for_canvas(torch.rand(1, 10, 4000), 10, 40).shape == (1, 10, 40)  # a strip: one axis


def test_shrink_for_canvas_is_band_by_band_exact(monkeypatch):
    import anyreader
    torch.manual_seed(0)
    image = torch.rand(1, 1000, 700)
    whole = shrink_for_canvas(image, 64, 64)  # blocks of 15 x 10
    monkeypatch.setattr(anyreader, "BAND_PIXELS", 7000)  # now bands of one block row: 66 bands
    assert torch.allclose(shrink_for_canvas(image, 64, 64), whole, atol=1e-6)
    assert whole.shape == (1, 66, 70)


def test_largest_useful_side_keeps_every_grid():
    """Shrinking the longer side to largest_useful_side never changes the grid choose_grid picks."""
    S, max_tiles = 32, 6
    limit = largest_useful_side(S, max_tiles)
    assert limit == 192
    for height, width in itertools.product([200, 500, 1000, 3000, 9000], repeat=2):
        scale = min(1.0, limit / max(height, width))
        small = max(1, round(height * scale)), max(1, round(width * scale))
        assert choose_grid(*small, max_tiles, S) == choose_grid(height, width, max_tiles, S), (height, width)


# ----------------------------------------------------------------------------- AnyReader

def test_native_size_with_one_tile_is_exactly_plain_clip():
    clip = tiny_clip()
    images = torch.rand(3, 1, 32, 32)
    reader = AnyReader(clip, max_tiles=1)
    with torch.no_grad():
        assert torch.equal(reader(list(images)), clip.encode_image(images))
        reader.fusion.gate.fill_(0.9)  # even trained: a 1 x 1 grid's only tile is the global view itself
        assert torch.equal(reader(list(images)), clip.encode_image(images))


def test_a_fresh_reader_returns_the_global_view():
    """The fusion's gate starts at 0: any image embeds as CLIP embeds its global view (the whole image at 32 px)."""
    clip = tiny_clip()
    reader = AnyReader(clip, max_tiles=4)
    image = torch.rand(1, 70, 140)  # a 1 x 2 grid: three views
    views, grid = reader.views(image)
    assert grid == (1, 2) and views.shape == (3, 1, 32, 32)
    with torch.no_grad():
        fused = reader([image])
        assert torch.allclose(fused, clip.encode_image(views[:1]), atol=1e-5)
        reader.fusion.gate.fill_(1.0)
        assert not torch.allclose(reader([image]), fused, atol=1e-3)  # a trained gate lets tiles in


def test_mean_fusion_is_the_plain_average_of_views():
    clip = tiny_clip()
    reader = AnyReader(clip, max_tiles=4, fusion="mean")
    image = torch.rand(1, 64, 64)  # 2 x 2 grid: global + 4 tiles
    with torch.no_grad():
        views, _ = reader.views(image)
        assert torch.allclose(reader([image])[0], clip.encode_image(views).mean(0), atol=1e-6)
    assert reader.fusion_state_dict() == {}


def test_mixed_grids_in_one_batch_match_one_image_at_a_time():
    clip = tiny_clip()
    reader = AnyReader(clip, max_tiles=4, chunk_size=3)  # chunks cut across images
    with torch.no_grad():
        reader.fusion.gate.fill_(0.7)  # a trained-looking fusion, so tiles and positions matter
    sizes = [(32, 32), (64, 128), (100, 40), (20, 300), (96, 96), (33, 31)]
    images = [torch.rand(1, h, w) for h, w in sizes]
    assert [reader.views(im)[1] for im in images] == [(1, 1), (1, 2), (3, 1), (1, 1), (2, 2), (1, 1)]
    encoded = []  # batch sizes the encoder sees
    encode_image = clip.encode_image
    clip.encode_image = lambda views: encoded.append(len(views)) or encode_image(views)
    with torch.no_grad():
        together = reader(images)
        assert encoded == [3, 3, 3, 3, 3]  # 1 + 3 + 4 + 1 + 5 + 1 = 15 views, never more than 3 at once
        alone = torch.cat([reader([im]) for im in images])
    assert together.shape == (6, 16)
    assert torch.allclose(together, alone, atol=1e-5)


def test_gradients_reach_the_fusion_and_the_encoder():
    clip = tiny_clip()
    reader = AnyReader(clip, max_tiles=4).train()
    images = [torch.rand(1, 64, 64), torch.rand(1, 40, 90)]
    reader(images).pow(2).sum().backward()
    assert reader.fusion.gate.grad.abs() > 0  # at init only the gate can move the output
    assert clip.visual.conv1.weight.grad.abs().sum() > 0
    with torch.no_grad():
        reader.fusion.gate.fill_(0.5)
    reader.zero_grad()
    reader(images).pow(2).sum().backward()
    for name, p in reader.fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert clip.visual.conv1.weight.grad.abs().sum() > 0


def test_wrong_channels_and_unknown_fusion_are_clear_errors():
    reader = AnyReader(tiny_clip())
    with pytest.raises(ValueError, match=r"image 1: expected \[1, H, W\], got \[3, 40, 40\]"):
        reader([torch.rand(1, 40, 40), torch.rand(3, 40, 40)])
    with pytest.raises(ValueError, match="fusion must be .attention. or .mean., got .max."):
        AnyReader(tiny_clip(), fusion="max")


def test_huge_image_reads_through_a_shrunk_canvas():
    reader = AnyReader(tiny_clip(), max_tiles=4)
    image = torch.rand(1, 3000, 1500)  # 1:2 standing up -> 2 x 1 grid, canvas 64 x 32
    views, grid = reader.views(image)
    assert grid == (2, 1) and views.shape == (3, 1, 32, 32)
    with torch.no_grad():
        assert reader([image]).shape == (1, 16)


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_keeps_clip_keys_and_adds_the_fusion_under_its_prefix():
    clip = tiny_clip()
    reader = AnyReader(clip, max_tiles=4)
    with torch.no_grad():
        reader.fusion.gate.fill_(0.3)
    own = reader.fusion_state_dict()
    assert sorted(own) == ["anyreader.gate", "anyreader.key.bias", "anyreader.key.weight",
                           "anyreader.position", "anyreader.query.bias", "anyreader.query.weight"]
    checkpoint = {"model": {**clip.state_dict(), **own}, "config": asdict(clip.cfg)}  # as train.py saves it

    clip_again = load_clip(checkpoint)  # CLIP's loader skips the 'anyreader.' keys
    reader_again = AnyReader(clip_again, max_tiles=4).load_fusion_state_dict(checkpoint["model"])
    images = [torch.rand(1, 64, 64), torch.rand(1, 50, 30)]
    with torch.no_grad():
        assert torch.allclose(reader_again(images), reader(images), atol=1e-6)
    stripped = {k.removeprefix("anyreader."): v for k, v in own.items()}  # eval.py strips the prefix first
    AnyReader(clip_again).load_fusion_state_dict(stripped)


def test_a_fusion_that_does_not_fit_is_a_clear_error():
    clip = tiny_clip()
    with pytest.raises(ValueError, match="missing gate"):  # a plain CLIP checkpoint: nothing saved
        AnyReader(clip).load_fusion_state_dict(clip.state_dict())
    with pytest.raises(ValueError, match="unexpected gate"):  # attention weights into the mean baseline
        AnyReader(clip, fusion="mean").load_fusion_state_dict(AnyReader(clip).fusion_state_dict())
    bigger = AnyReader(CLIP(CLIPConfig(embed_dim=24, image_size=32, patch_size=8, in_channels=1,
                                       vision_width=32, vision_layers=1, vision_heads=2, context_length=8,
                                       vocab_size=50, text_width=16, text_layers=1, text_heads=2)))
    with pytest.raises(ValueError, match=r"query.weight: checkpoint \(24, 24\), model \(16, 16\)"):
        AnyReader(clip).load_fusion_state_dict(bigger.fusion_state_dict())


def test_figure_without_shared_falls_back_to_synthetic(tmp_path, monkeypatch):
    import anyreader
    monkeypatch.setattr(anyreader, "__file__", str(tmp_path / "nowhere" / "anyreader.py"))
    anyreader.draw_grids(tmp_path / "grids.png", max_tiles=4, tile_size=64)
    assert (tmp_path / "grids.png").stat().st_size > 10_000
