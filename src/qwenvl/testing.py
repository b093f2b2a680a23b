"""Tiny random-weight Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints for tests, examples and benchmarks.

Each checkpoint has its family's real architecture, tokenizer special tokens and chat template, so every
code path (prompt rendering, image placeholder expansion, vLLM loading) is exercised, but its weights are
random: its words mean nothing. Nothing is downloaded.

    python -m qwenvl.testing /tmp/tiny-qwen2vl [--family qwen3_vl]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from qwenvl._lazy import require
from qwenvl.errors import ModelError

__all__ = [
    "QWEN2VL_CHAT_TEMPLATE",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QWEN3_VL_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TINY_FAMILIES",
    "VLLMServerProcess",
    "build_tiny_model",
    "build_tiny_qwen2vl",
    "tiny_model_path",
]

#: The chat template that ships with Qwen/Qwen2-VL-2B-Instruct (verbatim).
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Every special token of the Qwen2-VL tokenizer, in its order.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Plain words for the tokenizer's merges: enough that English, JSON and numbers get multi-byte tokens.
_CORPUS = """
The quick brown fox jumps over the lazy dog. Invoice number, date, total, amount due, tax, customer.
Describe the image. What is in this picture? Extract the table as JSON. {"name": "value", "items": [1, 2, 3]}
You are a helpful assistant. The chart shows revenue by quarter: Q1 Q2 Q3 Q4 2024 2025 100 250 3.14
title paragraph table figure list caption header footer page section heading reading order bbox
<tool_call> </tool_call> <tool_response> </tool_response> arguments function tools required
"""


#: The chat template that ships with Qwen/Qwen2.5-VL-7B-Instruct (chat_template.json): the Qwen2-VL one, verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = QWEN2VL_CHAT_TEMPLATE

#: The chat template that ships with Qwen/Qwen3-VL-2B-Instruct and -8B-Instruct (chat_template.json), verbatim:
#: no default system prompt, tools rendered by the template (Hermes <tool_call>), tool results as user turns.
QWEN3_VL_CHAT_TEMPLATE = (Path(__file__).parent / "templates" / "qwen3_vl_instruct.jinja").read_text()

# Tokens the Qwen2.5 and Qwen3 tokenizers add after the Qwen2-VL ones (plain added tokens, not special).
_TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>")

#: family -> (chat template, extra added tokens)
_FAMILY_TOKENS = {
    "qwen2_vl": (QWEN2VL_CHAT_TEMPLATE, ()),
    "qwen2_5_vl": (QWEN2_5_VL_CHAT_TEMPLATE, _TOOL_TOKENS[:4]),
    "qwen3_vl": (QWEN3_VL_CHAT_TEMPLATE, _TOOL_TOKENS),
}

#: the families `build_tiny_model` builds
TINY_FAMILIES = tuple(_FAMILY_TOKENS)


def build_tiny_qwen2vl(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Build and save a tiny random-weight Qwen2-VL checkpoint (about 1.3 MB) at ``path``."""
    return build_tiny_model(path, family="qwen2_vl", seed=seed)


