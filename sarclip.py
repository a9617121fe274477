"""SARCLIP's model: a CLIP (ViT image tower + causal text transformer) written from scratch.

Read top to bottom: config and size presets, the transformer pieces both towers share, the two
towers, the CLIP model, the contrastive loss, checkpoint loading, and the BPE tokenizer.

The parameter names and shapes are exactly those of OpenAI's released CLIP checkpoints, so
`model.load_state_dict(openai_state_dict, strict=True)` works unchanged (see `load_clip`).
"""
import html
import gzip
import math
import re
import zipfile
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path

import ftfy
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class CLIPConfig:
    embed_dim: int = 512        # size of the shared image-text embedding space
    image_size: int = 224       # native input resolution (pixels a side) the position grid is made for
    patch_size: int = 32        # ViT patch side: the image becomes (image_size / patch_size)^2 tokens
    in_channels: int = 3        # 3 for OpenAI's RGB weights, 1 for single-channel SAR
    vision_width: int = 768     # width of the image transformer
    vision_layers: int = 12     # residual blocks in the image transformer
    vision_heads: int = 12      # attention heads in the image transformer
    context_length: int = 77    # tokens per caption, start- and end-of-text included
    vocab_size: int = 49408     # BPE vocabulary; start- and end-of-text are the two largest ids
    text_width: int = 512       # width of the text transformer
    text_layers: int = 12       # residual blocks in the text transformer
    text_heads: int = 8         # attention heads in the text transformer


# A size is one dict entry. b32/b16/l14 are OpenAI's ViT-B/32, ViT-B/16 and ViT-L/14 (RGB, so their
# checkpoints load as they are); tiny trains on a 2-core CPU and reads single-channel 64-px SAR. Its
# text tower has two layers, not four: over three seeds it held the real recipe and the default's
# retrieval and counting (synthetic zero-shot fell; docs/experiments.md), and a step is 4-19% faster.
# A checkpoint carries its own config.
SIZES = {
    "tiny": dict(embed_dim=128, image_size=64, patch_size=8, in_channels=1, vision_width=192,
                 vision_layers=6, vision_heads=3, context_length=32, vocab_size=4096,
                 text_width=192, text_layers=2, text_heads=3),
    "b32": dict(embed_dim=512, image_size=224, patch_size=32, in_channels=3, vision_width=768,
                vision_layers=12, vision_heads=12, context_length=77, vocab_size=49408,
                text_width=512, text_layers=12, text_heads=8),
    "b16": dict(embed_dim=512, image_size=224, patch_size=16, in_channels=3, vision_width=768,
                vision_layers=12, vision_heads=12, context_length=77, vocab_size=49408,
                text_width=512, text_layers=12, text_heads=8),
    "l14": dict(embed_dim=768, image_size=224, patch_size=14, in_channels=3, vision_width=1024,
                vision_layers=24, vision_heads=16, context_length=77, vocab_size=49408,
                text_width=768, text_layers=12, text_heads=12),
}
# tiny16 is the real recipe's: tiny cut into 16-px patches (16 tokens a 64-px image instead of 64) with
# four image layers instead of six, so a training step costs well under half and a time budget trains
# more steps. On real SAR, short of steps, both trades won: the patches gave SSDD retrieval 19.7 against
# 15.6 (three seeds), the four layers 32.6 against 29.5 in less time (2,500 steps against 2,100;
# docs/experiments.md). The synthetic default keeps tiny.
SIZES["tiny16"] = {**SIZES["tiny"], "patch_size": 16, "vision_layers": 4}


# ----------------------------------------------------------------------------- transformer pieces

class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI trained with, so their weights expect it."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention, batch-first, with nn.MultiheadAttention's parameter names."""

    def __init__(self, width, heads):
        super().__init__()
        assert width % heads == 0, f"width {width} is not divisible by {heads} heads"
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # q, k, v stacked
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, causal=False):
        B, T, C = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.out_proj(y)


class ResidualBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x, causal=False):
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual blocks; the text tower calls it with causal=True."""

    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualBlock(width, heads) for _ in range(layers)])

    def forward(self, x, causal=False):
        for block in self.resblocks:
            x = block(x, causal=causal)
        return x


# ----------------------------------------------------------------------------- the image tower

class VisionTransformer(nn.Module):
    """ViT: patches -> tokens, a class token, learned positions, transformer, class token -> embedding."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        width, scale = cfg.vision_width, cfg.vision_width ** -0.5
        self.patch_size = cfg.patch_size
        self.grid = cfg.image_size // cfg.patch_size  # positions are learned on a grid x grid layout
        self.conv1 = nn.Conv2d(cfg.in_channels, width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg.vision_layers, cfg.vision_heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, cfg.embed_dim))

    def positions(self, rows, cols):
        """Position embeddings for a rows x cols patch grid; bicubic interpolation off the native grid."""
        pos = self.positional_embedding
        if (rows, cols) == (self.grid, self.grid):
            return pos
        grid = pos[1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)  # [1, width, grid, grid]
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(rows * cols, -1)  # [rows * cols, width]
        return torch.cat([pos[:1], grid])

    def forward(self, x):
        x = self.conv1(x)  # shape = [B, width, rows, cols]
        B, C, rows, cols = x.shape
        x = x.flatten(2).transpose(1, 2)  # shape = [B, rows * cols, width]
        cls = self.class_embedding.to(x.dtype).expand(B, 1, C)
        x = torch.cat([cls, x], dim=1)  # shape = [B, rows * cols + 1, width]
        x = self.ln_pre(x + self.positions(rows, cols).to(x.dtype))
        x = self.transformer(x)
        return self.ln_post(x[:, 0]) @ self.proj  # the class token speaks for the image: [B, embed_dim]


# ----------------------------------------------------------------------------- CLIP

class CLIP(nn.Module):
    """Image tower + text tower meeting in one embedding space, as in Radford et al. (2021)."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.text_width))
        self.transformer = Transformer(cfg.text_width, cfg.text_layers, cfg.text_heads)
        self.ln_final = nn.LayerNorm(cfg.text_width)
        self.text_projection = nn.Parameter(torch.empty(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # temperature 0.07 to start
        self.init_weights()

    def init_weights(self):
        """OpenAI's initialisation: residual projections shrink with depth so the stream stays O(1)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.cfg.text_width ** -0.5)
        for tower in (self.visual.transformer, self.transformer):
            width, layers = tower.resblocks[0].ln_1.normalized_shape[0], len(tower.resblocks)
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
                nn.init.normal_(block.attn.out_proj.weight, std=width ** -0.5 * (2 * layers) ** -0.5)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=width ** -0.5 * (2 * layers) ** -0.5)

    def encode_image(self, images):
        """images [B, C, H, W] -> unnormalised embeddings [B, embed_dim]."""
        return self.visual(images)

    def encode_text(self, tokens):
        """tokens [B, L] -> unnormalised embeddings [B, embed_dim], read at the end-of-text token."""
        B, L = tokens.shape
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # shape = [B, L, text_width]
        x = self.ln_final(self.transformer(x, causal=True))
        # End-of-text has the largest id, so argmax finds it; causal attention means it has read
        # every token before it and nothing after it (padding cannot change the result).
        x = x[torch.arange(B, device=x.device), tokens.argmax(dim=-1)]  # shape = [B, text_width]
        return x @ self.text_projection

    def forward(self, images, tokens):
        """Returns L2-normalised image and text features and the temperature exp(logit_scale)."""
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(tokens), dim=-1)
        return image_features, text_features, self.logit_scale.exp()


