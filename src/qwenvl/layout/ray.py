"""`DocumentParser` on Ray Data: the same options, pages and blocks, over the CPUs and GPUs of a Ray cluster.

Files are listed and their pages counted in Ray tasks; pages are rendered and read in Ray tasks (text layer,
OCR), or rendered in tasks and read by an actor pool of engines (VLM: one engine per actor, ``num_gpus`` each,
or a server engine per actor against replicas). Each worker runs `DocumentParser.parse_pages`, so statuses,
fallback, retries, batching and the page cache are the ones of one process. The driver only assembles: every
page comes back once (a page that a retried task sends again is ignored; one that never comes back is recorded
as failed), and each document is yielded when its pages are done, in input order.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from qwenvl._lazy import require
from qwenvl.errors import DocumentError, LayoutError
from qwenvl.layout.model import Page, ParsedDocument
from qwenvl.layout.options import Backend, ParserOptions
from qwenvl.layout.pages import expand_sources, open_document
from qwenvl.layout.pipeline import DocumentParser

if TYPE_CHECKING:
    from qwenvl.engine.prepare import EngineDefaults
    from qwenvl.models import ModelProfile

__all__ = ["RayDocumentParser"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _EngineFacts:
    """What the CPU stages need to know of the engine without starting it: the name the page-cache key holds,
    the family and the pixel defaults (the options are resolved from them as `DocumentParser` does)."""

    model_name: str
    profile: ModelProfile
    defaults: EngineDefaults


@dataclass(frozen=True)
class _Spec:
    """Everything a worker builds its parser from (sent to every task and actor)."""

    options: ParserOptions
    facts: _EngineFacts | None
    model: str | None = None
    base_url: str | list[str] | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    #: tells one run's spec from another's in a reused worker process
    token: str = field(default_factory=lambda: os.urandom(8).hex())


#: times a task (or an actor's call) is run again after its worker died; then its pages are recorded as failed
_TASK_RETRIES = 3


# one parser per worker process and spec, so that a worker reused for many tasks builds it once
_PARSERS: dict[str, DocumentParser] = {}


def _cpu_parser(spec: _Spec) -> DocumentParser:
    if spec.token not in _PARSERS:
        _PARSERS.clear()
        _PARSERS[spec.token] = DocumentParser(spec.facts, options=spec.options)  # type: ignore[arg-type]
    return _PARSERS[spec.token]


def _list_files(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per document an argument names (a file, folder, glob or URL)."""
    try:
        items = expand_sources(row["arg"])
    except (LayoutError, DocumentError, OSError) as exc:
        return [{"arg": row["arg"], "order": row["order"], "index": 0, "path": row["arg"], "error": str(exc)}]
    return [
        {"arg": row["arg"], "order": row["order"], "index": k, "path": str(item), "error": ""}
        for k, item in enumerate(items)
    ]


def _list_pages(row: dict[str, Any], spec: _Spec) -> list[dict[str, Any]]:
    """One row per page of a document; one row with ``error`` for a document that cannot be opened."""
    base = {"doc": row["doc"], "path": row["path"], "page": 0, "pages": 0, "name": row["path"], "error": ""}
    if row["error"]:
        return [{**base, "error": row["error"]}]
    pages = spec.options.pages
    try:
        with open_document(row["path"], password=pages.password, policy=pages.policy, limits=pages.limits) as doc:
            return [
                {**base, "name": doc.name, "page": n, "pages": doc.page_count} for n in range(1, doc.page_count + 1)
            ]
    except DocumentError as exc:
        return [{**base, "name": str(getattr(exc, "source", row["path"])), "error": str(exc)}]


def _empty_result(batch: dict[str, Any]) -> dict[str, list[Any]]:
    return {key: list(batch[key]) for key in ("doc", "path", "page", "pages", "name", "error")}


def _parse_cpu(batch: dict[str, Any], spec: _Spec) -> dict[str, list[Any]]:
    """Text-layer and OCR pages, read in this task."""
    parser = _cpu_parser(spec)
    out = _empty_result(batch)
    out["result"] = [""] * len(out["doc"])
    _parse_rows(parser, batch, out, images=None)
    return out


