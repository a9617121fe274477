"""sarclip.py: the CLIP model, its loss, checkpoint loading and the tokenizer."""
import io
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sarclip import CLIP, OPENAI_PIXEL_MEAN, OPENAI_PIXEL_STD, SIZES, CLIPConfig, Tokenizer, clip_loss, load_clip

SMALL = dict(embed_dim=16, image_size=32, patch_size=8, in_channels=3, vision_width=32, vision_layers=2,
             vision_heads=4, context_length=12, vocab_size=100, text_width=24, text_layers=2, text_heads=2)


def small_model(seed=0, **changes):
    torch.manual_seed(seed)
    return CLIP(CLIPConfig(**{**SMALL, **changes})).eval()


def random_tokens(n, cfg, seed=0):
    """Captions of random length: start, random ids, end-of-text (the largest id), zero padding."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, cfg.context_length, dtype=torch.long)
    for row in tokens:
        length = int(torch.randint(0, cfg.context_length - 1, (1,), generator=g))
        row[0] = cfg.vocab_size - 2
        row[1:length + 1] = torch.randint(1, cfg.vocab_size - 2, (length,), generator=g)
        row[length + 1] = cfg.vocab_size - 1
    return tokens


# ----------------------------------------------------------------------------- parity with independent code

def reference_features(state_dict, cfg, images, tokens):
    """An independent CLIP forward pass: torch's own nn.MultiheadAttention over the same weights."""
    def transformer(x, prefix, heads, mask=None):
        layers = sum(k.startswith(prefix) and k.endswith("attn.in_proj_weight") for k in state_dict)
        for i in range(layers):
            p = lambda name: state_dict[f"{prefix}{i}.{name}"]
            attn = nn.MultiheadAttention(x.shape[-1], heads, batch_first=True)
            attn.load_state_dict({k: p(f"attn.{k}") for k in attn.state_dict()})
            h = F.layer_norm(x, x.shape[-1:], p("ln_1.weight"), p("ln_1.bias"))
            x = x + attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            h = F.layer_norm(x, x.shape[-1:], p("ln_2.weight"), p("ln_2.bias"))
            h = F.linear(h, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))
            x = x + F.linear(h * torch.sigmoid(1.702 * h), p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
        return x

    s = state_dict
    x = F.conv2d(images, s["visual.conv1.weight"], stride=cfg.patch_size).flatten(2).transpose(1, 2)
    x = torch.cat([s["visual.class_embedding"].expand(len(x), 1, -1), x], 1) + s["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], s["visual.ln_pre.weight"], s["visual.ln_pre.bias"])
    x = transformer(x, "visual.transformer.resblocks.", cfg.vision_heads)
    image = F.layer_norm(x[:, 0], x.shape[-1:], s["visual.ln_post.weight"], s["visual.ln_post.bias"]) @ s["visual.proj"]

    L = tokens.shape[1]
    causal = torch.full((L, L), float("-inf")).triu(1)
    x = s["token_embedding.weight"][tokens] + s["positional_embedding"]
    x = transformer(x, "transformer.resblocks.", cfg.text_heads, causal)
    x = F.layer_norm(x, x.shape[-1:], s["ln_final.weight"], s["ln_final.bias"])
    text = x[torch.arange(len(x)), tokens.argmax(-1)] @ s["text_projection"]
    return image, text


def test_reproduces_the_shared_reference_features(shared):
    ref = torch.load(shared / "clip" / "tiny_reference.pt", weights_only=True)
    model = CLIP(CLIPConfig(**ref["config"])).eval()
    model.load_state_dict(ref["state_dict"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(ref["images"]), ref["image_features"], atol=1e-4, rtol=0)
        torch.testing.assert_close(model.encode_text(ref["tokens"]), ref["text_features"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("changes", [{}, dict(vision_heads=2, text_heads=3, patch_size=4),
                                     dict(in_channels=1, vision_layers=3, text_layers=1, embed_dim=8)])
def test_matches_torch_multihead_attention_for_other_configs(changes):
    model = small_model(seed=1, **changes)
    cfg = model.cfg
    images = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    tokens = random_tokens(3, cfg)
    with torch.no_grad():
        image, text = reference_features(model.state_dict(), cfg, images, tokens)
        torch.testing.assert_close(model.encode_image(images), image, atol=1e-4, rtol=0)
        torch.testing.assert_close(model.encode_text(tokens), text, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- sizes

PUBLISHED_PARAMETERS = {"b32": 151_277_313, "b16": 149_620_737, "l14": 427_616_513}  # OpenAI's model card


@pytest.mark.parametrize("size", ["b32", "b16", "l14"])
def test_openai_presets_have_the_published_parameter_counts_and_shapes(size):
    with torch.device("meta"):  # no memory is allocated: the suite stays fast
        model = CLIP(CLIPConfig(**SIZES[size]))
        cfg = model.cfg
        images = torch.empty(2, 3, cfg.image_size, cfg.image_size)
        tokens = torch.zeros(2, cfg.context_length, dtype=torch.long)
        image_features, text_features, scale = model(images, tokens)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[size]
    assert image_features.shape == text_features.shape == (2, cfg.embed_dim)


def test_tiny_preset_is_small_single_channel_and_runs():
    model = CLIP(CLIPConfig(**SIZES["tiny"]))
    assert sum(p.numel() for p in model.parameters()) == 4_426_753  # 4.4M: README's preset table
    cfg = model.cfg
    image_features, text_features, scale = model(torch.rand(2, 1, 64, 64), random_tokens(2, cfg))
    assert image_features.shape == text_features.shape == (2, cfg.embed_dim)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(2))
    assert scale.item() == pytest.approx(1 / 0.07)


def test_tiny16_is_tiny_reading_the_same_image_in_16_tokens_and_four_layers():
    tiny, tiny16 = CLIP(CLIPConfig(**SIZES["tiny"])), CLIP(CLIPConfig(**SIZES["tiny16"]))
    assert {**SIZES["tiny16"], "patch_size": 8, "vision_layers": 6} == SIZES["tiny"]
    # [1, 64, 64] pixels -> a 4 x 4 grid of 16-px patches: 16 tokens and the class token, not 64 + 1
    assert tiny16.visual.positional_embedding.shape == (4 * 4 + 1, 192)
    assert tiny.visual.positional_embedding.shape == (8 * 8 + 1, 192)
    assert len(tiny16.visual.transformer.resblocks) == 4 and len(tiny.visual.transformer.resblocks) == 6
    # the patch embedding is 4x larger (16 x 16 pixels a token), the positions 48 tokens smaller, and
    # two residual blocks of width 192 fewer (attention 4 x 192^2 + 4 x 192, MLP 8 x 192^2 + 5 x 192,
    # two layer norms 4 x 192)
    added = 192 * (16 * 16 - 8 * 8) - 192 * (65 - 17)
    block = 12 * 192 ** 2 + (4 + 5 + 4) * 192
    assert sum(p.numel() for p in tiny16.parameters()) == 4_426_753 + added - 2 * block == 3_564_673  # README's preset table
    image_features = tiny16.encode_image(torch.rand(2, 1, 64, 64))
    assert image_features.shape == (2, 128)


def test_state_dict_is_exactly_openai_layout():
    keys = set(small_model().state_dict())
    assert {"visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj",
            "visual.transformer.resblocks.1.attn.in_proj_weight", "visual.transformer.resblocks.1.mlp.c_fc.bias",
            "token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection",
            "transformer.resblocks.0.attn.out_proj.weight", "logit_scale"} <= keys
    assert "visual.conv1.bias" not in keys and not any("mask" in k for k in keys)
    assert len(keys) == 2 * 12 + 8 + 6 + 2 * 12  # 12 tensors per block, 2 blocks per tower; no buffers


# ----------------------------------------------------------------------------- behaviour

def test_text_features_ignore_tokens_after_end_of_text():
    model = small_model()
    tokens = random_tokens(4, model.cfg)
    changed = tokens.clone()
    for row in changed:  # scribble over everything after end-of-text
        end = int(row.argmax())
        row[end + 1:] = torch.randint(1, model.cfg.vocab_size - 2, (len(row) - end - 1,))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(changed), model.encode_text(tokens), atol=1e-5, rtol=0)


def test_other_resolutions_interpolate_the_position_grid():
    model = small_model()
    with torch.no_grad():
        model.visual.positional_embedding[1:] = 0.5  # a constant grid stays constant under bicubic
        assert model.encode_image(torch.randn(2, 3, 64, 48)).shape == (2, SMALL["embed_dim"])
        pos = model.visual.positions(8, 6)
    assert pos.shape == (8 * 6 + 1, SMALL["vision_width"])
    torch.testing.assert_close(pos[1:], torch.full_like(pos[1:], 0.5))


def test_gradients_reach_every_parameter():
    model = small_model().train()
    image_features, text_features, scale = model(torch.randn(4, 3, 32, 32), random_tokens(4, model.cfg))
    clip_loss(image_features, text_features, scale).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_loss_is_low_for_matched_pairs_and_ln_b_for_random_ones():
    torch.manual_seed(0)
    B = 64
    features = F.normalize(torch.randn(B, 32), dim=-1)
    assert clip_loss(features, features, torch.tensor(100.0)) < 0.01  # every pair finds its partner
    random = clip_loss(features, F.normalize(torch.randn(B, 32), dim=-1), torch.tensor(1.0))
    assert random.item() == pytest.approx(math.log(B), abs=0.1)  # a guess among B: ln 64 = 4.16
    other = F.normalize(torch.randn(B, 32), dim=-1)
    torch.testing.assert_close(clip_loss(features, other, 10.0), clip_loss(other, features, 10.0))


def test_captions_true_of_another_image_are_not_pushed_away_from_it():
    image = F.normalize(torch.tensor([[1.0, 0.2, 0], [0.2, 1.0, 0], [0, 0, 1.0]]), dim=-1)
    text = F.normalize(torch.tensor([[1.0, 0.2, 0], [1.0, 1.0, 0], [0, 0.3, 1.0]]), dim=-1)
    positives = torch.eye(3, dtype=torch.bool)
    positives[0, 1] = True  # caption 1 ("two ships") is also true of image 0

    def pull_of_caption_1_on_image_0(positives):
        features = image.clone().requires_grad_()
        clip_loss(features, text, torch.tensor(10.0), positives).backward()
        return -(features.grad[0] @ text[1]).item()  # > 0: a gradient step moves image 0 towards caption 1

    assert pull_of_caption_1_on_image_0(None) < 0  # plain CLIP: a true caption treated as a negative
    assert pull_of_caption_1_on_image_0(positives) > 0
    identity = clip_loss(image, text, torch.tensor(10.0), torch.eye(3, dtype=torch.bool))
    torch.testing.assert_close(identity, clip_loss(image, text, torch.tensor(10.0)))


# Two images and their captions on the axes of the plane, so at scale 1 the logits are [[1, 0], [0, 1]];
# image 0 also has a counterfactual caption ("five ships" for "three ships") at cosine 0.6 to it and a
# masked slot; image 1's caption has no count, so it has none.
UNIT_X, UNIT_Y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
COUNTERFACTUALS = torch.tensor([[[0.6, 0.8], [9.0, 9.0]], [[9.0, 9.0], [9.0, 9.0]]])  # [B, K, D]; 9s: masked
COUNTERFACTUAL_MASK = torch.tensor([[True, False], [False, False]])


def test_a_counterfactual_caption_is_one_more_wrong_answer_for_its_own_image():
    axes = torch.stack([UNIT_X, UNIT_Y])
    loss = clip_loss(axes, axes, torch.tensor(1.0), None, COUNTERFACTUALS, COUNTERFACTUAL_MASK)
    caption_finds_image = math.log(1 + math.exp(-1))  # -log(e^1 / (e^1 + e^0)), both captions
    image_0_finds_caption = math.log(1 + math.exp(-1) + math.exp(0.6 - 1))  # its counterfactual joins the sum
    image_1_finds_caption = math.log(1 + math.exp(-1))  # no counterfactual: as in plain CLIP
    expected = ((image_0_finds_caption + image_1_finds_caption) / 2 + caption_finds_image) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_counterfactuals_all_masked_give_the_plain_loss():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    counterfactuals = F.normalize(torch.randn(8, 3, 16), dim=-1)
    plain = clip_loss(image, text, 30.0)
    none_exist = torch.zeros(8, 3, dtype=torch.bool)
    # Equal up to rounding: the softmax sums run over 8 + 3 entries, the 3 of them exactly zero.
    torch.testing.assert_close(clip_loss(image, text, 30.0, None, counterfactuals, none_exist), plain)
    all_exist = torch.ones(8, 3, dtype=torch.bool)
    torch.testing.assert_close(clip_loss(image, text, 30.0, None, counterfactuals, all_exist),
                               clip_loss(image, text, 30.0, None, counterfactuals))  # no mask: all exist


def test_a_counterfactual_only_pulls_on_its_own_image():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    counterfactuals = F.normalize(torch.randn(3, 2, 4), dim=-1)
    only_image_0 = torch.zeros(3, 2, dtype=torch.bool)
    only_image_0[0, 0] = True

    def gradients(mask):
        image_, counterfactuals_ = image.clone().requires_grad_(), counterfactuals.clone().requires_grad_()
        clip_loss(image_, text, torch.tensor(10.0), None, counterfactuals_, mask).backward()
        return image_.grad, counterfactuals_.grad

    image_grad, counterfactual_grad = gradients(only_image_0)
    # d loss / d counterfactual = (a positive weight) * image 0: it is pushed away from image 0 alone.
    torch.testing.assert_close(F.normalize(counterfactual_grad[0, 0], dim=0), image[0])
    assert (counterfactual_grad.flatten(0, 1)[1:] == 0).all()  # masked slots get no gradient
    image_grad_without, _ = gradients(torch.zeros(3, 2, dtype=torch.bool))
    torch.testing.assert_close(image_grad[1:], image_grad_without[1:])  # images 1 and 2 do not feel it
    assert not torch.allclose(image_grad[0], image_grad_without[0])


def test_counterfactuals_stay_wrong_answers_when_captions_are_shared():
    axes = torch.stack([UNIT_X, UNIT_Y])
    both_true_of_both = torch.ones(2, 2, dtype=torch.bool)  # e.g. both images are "two ships in open sea"
    loss = clip_loss(axes, axes, torch.tensor(1.0), both_true_of_both, COUNTERFACTUALS, COUNTERFACTUAL_MASK)
    # Targets are 1/2 on each of two logits 1 and 0, so each term is log(sum of e^logit) - 1/2.
    caption_finds_image = math.log(math.exp(1) + 1) - 1 / 2
    image_0_finds_caption = math.log(math.exp(1) + 1 + math.exp(0.6)) - 1 / 2  # 0.6: its counterfactual
    image_1_finds_caption = math.log(math.exp(1) + 1) - 1 / 2
    expected = ((image_0_finds_caption + image_1_finds_caption) / 2 + caption_finds_image) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- checkpoint loading

def openai_like_model():
    """Heads are not stored in weights; OpenAI's rule is 64 channels a head (here widths 32, 24: 1 head)."""
    return small_model(vision_heads=1, text_heads=1)


def assert_same_features(loaded, model, atol=0.0):
    """Image and text features of two models on the same fixed inputs agree (exactly, by default)."""
    g = torch.Generator().manual_seed(0)
    images, tokens = torch.randn(2, 3, 32, 32, generator=g), random_tokens(2, model.cfg)
    with torch.no_grad():
        for encode in ("encode_image", "encode_text"):
            inputs = images if encode == "encode_image" else tokens
            expected = getattr(model.eval(), encode)(inputs)
            torch.testing.assert_close(getattr(loaded.eval(), encode)(inputs), expected, atol=atol, rtol=0)


def test_load_clip_reads_the_config_off_tensor_shapes():
    cfg = load_clip(small_model(vision_width=128, vision_heads=2).state_dict()).cfg
    assert cfg == CLIPConfig(**{**SMALL, "vision_width": 128, "vision_heads": 2, "text_heads": 1})


def test_load_clip_reads_wrappers_prefixes_and_fp16(tmp_path):
    model = openai_like_model()
    sd = model.state_dict()
    extras = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(12), "vocab_size": torch.tensor(100)}
    variants = {
        "plain.pt": {**sd, **extras},  # OpenAI's metadata tensors are skipped
        "open_clip.pt": {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "fp16.pt": {k: v.half() for k, v in sd.items()},
        "train.pt": {"model": sd, "config": model.cfg.__dict__, "step": 10},
        "scale_1.pt": {**sd, "logit_scale": sd["logit_scale"].reshape(1)},  # as some early CLIP ports save it
    }
    for name, ckpt in variants.items():
        torch.save(ckpt, tmp_path / name)
        loaded = load_clip(tmp_path / name)
        assert_same_features(loaded, model, atol=1e-2 if name == "fp16.pt" else 0.0)
        assert loaded.logit_scale.shape == () and loaded.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-3)


def saved_bytes(state_dict, fmt):
    """The bytes of a checkpoint file written by torch.save or by safetensors."""
    if fmt == "safetensors":
        return pytest.importorskip("safetensors.torch").save(state_dict)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_load_clip_reads_paths_open_files_and_bytes(tmp_path, fmt):
    model = openai_like_model()
    data = saved_bytes(model.state_dict(), fmt)
    (tmp_path / "model.bin").write_bytes(data)
    buffer = io.BytesIO(data)
    buffer.seek(0, io.SEEK_END)  # left at its end, as torch.save(sd, buffer) leaves it: read from the start
    with open(tmp_path / "model.bin", "rb") as f:
        for source in (tmp_path / "model.bin", f, buffer):
            assert_same_features(load_clip(source), model)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_load_clip_reads_torchscript_archives(tmp_path):
    model = openai_like_model()
    archive = torch.jit.trace_module(model, {"encode_image": torch.randn(1, 3, 32, 32)})  # as OpenAI ships
    archive.save(str(tmp_path / "ViT-tiny.pt"))
    assert_same_features(load_clip(tmp_path / "ViT-tiny.pt"), model)
    with open(tmp_path / "ViT-tiny.pt", "rb") as f:
        assert_same_features(load_clip(f), model)


def test_gray_checkpoint_equals_rgb_model_on_repeated_image():
    rgb = openai_like_model()
    gray = load_clip(rgb.state_dict(), in_channels=1).eval()
    image = torch.rand(2, 1, 32, 32)
    assert gray.visual.conv1.weight.shape[1] == 1
    with torch.no_grad():
        torch.testing.assert_close(gray.encode_image(image), rgb.encode_image(image.repeat(1, 3, 1, 1)),
                                   atol=1e-5, rtol=0)


def test_folded_normalisation_reads_raw_gray_pixels_as_openai_reads_normalised_rgb():
    rgb = openai_like_model()
    gray = load_clip(rgb.state_dict(), in_channels=1, pixel_mean=OPENAI_PIXEL_MEAN, pixel_std=OPENAI_PIXEL_STD).eval()
    mean, std = torch.tensor(OPENAI_PIXEL_MEAN)[:, None, None], torch.tensor(OPENAI_PIXEL_STD)[:, None, None]
    for side in (32, 48):  # the native grid, and an interpolated one
        image = torch.rand(2, 1, side, side)
        with torch.no_grad():
            torch.testing.assert_close(gray.encode_image(image), rgb.encode_image((image.repeat(1, 3, 1, 1) - mean) / std),
                                       atol=1e-4, rtol=0)


def test_mismatched_checkpoint_names_the_file_and_tensors(tmp_path):
    sd = small_model().state_dict()
    sd["text_projection"] = torch.zeros(24, 99)
    del sd["ln_final.bias"]
    torch.save({"model": sd, "config": SMALL}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"wrong\.pt does not fit.*missing ln_final\.bias.*text_projection: "
                                         r"checkpoint \(24, 99\), model \(24, 16\)"):
        load_clip(tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="not a CLIP checkpoint, it has no 'visual.conv1.weight'"):
        load_clip({"layer.weight": torch.zeros(2)})
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt: not a readable PyTorch checkpoint"):
        load_clip(tmp_path / "corrupt.pt")
    with open(tmp_path / "corrupt.pt", "rb") as f, pytest.raises(ValueError, match="corrupt.pt: not a readable"):
        load_clip(f)  # a file object is named by its .name
    with pytest.raises(ValueError, match="the given file object: not a readable"):
        load_clip(io.BytesIO(b"not a checkpoint"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_clip(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- tokenizer

def bpe_ids(tokenizer, text):
    """The BPE ids of one caption: its row without start-of-text, end-of-text and the zero padding."""
    row = tokenizer([text])[0].tolist()
    end = row.index(tokenizer.vocab_size - 1)
    assert row[0] == tokenizer.vocab_size - 2 and set(row[end + 1:]) <= {0}, text
    return row[1:end]


# tokenizer_reference: ordinary captions; tokenizer_cleaning_reference: curly quotes, mojibake,
# ligatures, full-width letters, HTML entities and odd whitespace, which OpenAI cleans with ftfy.
@pytest.mark.parametrize("reference", ["tokenizer_reference.jsonl", "tokenizer_cleaning_reference.jsonl"])
def test_clip_tokenizer_gives_openai_ids(shared, reference):
    tok = Tokenizer.from_clip_bpe(shared / "clip" / "bpe_simple_vocab_16e6.txt.gz")
    assert tok.vocab_size == 49408
    for line in (shared / "clip" / reference).read_text().splitlines():
        case = json.loads(line)
        assert bpe_ids(tok, case["text"]) == case["bpe"], case["text"]
    assert tok(["a photo of a cat"])[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_trained_and_reloaded_tokenizers_clean_text_as_openai(tmp_path):
    typed = ["The ship\u2019s wake", "\ufb01shing boats &amp; a caf\u00c3\u00a9", "\uff33\uff28\uff29\uff30  in\tport"]
    plain = ["the ship's wake", "fishing boats & a caf\u00e9", "ship in port"]
    tok = Tokenizer.train(typed * 5, vocab_size=600, context_length=12)
    assert tok.tok.get_vocab() == Tokenizer.train(plain * 5, vocab_size=600).tok.get_vocab()  # trained on clean text
    assert torch.equal(tok(typed), tok(plain))
    assert tok.decode(tok(typed)[1]) == "fishing boats & a caf\u00e9"
    tok.save(tmp_path / "tok.json")
    assert torch.equal(Tokenizer.load(tmp_path / "tok.json")(typed), tok(plain))


def test_trained_tokenizer_round_trip_truncation_and_special_ids(tmp_path):
    captions = ["two ships in the upper left", "one aircraft near the coast", "an empty sar scene"] * 20
    tok = Tokenizer.train(captions, vocab_size=1000, context_length=8)
    assert tok.vocab_size == 512 + 40 + 2  # bytes, bytes</w>, 40 merges (then every word is whole), start, end
    start, end = tok.vocab_size - 2, tok.vocab_size - 1
    tokens = tok(["two ships", "one aircraft near the coast in the upper left of the scene", ""])
    assert tokens.shape == (3, 8) and tokens.dtype == torch.long
    assert tokens[:, 0].tolist() == [start] * 3
    assert tokens.argmax(-1).tolist() == [3, 7, 1]  # end-of-text: after 'two' 'ships', last when cut, first
    assert tokens[1, -1] == end and tokens[2, 2:].tolist() == [0] * 6
    assert tok.decode(tokens[0]) == "two ships"
    clip_like = Tokenizer.train(["stop! now!"] * 5, vocab_size=600, context_length=8)
    assert clip_like.decode(clip_like(["stop! now!"])[0]) == "stop ! now !"  # "!" is id 0, like padding
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert again.context_length == 8 and torch.equal(again(captions[:3]), tok(captions[:3]))
    assert Tokenizer.train(captions[::-1], vocab_size=1000).tok.get_vocab() == tok.tok.get_vocab()  # deterministic
    with pytest.raises(ValueError, match="vocab_size 300 is below 514"):
        Tokenizer.train(captions, vocab_size=300)
    with pytest.raises(ValueError, match="nothing.json: not a readable tokenizer"):
        Tokenizer.load(tmp_path / "nothing.json")