def clip_loss(image_features, text_features, logit_scale, positives=None, counterfactuals=None,
              counterfactual_mask=None):
    """Symmetric contrastive loss (InfoNCE) over a batch of B image-caption pairs.

    Each image must pick its own caption out of the B captions in the batch, and each caption its
    own image: two B-way classifications whose right answers sit on the diagonal. Features are
    L2-normalised by the caller (CLIP.forward), so logits are cosine similarities times the learned
    temperature; pass them in fp32.
    positives [B images, B captions] (optional, bool) marks more right answers: D2C writes the same
    sentence for many images ("two ships in open sea"), and a caption that is also true of another
    image in the batch should not be pushed away from it. The target probability is shared out.
    counterfactuals [B, K, D] (optional) are, for each image, up to K copies of its own caption with
    a false object count ("three ships" -> "five ships"), and counterfactual_mask [B, K] (bool, all
    True if omitted) says which exist. They are extra wrong answers for their own image only: image i
    chooses among the B captions and its K counterfactuals; captions still choose among the B images.
    Under DDP, train.py gathers them across ranks like the features, so B is the global batch.
    """
    logits = logit_scale * image_features @ text_features.t()  # [B images, B captions]
    if positives is None:
        positives = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    targets = positives.float()
    text_to_image = F.cross_entropy(logits.t(), targets.t() / targets.t().sum(1, keepdim=True))
    if counterfactuals is not None:
        # A batch rarely holds two captions that differ only in their count, so nothing forces the
        # number words to matter; the image's own caption with a wrong count is a hard negative that
        # does (counterfactual captions, Paiss et al. 2023, "Teaching CLIP to Count to Ten").
        cf_logits = logit_scale * torch.einsum("bd,bkd->bk", image_features, counterfactuals)  # [B, K]
        if counterfactual_mask is not None:
            # Not -inf: the soft-target cross-entropy would compute 0 * -inf = nan for a missing one.
            cf_logits = cf_logits.masked_fill(~counterfactual_mask, torch.finfo(cf_logits.dtype).min)
        logits = torch.cat([logits, cf_logits], dim=1)  # [B images, B captions + K counterfactuals]
        targets = F.pad(targets, (0, cf_logits.shape[1]))  # a counterfactual is never a right answer
    image_to_text = F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
    return (image_to_text + text_to_image) / 2


# ----------------------------------------------------------------------------- checkpoints

# OpenAI's released archives carry these three numbers as tensors beside the weights.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def read_checkpoint(source):
    """Returns (state_dict, config dict or None, name) from a path, an open binary file or a dict.

    Reads plain state dicts, {"state_dict": ...} (open_clip) and {"model": ..., "config": ...}
    (train.py) wrappers, OpenAI's TorchScript .pt archives and safetensors files; pickles load with
    weights_only=True. A file object (open(path, "rb"), io.BytesIO) must be seekable and is read from
    its start; errors name it by its .name. Raises FileNotFoundError, or ValueError for anything else.
    """
    ckpt, name = source, "the given state dict"
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "the given file object"))
        ckpt = read_checkpoint_file(source, name)
    elif not isinstance(source, dict):
        name = str(Path(source))
        if not Path(source).is_file():
            raise FileNotFoundError(f"{name}: no such checkpoint file")
        with open(source, "rb") as f:
            ckpt = read_checkpoint_file(f, name)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{name}: expected a dict of tensors, found {type(ckpt).__name__}")
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
    state_dict = {}
    for key, value in ckpt.items():
        key = key.removeprefix("module.")  # saved from DistributedDataParallel
        if key in OPENAI_METADATA_KEYS or key.startswith("anyreader."):  # AnyReader loads its own part
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state_dict[key] = value.float() if value.is_floating_point() else value  # fp16 releases -> fp32
    if state_dict.get("logit_scale") is not None and state_dict["logit_scale"].shape == (1,):
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(())  # some early CLIP ports store [1]
    return state_dict, config, name


