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


def bench_train_step(batch_size=64):
    """A tiny-preset training step on the CPU: forward, symmetric loss, backward, AdamW."""
    torch.manual_seed(0)
    cfg = CLIPConfig(**SIZES["tiny"])
    model = CLIP(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    tokens = torch.randint(1, cfg.vocab_size - 2, (batch_size, cfg.context_length))
    tokens[:, 20] = cfg.vocab_size - 1  # end-of-text

    def step():
        loss = clip_loss(*model(images, tokens))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed(step)
    print(f"train_step  tiny, batch {batch_size}, {torch.get_num_threads()} threads: "
          f"{1 / seconds:.2f} steps/s, {batch_size / seconds:.0f} images/s")


SECTIONS = {"train_step": bench_train_step}

if __name__ == "__main__":
    for name in sys.argv[1:] or SECTIONS:
        SECTIONS[name]()
