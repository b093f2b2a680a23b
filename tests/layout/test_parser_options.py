"""DocumentParser's options objects: the keyword arguments and the nested options build the same parser, and
the page-cache key follows the options' fields (a field that changes output changes the key, one marked as not
cached does not)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qwenvl.errors import LayoutError
from qwenvl.layout import DocumentParser, OCROptions, PageOptions, ParserOptions, RunOptions, VLMOptions
from qwenvl.layout.options import cache_fingerprint
from qwenvl.layout.pages import open_document


def _key(parser: DocumentParser, pdf: Path) -> str:
    with open_document(pdf) as doc:
        return parser._key(next(doc.pages()))


def test_keywords_and_options_are_the_same_parser(scan: Path) -> None:
    by_keywords = DocumentParser(backend="ocr", dpi=150, lang="eng", batch_size=4, retries=3)
    by_options = DocumentParser(
        options=ParserOptions(
            backend="ocr",
            pages=PageOptions(dpi=150),
            ocr=OCROptions(lang="eng"),
            run=RunOptions(batch_size=4, retries=3),
        )
    )
    assert by_keywords.options == by_options.options
    assert _key(by_keywords, scan) == _key(by_options, scan)
    assert by_options.dpi == 150 and by_options.batch_size == 4


def test_options_and_keywords_together_are_refused() -> None:
    with pytest.raises(LayoutError, match="batch_size"):
        DocumentParser(options=ParserOptions(), batch_size=8)
    with pytest.raises(LayoutError, match="backend"):
        DocumentParser(None, "ocr", options=ParserOptions())


def test_cache_key_follows_the_fields_that_change_output(scan: Path) -> None:
    base = ParserOptions(backend="ocr")
    key = _key(DocumentParser(options=base), scan)
    changed = [
        dataclasses.replace(base, pages=PageOptions(dpi=300)),
        dataclasses.replace(base, ocr=OCROptions(lang="deu")),
        dataclasses.replace(base, run=RunOptions(fallback=False)),
    ]
    for options in changed:
        assert cache_fingerprint(options) != cache_fingerprint(base)
    unchanged = [
        dataclasses.replace(base, run=RunOptions(batch_size=2, retries=5, progress=False)),
        dataclasses.replace(base, pages=PageOptions(password="x")),
        dataclasses.replace(base, cache_dir="/tmp/elsewhere"),
        dataclasses.replace(base, ocr=OCROptions(workers=1)),
    ]
    for options in unchanged:
        assert _key(DocumentParser(options=options), scan) == key
    # every field of the VLM options is part of the key (with the prompt's version), none listed by hand
    vlm = cache_fingerprint(VLMOptions())
    assert set(vlm) == {f.name for f in dataclasses.fields(VLMOptions)} | {"prompt_version"}


def test_the_engine_can_be_built_from_model_and_base_url(tiny_model: Path) -> None:
    from qwenvl import VLLMServerEngine
    from qwenvl.errors import RequestError
    from tests.reliability.fake_server import FakeServer, completion

    with FakeServer(lambda ex: ex.send(200, completion("{}"))) as server:
        parser = DocumentParser(model="tiny", base_url=server.url, engine_options={"tokenizer": str(tiny_model)})
        try:
            assert isinstance(parser.engine, VLLMServerEngine) and parser.engine.max_model_len == 4096
        finally:
            parser.engine.close()
        with pytest.raises(RequestError, match="gpu_memory_utilization"):
            DocumentParser(model="tiny", base_url=server.url, engine_options={"gpu_memory_utilization": 0.5})
        with pytest.raises(RequestError, match="model"):
            DocumentParser(parser.engine, model="tiny")