def read_checkpoint_file(f, name):
    """The object saved in an open binary file: safetensors, a TorchScript archive or a torch.save pickle."""
    try:
        f.seek(0)
        if f.read(9)[8:] == b"{":  # safetensors: an 8-byte header length, then the JSON header
            from safetensors.torch import load  # optional: only safetensors files need it
            f.seek(0)
            return load(f.read())
        f.seek(0)
        if zipfile.is_zipfile(f) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(f).namelist()):
            f.seek(0)
            return torch.jit.load(f, map_location="cpu").state_dict()  # OpenAI's TorchScript archive
        f.seek(0)
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{name}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def config_from_state_dict(state_dict, name="checkpoint"):
    """The checkpoint is the config: read every hyper-parameter off tensor shapes."""
    def layers(prefix):
        return sum(1 for k in state_dict if k.startswith(prefix) and k.endswith(".attn.in_proj_weight"))
    try:
        conv = state_dict["visual.conv1.weight"]  # [vision_width, in_channels, patch, patch]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_width, text_width = conv.shape[0], state_dict["ln_final.weight"].shape[0]
        return CLIPConfig(
            embed_dim=state_dict["text_projection"].shape[1], image_size=grid * conv.shape[-1],
            patch_size=conv.shape[-1], in_channels=conv.shape[1], vision_width=vision_width,
            vision_layers=layers("visual.transformer.resblocks."), vision_heads=max(1, vision_width // 64),
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0], text_width=text_width,
            text_layers=layers("transformer.resblocks."), text_heads=max(1, text_width // 64))
    except KeyError as e:  # heads are not stored in weights: OpenAI's rule is 64 channels per head
        raise ValueError(f"{name}: not a CLIP checkpoint, it has no {e.args[0]!r} tensor") from None


def load_weights(model, state_dict, name="checkpoint"):
    """load_state_dict(strict=True), but a misfit names every missing, extra and mis-shaped tensor."""
    expected = model.state_dict()
    problems = [f"missing {k}" for k in sorted(expected.keys() - state_dict.keys())]
    problems += [f"unexpected {k}" for k in sorted(state_dict.keys() - expected.keys())]
    problems += [f"{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)}"
                 for k in sorted(expected.keys() & state_dict.keys()) if state_dict[k].shape != expected[k].shape]
    if problems:
        shown = "; ".join(problems[:12]) + (f"; ... {len(problems) - 12} more" if len(problems) > 12 else "")
        raise ValueError(f"{name} does not fit the model ({len(problems)} problems): {shown}")
    model.load_state_dict(state_dict, strict=True)
    return model


# The per-channel pixel mean and std OpenAI's (and open_clip's) CLIP weights were trained with.
OPENAI_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


def fold_pixel_normalization(state_dict, mean, std):
    """Make a checkpoint trained on (x - mean) / std read raw [0, 1] pixels x instead, exactly.

    conv1 is linear and has no bias: conv1((x - m) / s) = conv1'(x) - b, with conv1' = W / s per input
    channel and b = sum over (c, kh, kw) of W * m / s, one number per output channel, the same for every
    patch. So b goes into the patch positions (not the class token's); bicubic interpolation of the
    position grid keeps a constant, so other resolutions stay exact too.
    """
    conv = state_dict["visual.conv1.weight"]  # [width, C, patch, patch]
    mean, std = torch.tensor(mean, dtype=conv.dtype), torch.tensor(std, dtype=conv.dtype)
    shift = (conv * (mean / std)[None, :, None, None]).sum(dim=(1, 2, 3))  # [width]
    positions = state_dict["visual.positional_embedding"].clone()
    positions[1:] -= shift
    return {**state_dict, "visual.conv1.weight": conv / std[None, :, None, None],
            "visual.positional_embedding": positions}


def load_clip(source, in_channels=None, pixel_mean=None, pixel_std=None) -> CLIP:
    """Build a CLIP whose config is read off the checkpoint, and load its weights.

    source: a path, an open binary file or a state dict, in any format read_checkpoint reads.
    in_channels=1 turns an RGB checkpoint into a single-channel one by summing conv1 over R, G, B:
    a gray image repeated on three channels gives exactly the same patch embeddings.
    pixel_mean/pixel_std (e.g. OPENAI_PIXEL_MEAN/STD) fold an RGB checkpoint's input normalisation
    into its weights first, so the model reads [0, 1] pixels as data.py gives them; a checkpoint with
    another channel count (train.py's single-channel ones already read [0, 1]) is left as it is.
    """
    state_dict, config, name = read_checkpoint(source)
    cfg = CLIPConfig(**config) if config else config_from_state_dict(state_dict, name)
    conv = state_dict.get("visual.conv1.weight")
    if pixel_mean is not None and conv is not None and conv.shape[1] == len(pixel_mean):
        state_dict = fold_pixel_normalization(state_dict, pixel_mean, pixel_std)
    conv = state_dict.get("visual.conv1.weight")
    if in_channels and conv is not None and conv.shape[1] != in_channels:
        if in_channels == 1:
            conv = conv.sum(dim=1, keepdim=True)
        elif conv.shape[1] == 1:  # the reverse, exact for a gray image repeated on every channel
            conv = conv.repeat(1, in_channels, 1, 1) / in_channels
        else:
            raise ValueError(f"{name}: cannot turn a {conv.shape[1]}-channel conv1 into {in_channels} channels")
        state_dict["visual.conv1.weight"], cfg.in_channels = conv, in_channels
    return load_weights(CLIP(cfg), state_dict, name)


# ----------------------------------------------------------------------------- tokenizer

START, END = "<|startoftext|>", "<|endoftext|>"
# OpenAI CLIP's pre-tokenizer: contractions, runs of letters, single digits, runs of punctuation.
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""


def clean_text(text):
    """OpenAI CLIP's clean-up before BPE, as in its clip/simple_tokenizer.py: str -> str.

    ftfy.fix_text repairs mojibake ('cafÃ©' -> 'café'), straightens typographic quotes ('’' -> "'"),
    splits ligatures ('ﬁ' -> 'fi'), narrows full-width letters ('Ｓ' -> 'S') and applies NFC; then
    HTML entities are unescaped twice ('&amp;amp;' -> '&'), whitespace runs become one space, the ends
    are stripped and everything is lower-cased. Without it the same caption typed two ways gets two
    different token sequences, and OpenAI's weights see ids they were not trained on.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class Tokenizer:
    """Byte-level BPE with '</w>' word ends, as in CLIP: text -> LongTensor [N, context_length].

    Each row is start-of-text, the BPE ids, end-of-text, then zero padding; over-long text is cut
    so that end-of-text stays last. Start and end are the two largest ids, so `tokens.argmax(-1)`
    finds the end of every caption. Text is cleaned as OpenAI's tokenizer cleans it (`clean_text`)
    before encoding and before training, so trained, saved and loaded tokenizers all agree.
    """

    def __init__(self, tokenizer, context_length=77):
        from tokenizers import processors
        self.tok, self.context_length = tokenizer, context_length
        start, end = tokenizer.token_to_id(START), tokenizer.token_to_id(END)
        if (start, end) != (tokenizer.get_vocab_size() - 2, tokenizer.get_vocab_size() - 1):
            raise ValueError(f"{START} and {END} must be the two largest ids, found {start} and {end} "
                             f"in a vocabulary of {tokenizer.get_vocab_size()}")
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{START} $A {END}", special_tokens=[(START, start), (END, end)])
        tokenizer.enable_truncation(context_length)  # counts the two special tokens, so END survives
        tokenizer.enable_padding(length=context_length, pad_id=0, pad_token="!")

    @staticmethod
    def empty_bpe():
        """A BPE tokenizers.Tokenizer with CLIP's normalisation and pre-tokenisation, no vocabulary yet."""
        from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, normalizers, pre_tokenizers
        tok = HFTokenizer(models.BPE(end_of_word_suffix="</w>"))
        # clean_text has done this already; kept so that the saved JSON alone (read by HF's library,
        # without ftfy) still collapses whitespace and lower-cases as CLIP does.
        tok.normalizer = normalizers.Sequence([
            normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])  # bytes -> printable symbols
        tok.decoder = decoders.Sequence([decoders.Replace("</w>", "Ġ"), decoders.ByteLevel()])  # 'Ġ' is a space
        return tok

    @classmethod
    def train(cls, texts, vocab_size, context_length=77):
        """Learn a BPE vocabulary of at most vocab_size ids from captions, laid out like CLIP's.

        Fewer ids come back when the captions run out of pairs to merge (D2C's vocabulary is small).
        """
        if vocab_size < 514:
            raise ValueError(f"vocab_size {vocab_size} is below 514: 512 byte symbols, start and end come first")
        tok = cls.empty_bpe()
        words = Counter()
        for text, count in Counter(texts).items():  # captions repeat: pre-tokenise each once
            text = tok.normalizer.normalize_str(clean_text(text))  # exactly what __call__ encodes
            for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text):
                words[(*piece[:-1], piece[-1] + "</w>")] += count
        return cls.from_merges(learn_merges(words, vocab_size - 512 - 2), context_length)

    @classmethod
    def from_clip_bpe(cls, path, context_length=77):
        """OpenAI's bpe_simple_vocab_16e6.txt.gz: a header line, then 48,894 merges, one per line."""
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
        return cls.from_merges([tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]], context_length)

    @classmethod
    def from_merges(cls, merges, context_length=77):
        """CLIP's vocabulary layout: 256 bytes, the same with '</w>', one id per merge, start, end."""
        from tokenizers import models
        alphabet = _clip_byte_alphabet()
        vocab = alphabet + [ch + "</w>" for ch in alphabet] + ["".join(m) for m in merges] + [START, END]
        tok = cls.empty_bpe()
        tok.model = models.BPE({t: i for i, t in enumerate(vocab)}, merges, end_of_word_suffix="</w>")
        tok.add_special_tokens([START, END])  # already in the vocabulary: keeps the two largest ids
        return cls(tok, context_length)

    @property
    def vocab_size(self):
        return self.tok.get_vocab_size()

    def __call__(self, texts):
        if isinstance(texts, str):
            texts = [texts]
        encodings = self.tok.encode_batch([clean_text(t) for t in texts])
        return torch.tensor([e.ids for e in encodings], dtype=torch.long)

    def fits(self, text):
        """True when text is read whole: its tokens, start- and end-of-text included, fill at most
        context_length (longer text is cut, as __call__ says). D2C writes to it (d2c.captions' fits)."""
        return not self.tok.encode(clean_text(text)).overflowing

    def decode(self, tokens):
        """One row of ids back to text (special tokens and padding dropped)."""
        ids = tokens.tolist()
        ids = ids[:ids.index(self.vocab_size - 1)] if self.vocab_size - 1 in ids else ids  # up to end-of-text
        ids = [i for i in ids if i != self.vocab_size - 2]  # 0 is padding after end-of-text, but "!" before it
        return self.tok.decode(ids).strip()

    def save(self, path):
        self.tok.save(str(path))  # the JSON holds vocabulary, merges and context length (padding)

    @classmethod
    def load(cls, path):
        from tokenizers import Tokenizer as HFTokenizer
        try:
            tok = HFTokenizer.from_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a readable tokenizer file ({e})") from e
        return cls(tok, tok.padding["length"] if tok.padding else 77)


