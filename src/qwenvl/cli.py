"""The `qwenvl` command: parse documents into blocks, ask questions over them with citations, chat about images."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwenvl.engine.factory import create_engine
from qwenvl.errors import QwenVLError

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"

_DESCRIPTION = """\
Qwen2-VL on vLLM, from the command line.

  qwenvl parse scans/*.pdf --out parsed/          blocks with boxes as JSONL + Markdown + drawn pages
  qwenvl ask report.pdf "What was the revenue?"   an answer citing page regions, and an image of them
  qwenvl chat photo.png "What is in this image?"  one-shot vision chat, streamed
  qwenvl finetune train.jsonl --out adapter/      a LoRA adapter from image -> answer examples

`parse --backend ocr` needs no GPU and no model (Tesseract on the CPU). Everything else runs a Qwen-VL model
(Qwen2-VL, Qwen2.5-VL or Qwen3-VL, the family read from its config): in this process with vLLM (--model,
default $QWENVL_MODEL or Qwen/Qwen2.5-VL-3B-Instruct), or on a vLLM server (--base-url http://host:8000/v1,
started with `vllm serve MODEL --trust-request-mm-kwargs`).
"""


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Adds the model options (--model, --base-url, pixel limits, vLLM settings) to an argument parser."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"hub id or folder (default: $QWENVL_MODEL or {DEFAULT_MODEL})")
    g.add_argument(
        "--base-url",
        default=os.environ.get("QWENVL_BASE_URL"),
        help="a vLLM server's OpenAI URL, e.g. http://localhost:8000/v1 (default: $QWENVL_BASE_URL)",
    )
    g.add_argument("--api-key", default=os.environ.get("QWENVL_API_KEY"), help="the server's API key (--base-url only)")
    g.add_argument(
        "--min-pixels", type=int, help="smallest image size in pixels (default: the family's, 4*28*28 or 64*32*32)"
    )
    g.add_argument(
        "--max-pixels", type=int, help="largest image size in pixels (default: 1280 tokens, 1280*28*28 or 1280*32*32)"
    )
    g.add_argument("--max-model-len", type=int, default=8192, help="context length (default 8192)")
    g.add_argument("--dtype", help="vLLM dtype (auto, bfloat16, float32, ...; in-process engine only)")
    g.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="share of GPU memory vLLM may take (default 0.9; on a CPU, a share of the memory free now)",
    )
    g.add_argument("--tensor-parallel-size", type=int, help="GPUs per model (in-process engine only; default 1)")
    g.add_argument(
        "--enforce-eager",
        action="store_true",
        help="run the model without torch.compile and CUDA graphs: a faster start (about 30 s less on a CPU), "
        "slower steps on a GPU (in-process engine only; for a server: vllm serve --enforce-eager)",
    )


def _model_name(args: argparse.Namespace) -> str:
    return args.model or os.environ.get("QWENVL_MODEL") or DEFAULT_MODEL


def make_engine(args: argparse.Namespace) -> Any:
    """The engine the options name: a `VLLMServerEngine` for --base-url, else an in-process `VLLMEngine`.

    A model that cannot be loaded raises `EngineError` saying what to pass instead."""
    from qwenvl.errors import EngineError

    model = _model_name(args)
    options = engine_arguments(args)
    try:
        return create_engine(model, args.base_url, **options)
    except (QwenVLError, OSError) as exc:
        if getattr(exc, "extra", None):  # a missing package: its own message says what to install
            raise
        raise EngineError(
            f"cannot use model {model!r}: {_one_line(exc)} -- pass --model PATH (a folder with the model), "
            "--base-url URL (a running vLLM server), or set HF_HUB_OFFLINE=1 with the model in the local cache."
        ) from exc


def engine_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the command line sets (None: the engine's default), for `create_engine`.

    Raises `EngineError` for --enforce-eager with --base-url (a server's own flags decide)."""
    from qwenvl.errors import EngineError

    if args.enforce_eager and args.base_url:
        raise EngineError(
            "--enforce-eager applies to the in-process engine; a server decides for itself: start it with "
            "`vllm serve --enforce-eager`, or drop --base-url."
        )
    return {
        "api_key": args.api_key if args.base_url else None,  # $QWENVL_API_KEY is for servers
        "max_model_len": args.max_model_len,
        "min_pixels": args.min_pixels,
        "max_pixels": args.max_pixels,
        "dtype": args.dtype,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "tensor_parallel_size": args.tensor_parallel_size,
        "engine_kwargs": {"enforce_eager": True} if args.enforce_eager else None,
    }


def _wants_engine(args: argparse.Namespace) -> bool:
    if args.backend == "vlm":
        return True
    if args.backend == "ocr":
        return False
    return bool(args.model or args.base_url or os.environ.get("QWENVL_MODEL"))


def _cache_dir(args: argparse.Namespace) -> str | None:
    if args.no_cache:
        return None
    if args.cache_dir:
        return str(args.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "qwenvl" / "pages")


def _parser_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("parsing")
    g.add_argument(
        "--backend",
        choices=["auto", "vlm", "ocr"],
        default="auto",
        help="auto: a PDF's text layer, else the VLM when a model is named, else OCR (default)",
    )
    g.add_argument("--lang", default="eng", help="OCR language (Tesseract code; chi_sim uses RapidOCR)")
    g.add_argument("--dpi", type=float, default=200.0, help="resolution for OCR and text-layer pages (default 200)")
    g.add_argument("--password", help="password of encrypted PDFs")
    g.add_argument("--cache-dir", type=Path, help="finished pages are kept here (default ~/.cache/qwenvl/pages)")
    g.add_argument("--no-cache", action="store_true", help="parse every page again")
    g.add_argument("--batch-size", type=int, default=32, help="pages per engine call (default 32)")


def _parser_keywords(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "lang": args.lang,
        "dpi": args.dpi,
        "password": args.password,
        "cache_dir": _cache_dir(args),
        "batch_size": args.batch_size,
        "progress": True,
        "max_pixels": args.max_pixels,
        "min_pixels": args.min_pixels,
    }


def _document_parser(args: argparse.Namespace, engine: Any) -> Any:
    from qwenvl.layout import DocumentParser

    return DocumentParser(engine, args.backend, **_parser_keywords(args))


def _ray_parser(args: argparse.Namespace) -> Any:
    """`RayDocumentParser` for ``--ray``: engines are built in the Ray actors from the model options."""
    from qwenvl.layout.ray import RayDocumentParser

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the command shows its own progress

    wants = _wants_engine(args)
    return RayDocumentParser(
        args.backend,
        model=_model_name(args) if wants else None,
        base_url=args.base_url if wants else None,
        engine_options=engine_arguments(args) if wants else None,  # None values keep the engine's defaults
        address=args.ray,
        engines=args.engines,
        gpus_per_engine=args.gpus_per_engine,
        **_parser_keywords(args),
    )


def _draw_pages(source: str, pages: list[tuple[int, float, list[Any], list[str]]], folder: str, password: Any) -> int:
    """Draws a document's blocks on its pages, one PNG each (in a Ray task with --ray); a page that cannot be
    drawn again (past its reader's limits) loses its picture, not the run. Returns the pages drawn."""
    from qwenvl.layout import highlight, open_document

    Path(folder).mkdir(parents=True, exist_ok=True)
    drawn = 0
    try:
        doc = open_document(source, password=password)
    except QwenVLError as exc:
        print(f"{source}: pages not drawn: {_one_line(exc)}", file=sys.stderr)
        return 0
    with doc:
        for number, dpi, boxes, labels in pages:
            try:
                image = doc.page(number).render(dpi)[0]
            except QwenVLError as exc:
                print(f"  page {number}: not drawn: {_one_line(exc)}", file=sys.stderr)
                continue
            highlight(image, boxes, labels=labels, opacity=0.2).save(Path(folder) / f"page-{number:03d}.png")
            drawn += 1
    return drawn


def _unique_stem(source: str, used: set[str]) -> str:
    stem = Path(source).stem or "document"
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}-{k}", k + 1
    used.add(name)
    return name


def cmd_parse(args: argparse.Namespace) -> int:
    """`qwenvl parse`: JSONL of blocks, Markdown, the full JSON and drawn pages per document (with --ray, on a
    Ray cluster; the same files)."""
    from qwenvl.layout.export import dumps_records, write_blocks_parquet

    engine = make_engine(args) if _wants_engine(args) and not args.ray else None
    parser = _ray_parser(args) if args.ray else _document_parser(args, engine)
    drawings: list[Any] = []  # Ray tasks drawing pages (--ray)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    totals = {"ok": 0, "fallback": 0, "failed": 0}
    unreadable = 0
    try:
        for doc in parser.parse_many(args.paths):
            if doc.error is not None:
                unreadable += 1
                print(f"{doc.source}: not parsed: {doc.error}", file=sys.stderr)
                continue
            stem = _unique_stem(doc.source, used)
            (out / f"{stem}.jsonl").write_text(dumps_records(doc), encoding="utf-8")
            (out / f"{stem}.md").write_text(doc.to_markdown(), encoding="utf-8")
            (out / f"{stem}.json").write_text(doc.to_json(indent=1), encoding="utf-8")
            if args.parquet:
                write_blocks_parquet(doc, Path(args.parquet) / f"{stem}.parquet")
            if not args.no_images:
                drawn = [
                    (
                        p.number,
                        p.dpi,
                        [b.bbox for b in p.blocks if b.bbox is not None],
                        [f"{b.reading_order} {b.type.value}" for b in p.blocks if b.bbox is not None],
                    )
                    for p in doc.pages
                    if p.width  # a page that could not even be rendered has nothing to draw on
                ]
                if drawn and args.ray:
                    import ray

                    task = ray.remote(num_cpus=1)(_draw_pages)
                    drawings.append(task.remote(doc.source, drawn, str(out / stem), args.password))
                elif drawn:
                    _draw_pages(doc.source, drawn, str(out / stem), args.password)
            counts = doc.status_counts()
            for key, value in counts.items():
                totals[key] += value
            blocks = sum(len(p.blocks) for p in doc.pages)
            print(
                f"{doc.source}: {len(doc.pages)} pages, {blocks} blocks "
                f"(ok {counts['ok']}, fallback {counts['fallback']}, failed {counts['failed']}) -> {out / stem}.*"
            )
            for page in doc.pages:
                if page.status != "ok" or page.error:
                    print(f"  page {page.number}: {page.status}: {page.error}", file=sys.stderr)
        if drawings:
            import ray

            ray.get(drawings, timeout=max(60.0, 10.0 * len(drawings)))
    finally:
        if engine is not None:
            engine.close()
    pages = sum(totals.values())
    print(
        f"pages: {pages} (ok {totals['ok']}, fallback {totals['fallback']}, failed {totals['failed']}); "
        f"documents not readable: {unreadable}"
    )
    return 1 if unreadable or totals["failed"] else 0


def cmd_ask(args: argparse.Namespace) -> int:
    """`qwenvl ask`: parse (cached), index, retrieve, answer with citations, save the highlighted regions."""
    from qwenvl.ask import LayoutIndex, answer_request, citation_image, cited_numbers, stream_answer

    engine = make_engine(args)
    try:
        parser = _document_parser(args, engine if args.backend != "ocr" else None)
        docs = []
        for doc in parser.parse_many(args.paths):
            if doc.error is not None:
                print(f"{doc.source}: not parsed: {doc.error}", file=sys.stderr)
                continue
            docs.append(doc)
        index = LayoutIndex()
        if not index.add(docs):
            print("no text found in the documents: nothing to search", file=sys.stderr)
            return 1
        citations = index.search(args.question, k=args.top_k)
        pages: dict[tuple[str, int], Any] = {}
        limit = getattr(getattr(engine, "defaults", None), "limit_images", 4)
        request = answer_request(
            args.question, citations, max_images=min(args.max_images, limit), max_tokens=args.max_tokens, pages=pages
        )
        answer = []
        for piece in stream_answer(engine, request):
            answer.append(piece)
            print(piece, end="", flush=True)
        print("\n\nSources:")
        numbers = cited_numbers("".join(answer), citations)
        for c in citations:
            print(("* " if c.number in numbers else "  ") + c.label)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        image_path = out / "answer-citations.png"
        citation_image(citations, numbers, pages=pages).save(image_path)
        print(f"cited regions highlighted in {image_path}")
    finally:
        engine.close()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """`qwenvl chat`: a vision question about images, streamed."""
    from qwenvl.messages import ChatRequest, Image, Message, SamplingOptions, Text

    if not args.items:
        raise SystemExit("qwenvl chat: give image paths or URLs, then the prompt")
    *images, prompt = args.items
    engine = make_engine(args)
    try:
        request = ChatRequest(
            [Message("user", [*(Image(i) for i in images), Text(prompt)])],
            SamplingOptions(max_tokens=args.max_tokens, temperature=args.temperature),
        )
        last = None
        for chunk in engine.stream(request):
            print(chunk.text, end="", flush=True)
            last = chunk
        print()
        if last is not None and last.usage is not None:
            u = last.usage
            print(
                f"[{u.prompt_tokens} prompt tokens ({u.image_tokens} image), {u.completion_tokens} generated]",
                file=sys.stderr,
            )
    finally:
        engine.close()
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """`qwenvl finetune`: train a LoRA adapter; optionally merge it into a full checkpoint."""
    from qwenvl.finetune import FinetuneConfig, finetune, merge_adapter

    config = FinetuneConfig(
        rank=args.rank,
        alpha=args.alpha or 2 * args.rank,
        learning_rate=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        mix_ratio=args.mix,
        train_vision=args.train_vision,
        seed=args.seed,
        dtype=args.dtype,
    )
    result = finetune(_model_name(args), args.data, args.out, general=args.general, config=config)
    first, last = (result.losses[0], result.losses[-1]) if result.losses else (float("nan"), float("nan"))
    print(
        f"adapter saved in {result.adapter_path} ({result.examples} examples, "
        f"{result.trainable_parameters} trainable parameters; loss {first:.4f} -> {last:.4f})"
    )
    print(
        f"serve it: VLLMEngine(model, enable_lora=True, max_lora_rank={args.rank}) with "
        f"ChatRequest(..., lora={str(result.adapter_path)!r})"
    )
    if args.merge_to:
        out = merge_adapter(_model_name(args), result.adapter_path, args.merge_to, dtype=args.dtype)
        print(f"merged checkpoint saved in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `qwenvl` command."""
    root = argparse.ArgumentParser(
        prog="qwenvl", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root.add_argument("--debug", action="store_true", help="print the full traceback of an unexpected error")
    sub = root.add_subparsers(dest="command", required=True, metavar="{parse,ask,chat,finetune}")

    p = sub.add_parser(
        "parse",
        help="documents into blocks with boxes (JSONL, Markdown, drawn pages)",
        description="Parse PDFs, TIFFs and images (files, folders or globs) into typed blocks with "
        "boxes, in reading order. Writes OUT/NAME.jsonl (a block per line with page, "
        "x0/y0/x1/y1, type, text), OUT/NAME.md, OUT/NAME.json and OUT/NAME/page-NNN.png "
        "(the blocks drawn). Exit status 1 when a document or page failed.",
    )
    p.add_argument("paths", nargs="+", help="PDF, TIFF, PNG/JPEG/WebP files, folders or glob patterns")
    p.add_argument("--out", default="qwenvl-out", help="output folder (default qwenvl-out)")
    p.add_argument("--no-images", action="store_true", help="skip drawing the pages")
    p.add_argument("--parquet", type=Path, help="also write the blocks as a Parquet dataset in this folder")
    r = p.add_argument_group("ray (pip install 'qwenvl[ray]')")
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="parse on Ray Data: 'local' (the default) starts a cluster on this machine; 'auto' or "
        "ray://HOST:10001 joins one",
    )
    r.add_argument("--engines", type=int, default=1, help="VLM engines (Ray actors), one model copy each (default 1)")
    r.add_argument(
        "--gpus-per-engine",
        type=float,
        help="GPUs per engine actor (default: --tensor-parallel-size when the cluster has GPUs, else 0)",
    )
    _parser_options(p)
    add_engine_options(p)
    p.set_defaults(func=cmd_parse)

    a = sub.add_parser(
        "ask",
        help="a question over documents, answered with page-and-box citations",
        description="Parse the documents (cached), index their blocks with a local embedding model, "
        "retrieve the closest ones, and let Qwen2-VL answer seeing those page regions. "
        "Prints the answer and its sources, and saves OUT/answer-citations.png.",
    )
    a.add_argument("paths", nargs="+", help="documents, folders or globs")
    a.add_argument("question", help="the question (quote it)")
    a.add_argument("--top-k", type=int, default=4, help="excerpts to retrieve (default 4)")
    a.add_argument("--max-images", type=int, default=3, help="excerpts shown to the model as page crops (default 3)")
    a.add_argument("--max-tokens", type=int, default=256)
    a.add_argument("--out", default="qwenvl-out", help="folder for the citation image (default qwenvl-out)")
    _parser_options(a)
    add_engine_options(a)
    a.set_defaults(func=cmd_ask)

    c = sub.add_parser(
        "chat", help="one-shot vision chat, streamed", description='Ask about images: qwenvl chat IMAGE... "prompt"'
    )
    c.add_argument("items", nargs="+", metavar="IMAGE... PROMPT", help="image paths or URLs, then the prompt")
    c.add_argument("--max-tokens", type=int, default=512)
    c.add_argument("--temperature", type=float, default=0.0)
    add_engine_options(c)
    c.set_defaults(func=cmd_chat)

    f = sub.add_parser(
        "finetune",
        help="train a LoRA adapter on image -> answer examples (JSONL)",
        description="Fine-tune a LoRA adapter of --model on a JSONL file of conversations (each "
        'line {"messages": [...]} ending with the assistant\'s answer; images by path '
        "relative to the file). Loss on the answer only; the vision encoder frozen unless "
        "--train-vision. The adapter (PEFT format) is served by VLLMEngine(enable_lora="
        "True) per request, or merged with --merge-to.",
    )
    f.add_argument("data", help="training examples (JSONL)")
    f.add_argument("--out", required=True, help="folder for the adapter")
    f.add_argument("--model", help=f"base model (default: $QWENVL_MODEL or {DEFAULT_MODEL})")
    f.add_argument("--general", help="general examples (JSONL) mixed in against forgetting")
    f.add_argument("--mix", type=float, default=0.0, help="general examples per domain example (e.g. 0.2)")
    f.add_argument("--rank", type=int, default=16)
    f.add_argument("--alpha", type=int, help="LoRA alpha (default 2 x rank)")
    f.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    f.add_argument("--epochs", type=float, default=3.0)
    f.add_argument("--batch-size", type=int, default=1)
    f.add_argument("--train-vision", action="store_true", help="also adapt the vision encoder (serve merged)")
    f.add_argument("--dtype", default="float32", help="training dtype (float32, bfloat16)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--merge-to", help="also save base + adapter merged as a full checkpoint here")
    f.set_defaults(func=cmd_finetune)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `qwenvl` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except QwenVLError as exc:
        if args.debug:
            raise
        print(f"qwenvl {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; finished pages are cached", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; the traceback with --debug
        if args.debug:
            raise
        print(
            f"qwenvl {args.command}: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 600 else text[:597] + "..."


if __name__ == "__main__":
    sys.exit(main())
