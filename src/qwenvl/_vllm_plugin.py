"""A vLLM general plugin (loaded by vLLM in every engine process): a fix for multi-LoRA batches on the CPU.

vLLM's PyTorch LoRA ops (used on the CPU) gather each token's adapter weights with its adapter index, and a token
without an adapter has index -1, which selects the *last* adapter slot. When every slot holds an adapter (for
example two adapters with ``max_loras=2``), base-model requests batched with adapter requests are answered with
the last adapter's delta (measured with vLLM 0.32: outputs differ from the same request run alone). Zeroing the
shrink output of index -1 tokens gives them no LoRA delta, as the GPU kernels do.
"""

from __future__ import annotations

import sys
from typing import Any


def register() -> None:
    """Patches vLLM's torch LoRA shrink op so tokens without an adapter get no LoRA delta."""
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
    except ImportError:  # another vLLM layout: nothing to fix here
        return
    original = lora_ops.bgmv_shrink
    if getattr(original, "_qwenvl_masked", False):
        return

    def bgmv_shrink(
        inputs: Any, lora_weights: Any, output_tensor: Any, lora_indices_tensor: Any, scaling: float = 1.0
    ) -> None:
        original(inputs, lora_weights, output_tensor, lora_indices_tensor, scaling)
        no_lora = lora_indices_tensor < 0
        if bool(no_lora.any()):
            output_tensor[no_lora] = 0

    bgmv_shrink._qwenvl_masked = True  # type: ignore[attr-defined]
    setattr(lora_ops, "bgmv_shrink", bgmv_shrink)  # noqa: B010 - sgmv_shrink calls it through this module
    setattr(torch_ops, "bgmv_shrink", bgmv_shrink)  # noqa: B010
    cpu = sys.modules.get("vllm.lora.punica_wrapper.punica_cpu")
    if cpu is not None:
        cpu.bgmv_shrink = bgmv_shrink  # type: ignore[attr-defined]
