"""In-process engine vs server engine vs the route users take today (LangChain ChatOpenAI on a vLLM server).

Prints, from one run on the same 64 image prompts (640x480, max_pixels 256*28*28, 16 tokens out, greedy):
  - VLLMEngine throughput / VLLMServerEngine throughput (same machine, same model)
  - VLLMServerEngine throughput / ChatOpenAI.batch(max_concurrency=64) throughput, both on one vLLM server

    python bench/server_vs_local.py
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import images, interleaved, model_path  # noqa: E402

MAX_PIXELS = 256 * 28 * 28


def _data_uri(img) -> str:  # noqa: ANN001
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Run the benchmark and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, VLLMEngine, VLLMServerEngine
    from qwenvl.testing import VLLMServerProcess

    model = model_path()
    pics = images(args.prompts)
    requests = [
        ChatRequest(
            [Message("user", [Image(p), Text(f"Describe picture {i}.")])], SamplingOptions(max_tokens=args.max_tokens)
        )
        for i, p in enumerate(pics)
    ]

    def lc_messages() -> list[list[HumanMessage]]:
        # What a ChatOpenAI user does with the same pictures: encode each as a data URI (timed, as our engine's
        # encoding is).
        return [
            [
                HumanMessage(
                    content=[
                        {"type": "image_url", "image_url": {"url": _data_uri(p)}},
                        {"type": "text", "text": f"Describe picture {i}."},
                    ]
                )
            ]
            for i, p in enumerate(pics)
        ]

    log = Path(tempfile.mkdtemp()) / "server.log"
    with VLLMServerProcess(
        model, log_path=log, extra_args=["--mm-processor-kwargs", f'{{"max_pixels": {MAX_PIXELS}}}']
    ) as server:
        local = VLLMEngine(model, max_model_len=4096, gpu_memory_utilization=0.2, max_pixels=MAX_PIXELS)
        remote = VLLMServerEngine(server.base_url, model, max_pixels=MAX_PIXELS, max_concurrency=64)
        chat = ChatOpenAI(
            base_url=server.base_url, api_key="unused", model=model, temperature=0, max_tokens=args.max_tokens
        )

        def run_local() -> None:
            assert all(r.ok for r in local.generate(requests))

        def run_remote() -> None:
            assert all(r.ok for r in remote.generate(requests))

        def run_langchain() -> None:
            chat.batch(lc_messages(), config={"max_concurrency": 64})

        for fn in (run_local, run_remote, run_langchain):
            fn()  # warm-up
        t = interleaved({"local": run_local, "server": run_remote, "langchain": run_langchain}, rounds=args.rounds)
        [a] = local.generate(requests[:1])
        [b] = remote.generate(requests[:1])
        remote.close()
        local.close()
    n = args.prompts
    print(f"model: {model}")
    print(f"{n} image prompts (640x480, max_pixels {MAX_PIXELS}), {args.max_tokens} tokens out, {args.rounds} rounds")
    print(f"VLLMEngine (in-process)           {t['local']:.3f} s  {n / t['local']:.1f} prompts/s")
    print(f"VLLMServerEngine (HTTP)           {t['server']:.3f} s  {n / t['server']:.1f} prompts/s")
    print(f"ChatOpenAI.batch (HTTP)           {t['langchain']:.3f} s  {n / t['langchain']:.1f} prompts/s")
    print(f"in-process / server engine        {t['server'] / t['local']:.2f}x throughput")
    print(f"server engine / ChatOpenAI.batch  {t['langchain'] / t['server']:.2f}x throughput")
    print(f"same image tokens in-process and over HTTP: {a.usage.image_tokens == b.usage.image_tokens}")
    return [
        (f"in-process engine ÷ server engine, {n} image prompts", f"{t['server'] / t['local']:.2f}x throughput"),
        (
            "`VLLMServerEngine` ÷ LangChain `ChatOpenAI.batch` on the same server",
            f"{t['langchain'] / t['server']:.2f}x throughput",
        ),
    ]


if __name__ == "__main__":
    main()