def build_tiny_model(path: str | os.PathLike[str], *, family: str = "qwen2_vl", seed: int = 0) -> Path:
    """Build and save a tiny random-weight checkpoint of ``family`` ("qwen2_vl", "qwen2_5_vl" or "qwen3_vl")
    at ``path``, with the family's real architecture, processor, special tokens and chat template.

    The folder loads with vLLM (`LLM(model=path)`) and transformers (`from_pretrained(path)`). Text
    head_dim is 64 because vLLM's CPU attention refuses smaller heads.
    """
    if family not in _FAMILY_TOKENS:
        raise ModelError(f"unknown family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    torch = require("torch", "vllm")
    tokenizers = require("tokenizers", "vllm")
    transformers = require("transformers", "vllm")
    template, extra_tokens = _FAMILY_TOKENS[family]

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tokenizer = transformers.Qwen2TokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",  # noqa: S106 - a token, not a password
        pad_token="<|endoftext|>",  # noqa: S106
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
    )
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))
    tokenizer.chat_template = template
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    vocab_size = (len(tokenizer) + 63) // 64 * 64

    text_config: dict[str, object] = {
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 1e6},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config: dict[str, object] = {
        "depth": 2,
        "hidden_size": 128,
        "num_heads": 2,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    token_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if family == "qwen2_vl":
        vision_config.update(embed_dim=64, mlp_ratio=2, patch_size=14)
        config = transformers.Qwen2VLConfig(
            text_config=text_config, vision_config=vision_config, tie_word_embeddings=False, **token_ids
        )
        model_class = transformers.Qwen2VLForConditionalGeneration
        image_processor = transformers.Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)
        video_processor = transformers.Qwen2VLVideoProcessor()
        processor_class = transformers.Qwen2VLProcessor
    elif family == "qwen2_5_vl":
        # Window attention over 112-pixel windows with full attention in the last block, as the real ones.
        vision_config.update(
            intermediate_size=256, out_hidden_size=128, patch_size=14, window_size=112, fullatt_block_indexes=[1]
        )
        config = transformers.Qwen2_5_VLConfig(
            text_config=text_config, vision_config=vision_config, tie_word_embeddings=False, **token_ids
        )
        model_class = transformers.Qwen2_5_VLForConditionalGeneration
        image_processor = transformers.Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)
        video_processor = transformers.Qwen2VLVideoProcessor()
        processor_class = transformers.Qwen2_5_VLProcessor
    else:
        text_config.update(
            head_dim=64,
            rope_parameters={
                "rope_type": "default",
                "mrope_section": [12, 10, 10],
                "mrope_interleaved": True,
                "rope_theta": 5e6,
            },
        )
        vision_config.update(
            intermediate_size=256,
            out_hidden_size=128,
            patch_size=16,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0],
        )
        config = transformers.Qwen3VLConfig(
            text_config=text_config, vision_config=vision_config, tie_word_embeddings=False, **token_ids
        )
        model_class = transformers.Qwen3VLForConditionalGeneration
        # Qwen3-VL's preprocessor_config.json: 16-pixel patches, 65536..16777216 pixels, mean/std 0.5.
        image_processor = transformers.Qwen2VLImageProcessor(
            patch_size=16,
            merge_size=2,
            size={"shortest_edge": 65536, "longest_edge": 16777216},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        video_processor = transformers.Qwen3VLVideoProcessor()
        processor_class = transformers.Qwen3VLProcessor
    model = model_class(config).to(torch.float32).eval()
    # Random init with std 0.02 makes every logit nearly equal; a larger spread gives the greedy
    # comparisons between backends clear winners instead of float-noise ties.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_tokens" in name or "lm_head" in name:
                param.normal_(0.0, 1.0)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out, safe_serialization=True)

    processor = processor_class(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=template
    )
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"family": family, "seed": seed, "special_token_ids": ids}
    (out / "qwenvl_tiny.json").write_text(json.dumps(meta, indent=1))
    return out


def tiny_model_path(
    cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0, family: str = "qwen2_vl"
) -> Path:
    """Return the folder of the tiny model of ``family``, building it once under ``cache_dir`` (default:
    ~/.cache/qwenvl)."""
    base = Path(cache_dir) if cache_dir else Path(os.environ.get("QWENVL_CACHE", Path.home() / ".cache" / "qwenvl"))
    slug = family.replace("_", "")
    path = base / f"tiny-{slug}-seed{seed}"
    if not (path / "qwenvl_tiny.json").exists():
        tmp = base / f".tiny-{slug}-seed{seed}.{os.getpid()}"
        build_tiny_model(tmp, family=family, seed=seed)
        tmp.replace(path) if not path.exists() else None
    return path