def _prepare_vlm(batch: dict[str, Any], spec: _Spec) -> dict[str, list[Any]]:
    """The CPU part of VLM pages: pages the cache or the text layer has are finished here; the others are
    rendered for the engine (raw RGB bytes, width, height, dpi)."""
    parser = _cpu_parser(spec)
    out = _empty_result(batch)
    n = len(out["doc"])
    out.update(result=[""] * n, image=[b""] * n, width=[0] * n, height=[0] * n, dpi=[0.0] * n)
    by_path = _open_rows(batch, spec.options)
    for k in range(n):
        if out["error"][k] or out["page"][k] == 0:
            continue
        doc = by_path.get(str(batch["path"][k]))
        if doc is None:
            continue  # it failed to open here: parse_pages records it
        prepared = parser.prepare_page(doc.page(int(out["page"][k])))
        if isinstance(prepared, Page):
            out["result"][k] = prepared.model_dump_json()
        elif prepared is not None:
            image, dpi = prepared
            out["image"][k], out["width"][k], out["height"][k], out["dpi"][k] = (
                image.tobytes(),
                image.width,
                image.height,
                dpi,
            )
    for doc in by_path.values():
        doc.close()
    return out


class _VLMWorker:
    """One engine per actor; each call reads a batch of pages (pages of many documents) in one engine call."""

    def __init__(self, spec: _Spec) -> None:
        from qwenvl.engine.factory import create_engine

        self.engine = create_engine(spec.model, spec.base_url, **spec.engine_options)
        if spec.facts is not None and self.engine.model_name != spec.facts.model_name:
            raise LayoutError(
                f"the engine reads {self.engine.model_name!r}, the driver planned {spec.facts.model_name!r}"
            )
        self.parser = DocumentParser(self.engine, options=spec.options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        import PIL.Image

        out = _empty_result(batch)
        out["result"] = [str(r) for r in batch["result"]]
        images: list[Any] = []
        for k in range(len(out["doc"])):
            raw = batch["image"][k]
            if len(raw):
                size = (int(batch["width"][k]), int(batch["height"][k]))
                images.append((PIL.Image.frombytes("RGB", size, bytes(raw)), float(batch["dpi"][k])))
            else:
                images.append(None)
        _parse_rows(self.parser, batch, out, images=images)
        return out

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def _open_rows(batch: dict[str, Any], options: ParserOptions) -> dict[str, Any]:
    """The documents of a batch's page rows, each opened once (one that fails is left out: its pages fail)."""
    docs: dict[str, Any] = {}
    for k in range(len(batch["doc"])):
        path = str(batch["path"][k])
        if batch["error"][k] or int(batch["page"][k]) == 0 or path in docs:
            continue
        try:
            pages = options.pages
            docs[path] = open_document(path, password=pages.password, policy=pages.policy, limits=pages.limits)
        except DocumentError as exc:
            _log.warning("%s", exc)
    return docs


def _parse_rows(
    parser: DocumentParser, batch: dict[str, Any], out: dict[str, list[Any]], *, images: list[Any] | None
) -> None:
    """Fills ``out["result"]`` (page JSON) of the rows still without one, with `DocumentParser.parse_pages`."""
    by_path = _open_rows(batch, parser.options)
    todo: list[int] = []
    pages = []
    try:
        for k in range(len(out["doc"])):
            if out["error"][k] or out["page"][k] == 0 or out["result"][k]:
                continue
            path = str(batch["path"][k])
            if path not in by_path:
                out["result"][k] = _lost(int(out["page"][k]), f"{path} could not be opened again").model_dump_json()
                continue
            todo.append(k)
            pages.append(by_path[path].page(int(out["page"][k])))
        if pages:
            try:
                done = parser.parse_pages(pages, images=[images[k] for k in todo] if images is not None else None)
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its pages, not the job
                _log.exception("a batch of %d pages failed", len(pages))
                done = [_lost(p.number, f"the batch failed: {type(exc).__name__}: {exc}") for p in pages]
            for k, page in zip(todo, done, strict=True):
                out["result"][k] = page.model_dump_json()
    finally:
        for doc in by_path.values():
            doc.close()


def _lost(number: int, reason: str) -> Page:
    return Page(number=number, width=0, height=0, dpi=0.0, status="failed", error=reason)


def _engine_facts(model: str | None, base_url: str | list[str] | None, options: dict[str, Any]) -> _EngineFacts:
    from qwenvl.engine.factory import plan_engine
    from qwenvl.engine.prepare import EngineDefaults
    from qwenvl.models import load_profile

    model = model or os.environ.get("QWENVL_MODEL") or None
    if model is None:
        raise LayoutError("RayDocumentParser: the VLM needs model= (a hub id or folder; with base_url= for a server)")
    plan_engine("RayDocumentParser", engine=None, model=model, base_url=base_url, options=options, explicit=set())
    profile = load_profile(options.get("tokenizer") or model)
    defaults = EngineDefaults.create(
        min_pixels=options.get("min_pixels"), max_pixels=options.get("max_pixels"), profile=profile
    )
    return _EngineFacts(str(model), profile, defaults)


class RayDocumentParser:
    """`DocumentParser` on a Ray cluster: the same options and the same pages, read by Ray Data workers.

    ``address``: the Ray cluster to join ("auto", "ray://host:10001") or "local" to start one on this machine;
    None uses the Ray already initialized in this process, else starts a local one. The VLM (``model``, with
    ``base_url`` for vLLM servers, and ``engine_options`` for `qwenvl.create_engine`) runs as ``engines``
    actors, each with its own engine on ``gpus_per_engine`` GPUs (None: ``tensor_parallel_size`` GPUs when the
    cluster has GPUs, else none). Rendering, text layers and OCR run as Ray tasks of ``cpus_per_task`` CPUs,
    ``pages_per_task`` pages each. Every other keyword is a `DocumentParser` option (or pass ``options``).

    Set ``cache_dir`` (on storage every node sees) to resume: a rerun skips the pages a killed run finished.
    """

    def __init__(
        self,
        backend: Backend = "auto",
        *,
        options: ParserOptions | None = None,
        model: str | None = None,
        base_url: str | list[str] | None = None,
        engine_options: dict[str, Any] | None = None,
        address: str | None = None,
        engines: int = 1,
        gpus_per_engine: float | None = None,
        cpus_per_task: float = 1.0,
        pages_per_task: int = 4,
        **parser_options: Any,
    ) -> None:
        require("ray.data", "ray")
        engine_options = dict(engine_options or {})
        facts = None
        if model is not None or base_url is not None or os.environ.get("QWENVL_MODEL"):
            facts = _engine_facts(model, base_url, engine_options)
        elif engine_options:
            raise LayoutError("RayDocumentParser: engine_options= needs model= (the VLM the actors run)")
        if facts is None and (backend == "vlm" or (options is not None and options.backend == "vlm")):
            raise LayoutError("RayDocumentParser: backend='vlm' needs model= (and base_url= for vLLM servers)")
        if engines < 1 or pages_per_task < 1:
            raise LayoutError(f"engines={engines}, pages_per_task={pages_per_task}: use 1 or more")
        # the options resolved as DocumentParser resolves them with this engine (also checks OCR is there)
        probe = DocumentParser(facts, backend, options=options, **parser_options)  # type: ignore[arg-type]
        #: the resolved options (every worker reads pages with these)
        self.options = probe.options
        self._spec = _Spec(self.options, facts, facts.model_name if facts else None, base_url, engine_options)
        self.address = address
        self.engines = engines
        self.gpus_per_engine = gpus_per_engine
        self.cpus_per_task = cpus_per_task
        self.pages_per_task = pages_per_task
        self._uses_vlm = probe._wants_vlm()
        #: counts of the last run: pages, duplicates (sent twice by a retried task, ignored), lost (never came
        #: back: recorded as failed)
        self.stats: dict[str, int] = {}

    def _init_ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        elif self.address not in (None, "auto"):
            _log.info("Ray is already initialized in this process; address=%r is not used", self.address)
        return ray

    def parse_many(self, sources: Any) -> Iterator[ParsedDocument]:
        """Every document of ``sources`` (paths, folders, globs, URLs: what every worker can read), in order,
        each yielded when its pages are done; one that cannot be opened comes back with ``error`` set."""
        ray = self._init_ray()
        items = [sources] if isinstance(sources, (str, bytes, os.PathLike)) else list(sources)
        args = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in items]
        if not all(isinstance(a, str) for a in args):
            raise LayoutError(
                "RayDocumentParser reads paths, folders, globs and URLs (what every worker can open); "
                "parse bytes and in-memory images with DocumentParser"
            )
        ctx = ray.data.DataContext.get_current()
        saved = (ctx.enable_progress_bars, ctx.max_errored_blocks)
        # the datasets made here copy these settings: no Ray progress bars (ours is on the driver), and a batch
        # that fails for good (a worker crashing on it every time) drops its pages, recorded as failed, instead
        # of failing the job
        ctx.enable_progress_bars, ctx.max_errored_blocks = False, -1
        try:
            listed = ray.data.from_items(
                [{"arg": a, "order": i} for i, a in enumerate(args)], override_num_blocks=max(1, len(args))
            )
            files = sorted(listed.flat_map(_list_files).take_all(), key=lambda r: (r["order"], r["index"]))
            results = self._pipeline(ray, files)
        finally:
            ctx.enable_progress_bars, ctx.max_errored_blocks = saved
        yield from self._assemble(results, len(files))

    def _pipeline(self, ray: Any, files: list[dict[str, Any]]) -> Any:
        """The dataset of page results (doc, page, pages, name, error, result) of ``files``."""
        spec = self._spec
        docs = ray.data.from_items(
            [{"doc": k, "path": f["path"], "error": f["error"]} for k, f in enumerate(files)],
            override_num_blocks=max(1, min(len(files), 1000)),
        )
        # tasks whose worker dies are run again up to 3 times (Ray's default), then their pages are lost
        pages = docs.flat_map(_list_pages, fn_kwargs={"spec": spec}).repartition(
            target_num_rows_per_block=self.pages_per_task
        )
        task = {"num_cpus": self.cpus_per_task, "batch_size": self.pages_per_task}
        if not self._uses_vlm:
            results = pages.map_batches(_parse_cpu, fn_kwargs={"spec": spec}, **task)
        else:
            gpus = self.gpus_per_engine
            if gpus is None:  # an in-process engine on GPUs when the cluster has them
                on_gpus = spec.base_url is None and ray.cluster_resources().get("GPU", 0) > 0
                gpus = float(spec.engine_options.get("tensor_parallel_size") or 1) if on_gpus else 0.0
            prepared = pages.map_batches(_prepare_vlm, fn_kwargs={"spec": spec}, **task)
            with warnings.catch_warnings():
                # Ray Data retries an actor's batch forever by default: a page that kills its engine every time
                # would hang the job. A bounded retry count has no named parameter yet (Ray < 2.64 takes it).
                warnings.simplefilter("ignore", DeprecationWarning)
                results = prepared.map_batches(
                    _VLMWorker,
                    fn_constructor_kwargs={"spec": spec},
                    batch_size=self.options.run.batch_size,
                    concurrency=self.engines,
                    num_gpus=gpus,
                    num_cpus=self.cpus_per_task,
                    # vLLM's engine core in the actor's own process: a killed actor leaves no engine behind
                    runtime_env={"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}},
                    max_task_retries=_TASK_RETRIES,
                )
        return results.select_columns(["doc", "page", "pages", "name", "error", "result"])

    def _assemble(self, results: Any, count: int) -> Iterator[ParsedDocument]:
        show = self.options.run.progress if self.options.run.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=0, unit="page", desc="parsing (ray)", disable=not show)
        names: dict[int, str] = {}
        errors: dict[int, str] = {}
        slots: dict[int, list[Page | None]] = {}
        stats = {"pages": 0, "duplicates": 0, "lost": 0}
        next_doc = 0

        def ready(k: int) -> bool:
            return k in errors or (k in slots and all(p is not None for p in slots[k]))

        try:
            for row in results.iter_rows():
                k = int(row["doc"])
                names[k] = str(row["name"])
                if row["error"]:
                    errors[k] = str(row["error"])
                else:
                    if k not in slots:
                        slots[k] = [None] * int(row["pages"])
                        bar.total += int(row["pages"])
                        bar.refresh()
                    n = int(row["page"])
                    if slots[k][n - 1] is not None:
                        stats["duplicates"] += 1
                        continue
                    slots[k][n - 1] = Page.model_validate_json(row["result"])
                    stats["pages"] += 1
                    bar.update(1)
                while next_doc < count and ready(next_doc):
                    yield self._document(next_doc, names, errors, slots)
                    next_doc += 1
        finally:
            bar.close()
        for k in range(next_doc, count):  # documents some of whose pages never came back
            for n, page in enumerate(slots.get(k, [])):
                if page is None:
                    slots[k][n] = _lost(n + 1, "the page's result never came back from the Ray workers")
                    stats["lost"] += 1
            if k not in names:
                errors[k] = "the document never came back from the Ray workers"
            yield self._document(k, names, errors, slots)
        self.stats = stats

    @staticmethod
    def _document(
        k: int, names: dict[int, str], errors: dict[int, str], slots: dict[int, list[Page | None]]
    ) -> ParsedDocument:
        if k in errors:
            return ParsedDocument(source=names.get(k, ""), error=errors[k])
        return ParsedDocument(source=names[k], pages=[p for p in slots[k] if p is not None])
