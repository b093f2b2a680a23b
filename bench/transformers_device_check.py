"""TransformersEngine on a GPU against the same engine on the CPU (tiny model, float32).

Prints whether prompt token ids and greedy tokens agree between the devices, and the GPU batch speed-up.
Runs where torch and transformers are installed (no vLLM needed):

    PYTHONPATH=src python bench/transformers_device_check.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    """Run the check and print the results."""
    import torch
    from PIL import Image as PILImage

    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, TransformersEngine
    from qwenvl.testing import build_tiny_qwen2vl

    path = build_tiny_qwen2vl(Path(tempfile.mkdtemp()) / "tiny")
    requests = []
    for i in range(8):
        img = PILImage.new("RGB", (320 + 40 * i, 240 + 10 * i), ((i * 37) % 256, 90, 160))
        img.paste((255, 255 - i * 20, 0), (10 * i, 5 * i, 10 * i + 80, 5 * i + 60))
        content = [Image(img, max_pixels=(64 + 32 * i) * 784), Text(f"Describe picture {i}.")]
        requests.append(ChatRequest([Message("user", content)], SamplingOptions(max_tokens=16)))
    cpu = TransformersEngine(path, dtype="float32", device="cpu")
    gpu = TransformersEngine(path, dtype="float32", device="cuda")
    on_cpu = [cpu.generate([r])[0] for r in requests]
    on_gpu = [gpu.generate([r])[0] for r in requests]
    same_prompt = all(a.prompt_token_ids == b.prompt_token_ids for a, b in zip(on_cpu, on_gpu, strict=True))
    first8 = sum((a.token_ids or [])[:8] == (b.token_ids or [])[:8] for a, b in zip(on_cpu, on_gpu, strict=True))
    full = sum(a.token_ids == b.token_ids for a, b in zip(on_cpu, on_gpu, strict=True))
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    print(f"prompt token ids equal on all {len(requests)}: {same_prompt}")
    print(f"greedy tokens equal: first 8 on {first8}/{len(requests)}, all 16 on {full}/{len(requests)}")
    print(f"image tokens: {[r.usage.image_tokens for r in on_gpu]}")
    gpu.generate(requests)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    batched = gpu.generate(requests)
    torch.cuda.synchronize()
    t_batch = time.perf_counter() - start
    start = time.perf_counter()
    for r in requests:
        gpu.generate([r])
    torch.cuda.synchronize()
    t_loop = time.perf_counter() - start
    print(f"GPU: batch of 8 {t_batch:.3f} s, loop of 8 singles {t_loop:.3f} s ({t_loop / t_batch:.2f}x)")
    agree = sum((b.token_ids or [])[:4] == (s.token_ids or [])[:4] for b, s in zip(batched, on_gpu, strict=True))
    print(f"batched first 4 tokens equal singles: {agree}/8")


if __name__ == "__main__":
    main()
