"""train.py: a short run end to end, exact resume after SIGKILL, two ranks = one, the NaN guard, bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import synthetic
import train
from sarclip import OPENAI_PIXEL_MEAN, OPENAI_PIXEL_STD, fold_pixel_normalization

ROOT = train.Path(train.__file__).resolve().parent


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A small synthetic SAR set: about 100 training and 10 held-out scenes."""
    folder = tmp_path_factory.mktemp("synthetic")
    return str(synthetic.make_synthetic(folder, seed=1, n_scenes=120, chips_per_class=1, images_per_count=1)["scenes"])


def small_run(manifest, out, *extra):
    return ["--data", manifest, "--out", str(out), "--batch-size", "8", "--steps", "6", "--warmup", "2",
            "--eval-every", "4", "--save-every", "2", "--log-every", "0", *extra]


def run_script(args, env=None):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_short_run_writes_checkpoint_metrics_and_curves(manifest, tmp_path):
    assert train.main(small_run(manifest, tmp_path)) == 6
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    final = rows[-1]
    assert final["final"] and final["step"] == 6
    assert 0 <= final["mean_recall"] <= 100 and 0 < final["chance_mean_recall"] < 100
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any("mean_recall" in r and not r.get("final") for r in rows)  # the step-4 evaluation
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["tokenizer"] == "tokenizer.json" and ckpt["args"]["batch_size"] == 8
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "curves.png").stat().st_size > 10_000
    assert not any(k.startswith("anyreader.") for k in ckpt["model"])


def test_learning_rate_warms_up_then_follows_a_cosine():
    lrs = [train.learning_rate(step, total=10, warmup=2, peak=1.0) for step in range(10)]
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert lrs[6] == pytest.approx(0.5)  # half-way through the cosine: (6 - 2) / 8
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_weight_decay_spares_gains_biases_embeddings_and_the_temperature():
    model = train.CLIP(train.CLIPConfig(**train.SIZES["tiny"]))
    decay, no_decay = train.parameter_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "token_embedding.weight", "positional_embedding", "visual.positional_embedding",
            "visual.class_embedding", "ln_final.weight", "transformer.resblocks.0.attn.in_proj_bias"} <= exempt
    assert {names[id(p)] for p in decay["params"]} >= {"visual.conv1.weight", "text_projection", "visual.proj"}