def learn_merges(words, n_merges):
    """Greedy BPE (Sennrich et al., 2016): merge the most frequent adjacent pair, n_merges times.

    words: {tuple of symbols: count}. Ties go to the alphabetically first pair, so the same captions
    always give the same vocabulary. Only the words that hold the merged pair are counted again.
    """
    words = [[list(w), c] for w, c in sorted(words.items())]
    pairs, where = Counter(), defaultdict(set)  # pair -> count, pair -> the words it occurs in
    for i, (symbols, count) in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += count
            where[pair].add(i)
    merges = []
    while len(merges) < n_merges and pairs:
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for i in sorted(where.pop(best)):
            symbols, count = words[i]
            for pair in zip(symbols, symbols[1:]):  # forget this word's pairs ...
                pairs[pair] -= count
                if pairs[pair] <= 0:
                    del pairs[pair]
            merged, j = [], 0
            while j < len(symbols):
                if (symbols[j], symbols[j + 1] if j + 1 < len(symbols) else None) == best:
                    merged.append(symbols[j] + symbols[j + 1])
                    j += 2
                else:
                    merged.append(symbols[j])
                    j += 1
            words[i][0] = merged
            for pair in zip(merged, merged[1:]):  # ... and count them again, merged
                pairs[pair] += count
                where[pair].add(i)
    return merges


def _clip_byte_alphabet():
    """OpenAI's bytes_to_unicode, in its order: printable bytes keep their character, the rest become 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]
