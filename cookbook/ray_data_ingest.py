"""Batch ingestion of a large corpus with Ray Data's vLLM processor (a recipe: needs Ray and GPUs).

    pip install 'ray[data,llm]>=2.49' 'qwenvl[vllm,pdf]'
    python cookbook/ray_data_ingest.py "s3-or-local-folder/*.pdf" --out parsed/ --model Qwen/Qwen2-VL-7B-Instruct \
        --replicas 8 --tensor-parallel-size 1

Pages are rendered on CPU workers at the resolution that fills the pixel budget, Ray Data runs `--replicas` vLLM
engines (each over `--tensor-parallel-size` GPUs) with the same JSON-schema-constrained layout request that
`DocumentParser(backend="vlm")` sends, and each page's blocks (boxes mapped to page pixels) are written as JSON
lines. For one machine, `DocumentParser` with `VLLMEngine` or several `vllm serve` replicas behind
`VLLMServerEngine([...urls])` does the same without Ray (see scale_out.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from qwenvl.layout.pages import dpi_for_budget, expand_sources, open_document
from qwenvl.layout.vlm import Tile, VLMLayoutConfig, blocks_from_result, layout_prompt, layout_schema
from qwenvl.messages import ChatResult


def render_rows(paths: Sequence[str], max_pixels: int) -> list[dict[str, Any]]:
    """One row per page: source, page number, the page image and its size (rendered here, on the driver, for
    a small corpus; for a large one map this over the list of files with ray.data)."""
    rows = []
    for path in expand_sources(list(paths)):
        with open_document(path) as doc:
            for page in doc.pages():
                dpi = dpi_for_budget(*page.size_pt, max_pixels) if page.size_pt else 200.0
                image, dpi = page.render(dpi)
                rows.append(
                    {
                        "source": str(path),
                        "page": page.number,
                        "dpi": dpi,
                        "image": image,
                        "width": image.width,
                        "height": image.height,
                    }
                )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--out", default="parsed")
    ap.add_argument("--model", default="Qwen/Qwen2-VL-7B-Instruct")
    ap.add_argument("--replicas", type=int, default=1, help="vLLM engines (concurrency)")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    args = ap.parse_args(argv)
    try:
        import ray
        from ray.data import llm as ray_llm
    except ImportError:
        print("this recipe needs Ray Data with its LLM extra: pip install 'ray[data,llm]>=2.49'", file=sys.stderr)
        return 2

    config = VLMLayoutConfig(max_pixels=args.max_pixels, max_tokens=4096)
    schema = layout_schema(config)
    processor_config = ray_llm.vLLMEngineProcessorConfig(
        model_source=args.model,
        engine_kwargs={
            "max_model_len": 16384,
            "tensor_parallel_size": args.tensor_parallel_size,
            "limit_mm_per_prompt": {"image": 1},
        },
        concurrency=args.replicas,
        batch_size=args.batch_size,
        prepare_multimodal_stage={"enabled": True},  # Ray >= 2.49; older Ray: has_image=True
    )

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": row["image"]},
                        {"type": "text", "text": layout_prompt(config)},
                    ],
                }
            ],
            "sampling_params": {
                "temperature": 0.0,
                "max_tokens": config.max_tokens,
                "structured_outputs": {"json": schema},
            },
            "mm_processor_kwargs": {"max_pixels": args.max_pixels},
        }

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = json.loads(row["generated_text"])
            result = ChatResult(text=row["generated_text"], parsed=parsed)
            blocks = blocks_from_result(
                result,
                Tile(0, 0, row["width"], row["height"]),
                config,
                page_number=row["page"],
                page_size=(row["width"], row["height"]),
            )
            return {
                "source": row["source"],
                "page": row["page"],
                "dpi": row["dpi"],
                "status": "ok",
                "blocks": json.dumps([b.model_dump(mode="json") for b in blocks]),
            }
        except (ValueError, KeyError) as exc:  # cut off or malformed: re-run these pages with DocumentParser
            return {
                "source": row["source"],
                "page": row["page"],
                "dpi": row["dpi"],
                "status": "failed",
                "blocks": "[]",
                "error": str(exc),
            }

    build = getattr(ray_llm, "build_processor", None) or ray_llm.build_llm_processor
    processor = build(processor_config, preprocess=preprocess, postprocess=postprocess)
    ray.init(ignore_reinit_error=True)
    ds = ray.data.from_items(render_rows(args.paths, args.max_pixels))
    processor(ds).write_json(args.out)
    print(f"pages written to {args.out}/ as JSON lines (source, page, dpi, status, blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