def test_resume_after_sigkill_ends_with_the_same_weights(manifest, tmp_path):
    straight = run_script(small_run(manifest, tmp_path / "straight"))
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    killed = run_script(small_run(manifest, tmp_path / "killed"))
    ckpt = tmp_path / "killed" / "ckpt.pt"
    deadline = time.time() + 300
    while not (ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 2):
        assert killed.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    stopped_at = torch.load(ckpt, weights_only=True)["step"]
    assert stopped_at < 6, "killed too late to test anything"

    train.main(small_run(manifest, tmp_path / "killed", "--resume", str(ckpt)))
    a = torch.load(tmp_path / "straight" / "ckpt.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    steps = [json.loads(line)["step"] for line in open(tmp_path / "killed" / "metrics.jsonl")]
    assert steps == [json.loads(line)["step"] for line in open(tmp_path / "straight" / "metrics.jsonl")]


@pytest.mark.parametrize("accum", ["1", "2"])
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(manifest, tmp_path, accum):
    """Features and count counterfactuals gathered across ranks; with --accum-steps too."""
    args = small_run(manifest, tmp_path / "one", "--steps", "3")
    one = run_script(args)
    assert one.wait(timeout=300) == 0, one.stdout.read()
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "train.py"), *small_run(manifest, tmp_path / "two", "--steps", "3",
                                                             "--accum-steps", accum)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stdout + two.stderr
    a = torch.load(tmp_path / "one" / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "ckpt.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=5e-5, rtol=1e-4, msg=key)  # Adam magnifies float noise


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(manifest, tmp_path, monkeypatch):
    real_loss, calls = train.clip_loss, []

    def loss_that_breaks_at_step_4(*args):
        calls.append(1)
        loss = real_loss(*args)
        return loss * float("nan") if len(calls) == 4 else loss

    monkeypatch.setattr(train, "clip_loss", loss_that_breaks_at_step_4)
    with pytest.raises(SystemExit, match=r"step 3: the loss is nan; training stopped.*ckpt\.pt"):
        train.main(small_run(manifest, tmp_path))
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 2


def test_bad_input_is_named_before_any_training_step(manifest, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "a.png"\n')
    with pytest.raises(SystemExit, match=r"broken\.jsonl, line 1"):
        train.main(small_run(str(broken), tmp_path / "a"))

    entry = json.loads(open(manifest).readline())
    entry["image"] = str(tmp_path / "gone.png")
    lonely = tmp_path / "lonely.jsonl"
    lonely.write_text(json.dumps(entry) + "\n")
    with pytest.raises(SystemExit, match=r"1 of 1 images .* are missing, e\.g\. .*gone\.png"):
        train.main(small_run(str(lonely), tmp_path / "b"))

    for held_out in ("val", "test"):  # the same images split another way: held-out ones would be trained on
        swapped = tmp_path / f"swapped_{held_out}.jsonl"
        other_split = {"train": held_out, held_out: "train"}
        swapped.write_text("".join(json.dumps({**e, "split": other_split.get(e["split"], e["split"])}) + "\n"
                                   for e in train.data.read_manifest(manifest)))  # image paths resolved
        args = small_run(manifest, tmp_path / "f")
        args[args.index("--data") + 1:args.index("--data") + 2] = [manifest, str(swapped)]
        with pytest.raises(SystemExit, match=r"images are 'train' in one of .*swapped_\w+\.jsonl and held out "
                                             r"\('val' or 'test'\) in another"):
            train.main(args)

    (tmp_path / "not_clip.pt").write_bytes(b"garbage")
    with pytest.raises(SystemExit, match=r"--init: .*not_clip\.pt: not a readable PyTorch checkpoint"):
        train.main(small_run(manifest, tmp_path / "c", "--init", str(tmp_path / "not_clip.pt"),
                             "--tokenizer-bpe", "unused"))

    train.main(small_run(manifest, tmp_path / "d", "--steps", "2"))
    with pytest.raises(SystemExit, match=r"different run: --batch-size 8 there, 16 here"):
        train.main(small_run(manifest, tmp_path / "e", "--steps", "2", "--batch-size", "16",
                             "--resume", str(tmp_path / "d" / "ckpt.pt")))
    older = torch.load(tmp_path / "d" / "ckpt.pt", weights_only=True)  # written before --display-augment existed
    del older["args"]["display_augment"]
    torch.save(older, tmp_path / "d" / "older.pt")
    args = train.parse_args(small_run(manifest, tmp_path / "d", "--steps", "2",
                                      "--resume", str(tmp_path / "d" / "older.pt")))
    assert train.read_resume(args.resume, args)["step"] == 2  # the missing argument reads as its default
    with pytest.raises(SystemExit, match=r"different run: --display-augment False there, True here"):
        train.read_resume(args.resume, train.parse_args([*small_run(manifest, tmp_path / "d", "--steps", "2"),
                                                         "--display-augment"]))


def test_anyreader_run_keeps_clip_keys_and_saves_its_fusion_under_its_own_prefix(manifest, tmp_path):
    train.main(small_run(manifest, tmp_path, "--steps", "2", "--anyreader", "--max-tiles", "4"))
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"]
    fusion = {k for k in state if k.startswith("anyreader.")}
    assert fusion and "anyreader.gate" in fusion
    clip = train.load_clip(tmp_path / "ckpt.pt")  # the OpenAI-layout keys load on their own
    assert set(clip.state_dict()) == set(state) - fusion
    assert state["anyreader.gate"].abs().item() > 0  # the gate left zero: the tiles now count


def test_fine_tuning_starts_from_clip_weights_with_clip_vocabulary(manifest, tmp_path, shared):
    torch.manual_seed(0)
    cfg = train.CLIPConfig(embed_dim=32, image_size=32, patch_size=8, in_channels=3, vision_width=64, vision_layers=1,
                           vision_heads=1, context_length=77, vocab_size=49408, text_width=64, text_layers=1,
                           text_heads=1)  # an OpenAI-layout RGB checkpoint with CLIP's vocabulary
    start = train.CLIP(cfg)
    torch.save(start.state_dict(), tmp_path / "clip.pt")
    bpe = str(shared / "clip" / "bpe_simple_vocab_16e6.txt.gz")
    train.main(small_run(manifest, tmp_path / "run", "--steps", "2", "--init", str(tmp_path / "clip.pt"),
                         "--tokenizer-bpe", bpe))
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["in_channels"] == 1 and ckpt["config"]["vocab_size"] == 49408
    folded = fold_pixel_normalization(start.state_dict(), OPENAI_PIXEL_MEAN, OPENAI_PIXEL_STD)
    summed = folded["visual.conv1.weight"].sum(dim=1, keepdim=True)  # normalised RGB folded into one SAR channel
    assert (ckpt["model"]["visual.conv1.weight"] - summed).abs().max() < 0.01  # moved by two small steps only
    assert train.Tokenizer.load(tmp_path / "run" / "tokenizer.json")(["a ship"])[0, :4].tolist() == [49406, 320, 1158, 49407]

    small_vocab = train.CLIP(train.CLIPConfig(**{**cfg.__dict__, "vocab_size": 500}))
    torch.save(small_vocab.state_dict(), tmp_path / "small.pt")
    with pytest.raises(SystemExit, match=r"--init .*small\.pt: its vocabulary has 500 ids, but --tokenizer-bpe .* gives 49408"):
        train.main(small_run(manifest, tmp_path / "bad", "--init", str(tmp_path / "small.pt"), "--tokenizer-bpe", bpe))


def manifest_with_truncated_jpegs(manifest, folder, how_many):
    """A copy of the manifest whose first how_many training images in epoch 0's order are cut-off JPEGs,
    as a crashed download leaves them; returns (its path, their indices in the training set)."""
    entries = train.data.read_manifest(manifest)  # image paths absolute: the copy lives elsewhere
    train_lines = [i for i, e in enumerate(entries) if e["split"] == "train"]
    bad = train.epoch_batches(len(train_lines), 8, seed=0, epoch=0)[0][:how_many]
    Image.open(entries[0]["image"]).convert("L").save(folder / "whole.jpg")
    for index in bad:
        cut = folder / f"cut{index}.jpg"
        cut.write_bytes((folder / "whole.jpg").read_bytes()[:600])  # the header and a few rows
        entries[train_lines[index]]["image"] = str(cut)
    (folder / "cut.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return str(folder / "cut.jsonl"), bad


def test_an_unreadable_image_is_replaced_counted_and_reported(manifest, tmp_path, capsys, monkeypatch):
    path, [bad] = manifest_with_truncated_jpegs(manifest, tmp_path, 1)
    monkeypatch.setattr(train, "MAX_UNREADABLE", 0.05)  # this small set has under 100 training images
    assert train.main(small_run(path, tmp_path / "run")) == 6  # the run goes on
    out = capsys.readouterr().out
    assert f"step 0: skipped an unreadable image, replaced in its batch (1 so far): cannot read SAR image " \
           f"{tmp_path / f'cut{bad}.jpg'}" in out
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["unreadable"] for r in rows if "loss" in r] == [1] * 6
    assert torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["unreadable"] == [bad]  # resume knows it
    dataset = train.ManifestDataset(path, lambda texts: torch.zeros(1, 4), 64, replace_unreadable=True)
    stand_in = dataset.readable(bad)[0]
    assert stand_in != bad and dataset.readable(bad)[0] == stand_in  # the same stand-in every time: exact resume


def test_too_many_unreadable_images_stop_the_run_with_its_steps_saved(manifest, tmp_path):
    path, bad = manifest_with_truncated_jpegs(manifest, tmp_path, 3)
    with pytest.raises(SystemExit, match=r"3 of \d+ training images failed to load \(more than 1%.* 0 steps done"):
        train.main(small_run(path, tmp_path / "run"))
    assert torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["unreadable"] == sorted(bad)


def tiny_trainee(seed=0):
    torch.manual_seed(seed)
    cfg = train.CLIPConfig(embed_dim=16, image_size=16, patch_size=8, in_channels=1, vision_width=32,
                           vision_layers=1, vision_heads=2, context_length=12, vocab_size=60, text_width=32,
                           text_layers=1, text_heads=2)
    return train.Trainee(train.CLIP(cfg))


def test_captions_encoded_in_length_groups_match_one_padded_batch():
    """Trainee.encode_text skips the padding after each length group's longest caption: the features
    are CLIP.encode_text's on the whole padded batch, in the order given, gradients included (in
    float64, so that rounding cannot hide a difference)."""
    trainee = tiny_trainee().double()
    lengths = [12, 3, 7, 5, 12, 2, 9, 4, 6]  # end-of-text included; 2 is start and end only
    tokens = torch.zeros(len(lengths), 12, dtype=torch.long)
    for row, length in zip(tokens, lengths):
        row[:length - 1] = torch.randint(1, 58, (length - 1,))
        row[length - 1] = 59  # end of text, the largest id
    grouped = trainee.encode_text(tokens)
    grouped.square().sum().backward()
    grouped_grad = trainee.clip.token_embedding.weight.grad.clone()
    trainee.zero_grad()
    whole = trainee.clip.encode_text(tokens)
    whole.square().sum().backward()
    torch.testing.assert_close(grouped, whole, atol=1e-10, rtol=0)
    torch.testing.assert_close(grouped_grad, trainee.clip.token_embedding.weight.grad, atol=1e-9, rtol=0)


def test_accumulated_micro_batches_give_the_whole_batch_gradient():
    """--accum-steps 4 at micro-batch 8 = one batch of 32 (GradCache), counterfactuals included."""
    images, tokens = torch.rand(32, 1, 16, 16), torch.randint(1, 58, (32, 12))
    tokens[:, -1] = 59  # end of text
    extra = torch.cat([tokens[:, None, :6], torch.randint(1, 58, (32, 2, 6))], 1)[:, :2]  # [32, 2, 6]
    extra[..., -1] = 59
    mask = torch.rand(32, 2) < 0.7
    grads = []
    for accum in (1, 4):
        model = tiny_trainee()
        loss_of = lambda i, t, s, e: train.clip_loss(i, t, s, None, e, mask)
        loss = train.accumulate_gradients(model, images, tokens, extra, loss_of, accum,
                                          torch.amp.GradScaler("cpu", enabled=False), train.nullcontext())
        grads.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    for name, whole in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], whole, atol=1e-5, rtol=1e-5, msg=name)