class VLLMServerProcess:
    """A vLLM OpenAI-compatible server on 127.0.0.1 in a child process, for tests, examples and benchmarks.

    Use as a context manager; ``base_url`` is ready once ``start()`` returns. Flags mirror `VLLMEngine`'s
    defaults so that both give the same answers, and include what vLLM's CPU build needs: chunked prefill off
    (``--no-enable-chunked-prefill``: with it on, vLLM 0.32's CPU server dies on a seeded request whose prompt
    exceeds the step budget, "CPU Generator does not use offset"). On the CPU, where its KV cache size is given
    (``VLLM_CPU_KVCACHE_SPACE``, 1 GiB unless set), it also skips vLLM's start-up run of the vision encoder on a
    largest-possible image (``--skip-mm-profiling``), which only measures memory: the tiny Qwen3-VL's server then
    starts in 98 s instead of 199 s. ``skip_mm_profiling`` decides it otherwise.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        port: int | None = None,
        max_model_len: int = 4096,
        dtype: str = "float32",
        extra_args: list[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 600.0,
        trust_request_mm_kwargs: bool = True,
        skip_mm_profiling: bool | None = None,
    ) -> None:
        self.model = os.fspath(model)
        if skip_mm_profiling is None:
            from qwenvl.engine.base import cpu_kv_cache_fixed

            skip_mm_profiling = _vllm_on_cpu() and cpu_kv_cache_fixed(environ=_kv_cache_space())
        self._port_given = port is not None
        self.port = port or _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._args = [
            "--model", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype,
            "--max-model-len", str(max_model_len), "--gpu-memory-utilization", "0.2",
            "--limit-mm-per-prompt", json.dumps({"image": 4, "video": 1}),
            "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
            # vLLM 0.32's CPU server dies on a seeded request whose prompt exceeds the step budget with chunked
            # prefill on ("CPU Generator does not use offset"); the in-process engine turns it off on the CPU too
            "--no-enable-chunked-prefill", "--seed", "0",
            *(["--trust-request-mm-kwargs"] if trust_request_mm_kwargs else []),
            *(["--skip-mm-profiling"] if skip_mm_profiling else []),
            *(extra_args or []),
        ]  # fmt: skip
        self._log_path = Path(log_path) if log_path else None
        self._timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> VLLMServerProcess:
        """Start the server and wait until it answers /health; raises RuntimeError with its log if it dies.

        A port chosen here is free when chosen, but the server binds it only after importing vLLM (seconds
        later), and another process may take it meanwhile: then the server starts again on a new port, up to
        three times. A port given by the caller is never changed.
        """
        deadline = time.monotonic() + self._timeout
        for attempt in range(3):
            try:
                return self._start_once(deadline)
            except _PortTaken as exc:
                if self._port_given or attempt == 2:
                    raise RuntimeError(str(exc)) from None
                self._use_port(_free_port())
        raise AssertionError("unreachable")

    def _use_port(self, port: int) -> None:
        self._args[self._args.index("--port") + 1] = str(port)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def _start_once(self, deadline: float) -> VLLMServerProcess:
        import httpx

        env = {**os.environ, **_kv_cache_space()}
        log = open(self._log_path, "wb") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *self._args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_path.read_text(errors="replace")[-3000:] if self._log_path else ""
                message = f"the vLLM server exited with code {self.process.returncode}:\n{tail}"
                if "Address already in use" in tail or (not self._log_path and not _port_free(self.port)):
                    raise _PortTaken(message)
                raise RuntimeError(message)
            try:
                if httpx.get(self.base_url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"the vLLM server did not answer within {self._timeout:.0f} s")

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> VLLMServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kv_cache_space() -> dict[str, str]:
    """The server's KV cache size on the CPU: this process's ``VLLM_CPU_KVCACHE_SPACE``, or 1 GiB."""
    return {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


def _vllm_on_cpu() -> bool:
    """Whether vLLM here runs on the CPU (its CPU build, or no accelerator)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


class _PortTaken(Exception):
    """The server could not bind its port: another process took it."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def main(argv: list[str] | None = None) -> None:
    """Build the tiny checkpoint at the folder given on the command line."""
    parser = argparse.ArgumentParser(prog="python -m qwenvl.testing", description=main.__doc__)
    parser.add_argument("path", help="folder to write the checkpoint to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=TINY_FAMILIES, default="qwen2_vl")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.path, family=args.family, seed=args.seed))


if __name__ == "__main__":
    main()