def test_accum_steps_train_to_the_same_weights(manifest, tmp_path):
    train.main(small_run(manifest, tmp_path / "one", "--batch-size", "32", "--steps", "3"))
    train.main(small_run(manifest, tmp_path / "four", "--batch-size", "32", "--steps", "3", "--accum-steps", "4"))
    a, b = (torch.load(tmp_path / run / "ckpt.pt", weights_only=True)["model"] for run in ("one", "four"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.parametrize("locked, prefix", [("--lock-image", "visual."), ("--lock-text", "transformer.")])
def test_a_locked_tower_does_not_move(manifest, tmp_path, locked, prefix):
    train.main(small_run(manifest, tmp_path / "start", "--steps", "1", "--lr", "1e-12"))  # ~ the initial weights
    train.main(small_run(manifest, tmp_path / "run", "--steps", "3", locked))
    start, end = (torch.load(tmp_path / run / "ckpt.pt", weights_only=True)["model"] for run in ("start", "run"))
    frozen = [k for k in start if k.startswith(prefix) and k != "visual.proj"]
    assert frozen and all(torch.allclose(start[k], end[k], atol=1e-9) for k in frozen)
    assert not torch.allclose(start["text_projection"], end["text_projection"])  # the projections learn
    assert not torch.allclose(start["visual.proj"], end["visual.proj"])
    free = "token_embedding.weight" if locked == "--lock-image" else "visual.conv1.weight"
    assert not torch.allclose(start[free], end[free])


def test_init_from_a_train_checkpoint_continues_with_its_tokenizer(manifest, tmp_path):
    train.main(small_run(manifest, tmp_path / "first", "--steps", "2"))
    train.main(small_run(manifest, tmp_path / "second", "--steps", "2", "--init", str(tmp_path / "first" / "ckpt.pt")))
    first = train.Tokenizer.load(tmp_path / "first" / "tokenizer.json")
    second = train.Tokenizer.load(tmp_path / "second" / "tokenizer.json")
    caption = "a SAR image of three ships in a row."
    assert torch.equal(first([caption]), second([caption])) and first.vocab_size == second.vocab_size
    ckpt = torch.load(tmp_path / "second" / "ckpt.pt", weights_only=True)
    assert ckpt["config"] == torch.load(tmp_path / "first" / "ckpt.pt", weights_only=True)["config"]


def test_data_synthetic_mixes_the_embedded_set_with_a_manifest(manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train.synthetic, "make_synthetic", lambda out: {"scenes": manifest})  # no half-minute set to write here
    args = small_run(manifest, tmp_path / "run", "--steps", "1")
    args[args.index("--data") + 1:args.index("--data") + 2] = ["synthetic", manifest]  # --data synthetic real.jsonl
    train.main(args)
    splits = [e["split"] for e in train.data.read_manifest(manifest)]
    # both parts (here the same set twice) are drawn; the held-out images are scored once
    assert f"{2 * splits.count('train')} training / {splits.count('val')} held-out" in capsys.readouterr().out


def characters(length):
    """A tokenizer stand-in: one token per character, cut or padded with zeros to length."""
    return lambda texts: torch.tensor([[ord(c) for c in t[:length].ljust(length, "\0")] for t in texts])


def test_counterfactual_tokens_mask_captions_without_counts():
    captions, tokenizer = ["a SAR image of two ships.", "an empty SAR image."], characters(40)
    tokens, mask = train.counterfactual_tokens(captions, tokenizer(captions), [{"ship": 2}, {}], 2, [0, 0], tokenizer)
    assert tokens.shape == (2, 2, 40) and mask.tolist() == [[True, True], [False, False]]
    assert not tokens[1].any()  # no counterfactual: zeros, not encoded, masked out of the loss


def test_counterfactual_cut_by_the_context_length_is_masked():
    # "a SAR image of " is 15 characters: cut there, "two ships" and "five ships" read the same.
    captions, tokenizer = ["a SAR image of two ships."], characters(15)
    tokens, mask = train.counterfactual_tokens(captions, tokenizer(captions), [{"ship": 2}], 1, [0], tokenizer)
    assert mask.tolist() == [[False]] and not tokens.any()


def test_a_caption_is_a_right_answer_for_every_image_it_is_true_of(manifest):
    """Dedup targets: caption j is right for image i when D2C wrote it for i, or when its claim holds for i."""
    from d2c import true_statements
    ship_left, ship_right, two_ships = ({"width": 300, "height": 300, "objects": [
        {"category": "ship", "box": box} for box in boxes]} for boxes in
        ([[10, 140, 20, 150]], [[250, 140, 260, 150]], [[10, 140, 20, 150], [250, 140, 260, 150]]))
    drawn = ["a SAR image of a ship.", "a radar image of one ship on the right side.", "two ships in a SAR image."]
    claims = [frozenset({("count", "ship", 1)}), frozenset({("count", "ship", 1), ("cells", "ship", (((1, 2), 1),))}),
              frozenset({("count", "ship", 2)})]
    truths = [true_statements(record) for record in (ship_left, ship_right, two_ships)]
    positives = train.batch_positives(drawn, [[caption] for caption in drawn], claims, truths)
    assert positives.tolist() == [[True, False, False],   # the left ship: "a ship" is true of it, "on the right" not
                                  [True, True, False],    # the right ship: both single-ship captions
                                  [False, False, True]]
    # Without claims (a csv caption, or --no-augment: the manifest's captions), the sentence decides alone.
    assert train.batch_positives(drawn, [[caption] for caption in drawn]).tolist() == torch.eye(3, dtype=bool).tolist()
    dataset = train.ManifestDataset(manifest, None, 64, augment=True)
    served = list(range(16))
    positives = train.batch_positives([dataset.caption(i) for i in served], [dataset.item_captions(i) for i in served],
                                      [dataset.caption_claim(i) for i in served], [dataset.item_truth(i) for i in served])
    assert positives.diagonal().all()  # every served caption holds for its own image
