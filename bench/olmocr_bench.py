"""olmOCR-bench on the dev set in bench/olmocr_dev: qwenvl's parsers against a plain-text baseline.

Each system turns every one-page PDF of the dev set into one markdown file (``OUT/<system>/<group>/<name>.md``),
here in the project's venv; pages/s is the number of PDFs done over the summed time of their parse + markdown
calls, after building the system and one untimed warm-up run on the first PDF (reported as setup).

The markdown is then scored by olmOCR-bench's own test classes (``olmocr.bench.tests`` of ``olmocr==0.4.27``)
in a separate venv made by ``scripts/olmocr_env.sh``: this file runs again there, as
``OLMOCR_PYTHON bench/olmocr_bench.py --score REQUEST RESULT``, and that step imports nothing from qwenvl (nor
does the project's venv need olmocr).

Systems:

- ``qwenvl-auto``: ``DocumentParser(backend="auto")``: the page's text layer, else OCR (no model);
- ``qwenvl-ocr``: ``DocumentParser(backend="ocr")``: OCR of the rendered page;
- ``plain-text``: the baseline, pypdfium2's text of the page, as it is;
- ``olmocr-answers``: the hand-written olmOCR-2 answers of tests/data/olmocr_replay (12 pages), their markdown as
  olmOCR's own pipeline keeps it (the text after the front matter);
- ``olmocr-replay``: the same answers replayed by a scripted engine through
  ``DocumentParser(layout_format="olmocr")``: blocks, boxes and back to markdown. Its score equals the answers'
  own when nothing is lost in the plumbing. Either system alone runs on the replayed pages only.

qwenvl's markdown is ``to_markdown(doc, page_breaks=False)``: the ``<!-- page 1 (ok) -->`` marker that
``ParsedDocument.to_markdown()`` (and so ``qwenvl parse``) puts first is not page content, and its letters alone
would pass olmOCR's baseline test on a page that came out empty.

Scoring, as olmOCR-bench's ``benchmark.py`` (0.4.27) does it:

- tests are read from every ``*.jsonl`` of the dev set (each test keeps its file's name as its group); only the
  tests of the PDFs chosen (``--only``) are loaded. A test is built with olmOCR's ``load_single_test`` one line
  at a time (``load_tests`` does the same in threads, but stops everything at the first bad line); a test that
  cannot be built (a math test whose reference KaTeX render cannot start the browser) fails with status
  "error" for every system instead;
- every PDF that has no ``baseline`` test gets olmOCR's ``BaselineTest(id=f"{pdf}_baseline", pdf, page=1,
  type="baseline")`` (some alphanumeric text, no long repeated n-grams at the end, no CJK or emoji characters),
  in its own group "baseline";
- ``test.run(markdown)`` gives (passed, explanation); an exception is status "error" (not passed). One markdown
  per PDF, read as page 1: a test naming another page fails, saying so. A missing markdown (the system failed
  on the PDF) fails its tests with status "error";
- the headline score is the mean, over the groups (docling.jsonl, scans.jsonl, tables.jsonl, baseline) that
  have tests, of each group's passed / total: benchmark.py's "Average Score (average of per-JSONL scores)".
  With one markdown per page (olmOCR's ``_pg1_repeat1.md``) its majority over repeats is that one result. Where
  a test errored or a markdown is missing, benchmark.py marks the whole system "FAILED (errors)" and scores it
  0; here the score is still printed, flagged with the count of errors. The per-type rows are passed / total
  per ``test.type`` (benchmark.py's per-type breakdown).

Math tests render LaTeX with KaTeX in headless Chromium (Debian's chromium-headless-shell, found through
``PLAYWRIGHT_BROWSERS_PATH=<olmocr venv>/ms-playwright`` as laid out by scripts/olmocr_env.sh). The scoring step
gives olmOCR's equation cache a fresh file each run, so a browser that cannot start can never pass from a cache.

Writes ``OUT/results.json``: per system its summary and every test's result (id, type, group, pdf, page,
passed, status, explanation), plus each PDF's production time, page status and error.

    bash scripts/olmocr_env.sh && .venv/bin/python bench/olmocr_bench.py
    .venv/bin/python bench/olmocr_bench.py --systems plain-text --only 'docling/code_formula_*'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT / "bench" / "olmocr_dev"
SYSTEMS = ("qwenvl-auto", "qwenvl-ocr", "plain-text", "olmocr-answers", "olmocr-replay")
#: hand-written olmOCR-2 answers of dev-set pages, ``<group>__<name>.md`` (the replay systems' input)
REPLAY = ROOT / "tests" / "data" / "olmocr_replay"
REPLAY_SYSTEMS = ("olmocr-answers", "olmocr-replay")
#: the groups' order in the tables (others, if a dev set has them, follow by name)
TYPES = ("present", "absent", "order", "table", "math", "baseline")

# ---- producing markdown (project venv) ------------------------------------------------------------------------

#: one system: a function from a PDF path to (markdown, details for the results), built once per run
Producer = Callable[[Path], tuple[str, dict[str, Any]]]


def qwenvl_producer(backend: str) -> Producer:
    """A producer that parses a PDF with qwenvl's `DocumentParser` (``backend`` "auto" or "ocr", no model)."""
    from qwenvl.layout import DocumentParser
    from qwenvl.layout.export import to_markdown

    parser = DocumentParser(backend=backend, progress=False)

    def produce(pdf: Path) -> tuple[str, dict[str, Any]]:
        """The PDF's markdown, without page markers, and each page's number, status, backend and error."""
        doc = parser.parse(pdf)
        pages = [{"number": p.number, "status": p.status, "backend": p.backend, "error": p.error} for p in doc.pages]
        return to_markdown(doc, page_breaks=False), {"pages": pages}

    return produce


def plain_text_producer() -> Producer:
    """A producer that returns pypdfium2's text of the PDF's first page, unchanged (the baseline)."""
    import pypdfium2 as pdfium

    def produce(pdf: Path) -> tuple[str, dict[str, Any]]:
        """The text of page 1 from the PDF's text layer (empty where it has none)."""
        doc = pdfium.PdfDocument(pdf)
        try:
            text = doc[0].get_textpage().get_text_range()
            return text, {"pages": [{"number": 1, "status": "ok", "backend": "pdfium_text", "error": None}]}
        finally:
            doc.close()

    return produce


def _replay_page(pdf: Path) -> str:
    """The replay answers' name of a dev-set PDF (``<group>__<name>``); `FileNotFoundError` when it has none."""
    page = f"{pdf.parent.name}__{pdf.stem}"
    if not (REPLAY / f"{page}.md").is_file():
        raise FileNotFoundError(f"no olmOCR-2 answer for {pdf.name} in {REPLAY}")
    return page


def olmocr_answers_producer() -> Producer:
    """The answers' own markdown: the text after the front matter (what olmOCR's pipeline keeps)."""
    from qwenvl.layout.olmocr import parse_answer
    from qwenvl_testkit.helpers import olmocr_replay_answers

    def produce(pdf: Path) -> tuple[str, dict[str, Any]]:
        _, body = parse_answer(olmocr_replay_answers(_replay_page(pdf), REPLAY)[-1])
        return body + "\n", {"pages": [{"number": 1, "status": "ok", "backend": "olmocr", "error": None}]}

    return produce


def olmocr_replay_producer() -> Producer:
    """The answers through ``DocumentParser(layout_format="olmocr")`` on a scripted engine, as markdown."""
    from qwenvl.layout import DocumentParser
    from qwenvl.layout.export import to_markdown
    from qwenvl_testkit.helpers import ReplayEngine, olmocr_replay_answers

    def produce(pdf: Path) -> tuple[str, dict[str, Any]]:
        engine = ReplayEngine(*olmocr_replay_answers(_replay_page(pdf), REPLAY))
        parser = DocumentParser(engine=engine, backend="vlm", layout_format="olmocr", progress=False)  # type: ignore[arg-type]
        doc = parser.parse(pdf)
        pages = [{"number": p.number, "status": p.status, "backend": p.backend, "error": p.error} for p in doc.pages]
        boxed = sum(b.bbox is not None for p in doc.pages for b in p.blocks)
        blocks = sum(len(p.blocks) for p in doc.pages)
        return to_markdown(doc, page_breaks=False), {"pages": pages, "blocks": blocks, "boxed": boxed}

    return produce


def make_producer(system: str) -> Producer:
    """The producer of ``system`` (one of `SYSTEMS`)."""
    if system == "qwenvl-auto":
        return qwenvl_producer("auto")
    if system == "qwenvl-ocr":
        return qwenvl_producer("ocr")
    if system == "plain-text":
        return plain_text_producer()
    if system == "olmocr-answers":
        return olmocr_answers_producer()
    if system == "olmocr-replay":
        return olmocr_replay_producer()
    raise ValueError(f"unknown system {system!r}: choose from {', '.join(SYSTEMS)}")


def produce_all(system: str, pdfs: list[str], pdf_root: Path, out: Path) -> dict[str, Any]:
    """Writes ``out/<pdf minus .pdf>.md`` for every PDF (relative to ``pdf_root``) with ``system``'s producer;
    returns the setup time (building the producer and one untimed warm-up run on the first PDF), each PDF's
    production time, details and error, and pages/s over the PDFs done."""
    start = time.perf_counter()
    producer = make_producer(system)
    try:  # warm-up: lazy imports and engine start-up are setup, not reading speed
        producer(pdf_root / pdfs[0])
    except Exception:  # noqa: BLE001, S110 - the timed pass below records the error
        pass
    setup_s = time.perf_counter() - start
    docs: dict[str, dict[str, Any]] = {}
    for rel in pdfs:
        target = out / Path(rel).with_suffix(".md")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        start = time.perf_counter()
        try:
            markdown, details = producer(pdf_root / rel)
        except Exception as exc:  # noqa: BLE001 - a PDF a system cannot do fails its own tests only
            docs[rel] = {"seconds": time.perf_counter() - start, "error": f"{type(exc).__name__}: {exc}"}
            print(f"  {system}: {rel}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        seconds = time.perf_counter() - start
        target.write_text(markdown, encoding="utf-8")
        docs[rel] = {"seconds": seconds, "error": None, "chars": len(markdown), **details}
    done = [d["seconds"] for d in docs.values() if d["error"] is None]
    busy = sum(done)
    return {
        "setup_s": setup_s,
        "pages": len(done),
        "seconds": busy,
        "pages_per_s": len(done) / busy if busy > 0 else None,
        "documents": docs,
    }


# ---- scoring (olmocr venv: stdlib and olmocr only) -----------------------------------------------------------


@contextmanager
def _fresh_equation_cache() -> Iterator[None]:
    """Points olmOCR's KaTeX equation cache at a new, empty file for the duration, then closes the browser that
    olmOCR's render thread started (if any)."""
    from olmocr.bench.katex import render

    with tempfile.TemporaryDirectory(prefix="olmocr-eqcache-") as tmp:
        render.equation_cache = render.EquationCache(os.path.join(tmp, "cache.db"))
        try:
            yield
        finally:

            def close() -> None:
                owner = getattr(render._thread_local, "owner", None)
                if owner is not None:
                    owner.close_now()

            try:
                render._render_executor.submit(close).result(timeout=60)
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                print(f"closing the KaTeX browser: {exc}", file=sys.stderr)


def _load_tests(dev_set: Path, pdfs: set[str]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The tests of ``pdfs`` from every ``*.jsonl`` of ``dev_set`` as (group, test) pairs, baseline tests added
    as benchmark.py adds them, and a record for each test that could not be built."""
    from olmocr.bench.tests import BaselineTest, load_single_test

    tests: list[tuple[str, Any]] = []
    broken: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in sorted(dev_set.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            data = json.loads(line)
            if data.get("pdf") not in pdfs:
                continue
            if data["id"] in seen:
                raise SystemExit(f"{path.name}:{number}: duplicate test id {data['id']!r}")
            seen.add(data["id"])
            try:
                tests.append((path.name, load_single_test(data)))
            except Exception as exc:  # noqa: BLE001 - e.g. a math test whose browser cannot start
                broken.append(
                    {
                        "group": path.name,
                        "id": data["id"],
                        "type": data.get("type"),
                        "pdf": data["pdf"],
                        "page": data.get("page"),
                        "error": f"could not load test ({path.name}:{number}): {type(exc).__name__}: {exc}",
                    }
                )
    if any(b["type"] == "math" for b in broken):
        print("math tests could not load: is the browser set up? (bash scripts/olmocr_env.sh)", file=sys.stderr)
    for pdf in sorted(pdfs):
        if not any(t.type == "baseline" and t.pdf == pdf for _, t in tests):
            tests.append(("baseline", BaselineTest(id=f"{pdf}_baseline", pdf=pdf, page=1, type="baseline")))
    return tests, broken


def score(request: dict[str, Any]) -> dict[str, Any]:
    """Runs olmOCR's tests on each system's markdown folder (``request``: dev_set, pdfs, systems: name ->
    {dir, missing: {pdf: error}}); returns every test's result per system. Runs in the olmocr venv."""
    pdfs = set(request["pdfs"])
    with _fresh_equation_cache():
        tests, broken = _load_tests(Path(request["dev_set"]), pdfs)
        results: dict[str, list[dict[str, Any]]] = {}
        for system, spec in request["systems"].items():
            folder = Path(spec["dir"])
            rows: list[dict[str, Any]] = []
            for item in broken:
                rows.append({**item, "passed": False, "status": "error", "explanation": item["error"]})
            for group, test in tests:
                row = {"group": group, "id": test.id, "type": test.type, "pdf": test.pdf, "page": test.page}
                md_path = folder / Path(test.pdf).with_suffix(".md")
                if test.page != 1:
                    passed, status = False, "fail"
                    explanation = f"test names page {test.page}, but each PDF is scored as one page (page 1)"
                elif not md_path.is_file():
                    passed, status = False, "error"
                    why = spec["missing"].get(test.pdf) or "no markdown written"
                    explanation = f"missing markdown {md_path.name}: {why}"
                else:
                    with open(md_path, encoding="utf-8") as f:  # text mode, as benchmark.py reads it
                        markdown = f.read()
                    try:
                        passed, explanation = test.run(markdown)
                        status = "pass" if passed else "fail"
                    except Exception as exc:  # noqa: BLE001 - e.g. the browser for a math test
                        passed, status = False, "error"
                        explanation = f"test raised {type(exc).__name__}: {exc}"
                rows.append({**row, "passed": bool(passed), "status": status, "explanation": explanation})
            results[system] = rows
    return {"results": results}


def score_main(request_path: str, result_path: str) -> None:
    """The scoring step's entry point: reads the request JSON, writes the result JSON."""
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    Path(result_path).write_text(json.dumps(score(request)), encoding="utf-8")


def run_scorer(olmocr_python: Path, request: dict[str, Any], work: Path) -> dict[str, Any]:
    """Runs `score` in the olmocr venv's python as a subprocess and returns its result."""
    if not olmocr_python.exists():
        raise SystemExit(f"{olmocr_python} not found: run `bash scripts/olmocr_env.sh` first (or --olmocr-python)")
    request_path, result_path = work / "score_request.json", work / "score_result.json"
    request_path.write_text(json.dumps(request, indent=1), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    env = dict(os.environ)
    # the layout scripts/olmocr_env.sh makes for Debian's chromium-headless-shell, next to the venv's bin/
    env.setdefault("PLAYWRIGHT_BROWSERS_PATH", str(olmocr_python.absolute().parent.parent / "ms-playwright"))
    env["TQDM_DISABLE"] = "1"
    cmd = [str(olmocr_python), str(Path(__file__).resolve()), "--score", str(request_path), str(result_path)]
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0 or not result_path.is_file():
        raise SystemExit(f"the scoring step failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(result_path.read_text(encoding="utf-8"))


# ---- summary -------------------------------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Passed/total overall, per test type and per group (JSONL file), errors, and olmOCR's headline score:
    the mean over groups of each group's pass rate."""

    def count(key: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for row in rows:
            entry = out.setdefault(str(row[key]), {"passed": 0, "total": 0, "errors": 0})
            entry["total"] += 1
            entry["passed"] += bool(row["passed"])
            entry["errors"] += row["status"] == "error"
        return out

    groups = count("group")
    rates = [g["passed"] / g["total"] for g in groups.values() if g["total"]]
    return {
        "headline": sum(rates) / len(rates) if rates else 0.0,
        "passed": sum(bool(r["passed"]) for r in rows),
        "total": len(rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "by_type": count("type"),
        "by_group": count("group"),
    }


def _ordered(keys: Any, first: tuple[str, ...]) -> list[str]:
    """``keys`` with those of ``first`` first, in that order, then the rest by name."""
    keys = set(keys)
    return [k for k in first if k in keys] + sorted(keys - set(first))


def print_tables(summaries: dict[str, dict[str, Any]], production: dict[str, dict[str, Any]]) -> None:
    """One table per system: overall, per type, per group, the headline score, and pages/s."""

    def cell(entry: dict[str, int]) -> str:
        errors = f"  ({entry['errors']} error{'s' * (entry['errors'] != 1)})" if entry["errors"] else ""
        return f"{entry['passed']:>4}/{entry['total']:<4} {100 * entry['passed'] / entry['total']:5.1f}%{errors}"

    for system, s in summaries.items():
        prod = production[system]
        pps = f"{prod['pages_per_s']:.2f} pages/s" if prod["pages_per_s"] else "no page done"
        failed = sum(d["error"] is not None for d in prod["documents"].values())
        print(f"\n== {system}")
        print(
            f"  markdown: {prod['pages']} pages in {prod['seconds']:.2f} s = {pps} "
            f"(setup and warm-up {prod['setup_s']:.2f} s not counted){f'; {failed} PDFs FAILED' if failed else ''}"
        )
        print(f"  {'overall':<16}{cell(s)}")
        for key in _ordered(s["by_type"], TYPES):
            print(f"  {key:<16}{cell(s['by_type'][key])}")
        for key in _ordered(s["by_group"], ("docling.jsonl", "scans.jsonl", "tables.jsonl", "baseline")):
            print(f"  {'[' + key + ']':<16}{cell(s['by_group'][key])}")
        flag = f"   ({s['errors']} ERRORS: olmOCR's benchmark.py would report FAILED)" if s["errors"] else ""
        print(f"  olmOCR score {100 * s['headline']:5.1f}%  (mean of {len(s['by_group'])} group pass rates){flag}")


# ---- main ----------------------------------------------------------------------------------------------------


def select_pdfs(pdf_root: Path, patterns: list[str] | None) -> list[str]:
    """The dev set's PDFs (paths relative to ``pdf_root``), only those matching one of ``patterns`` (a glob on
    the relative path, e.g. ``docling/*``, or on the file name) when given."""
    pdfs = sorted(p.relative_to(pdf_root).as_posix() for p in pdf_root.rglob("*.pdf"))
    if patterns:
        pdfs = [
            p for p in pdfs if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(Path(p).name, pat) for pat in patterns)
        ]
    return pdfs


def main(argv: list[str] | None = None) -> int:
    """Produces each system's markdown, scores it with olmOCR's tests, prints the tables, writes results.json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    ap.add_argument("--dev-set", type=Path, default=DEV_SET, help="folder with pdfs/ and *.jsonl tests")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: DEV_SET/out, git-ignored)")
    ap.add_argument(
        "--olmocr-python",
        type=Path,
        default=ROOT / ".venv-olmocr" / "bin" / "python",
        help="python of the venv made by scripts/olmocr_env.sh",
    )
    ap.add_argument("--only", action="append", metavar="GLOB", help="only these PDFs (repeatable)")
    ap.add_argument("--score", nargs=2, metavar=("REQUEST", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.score:
        score_main(*args.score)
        return 0

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for system in systems:
        if system not in SYSTEMS:
            ap.error(f"unknown system {system!r}: choose from {', '.join(SYSTEMS)}")
    dev_set = args.dev_set.resolve()
    pdf_root = dev_set / "pdfs"
    pdfs = select_pdfs(pdf_root, args.only)
    if systems and all(s in REPLAY_SYSTEMS for s in systems):  # the replayed pages only
        pdfs = [p for p in pdfs if (REPLAY / f"{p.replace('/', '__')[:-4]}.md").is_file()]
    if not pdfs:
        ap.error(f"no PDF under {pdf_root} matches {args.only}")
    missing = sorted(
        {
            json.loads(line)["pdf"]
            for path in dev_set.glob("*.jsonl")
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        }
        - set(select_pdfs(pdf_root, None))
    )
    if missing:  # benchmark.py would fail every system on these; here they are left out, loudly
        print(f"WARNING: tests name PDFs that are not under {pdf_root}, not scored: {missing}", file=sys.stderr)
    out = (args.out or dev_set / "out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.out is None and not (out / ".gitignore").exists():
        (out / ".gitignore").write_text("*\n", encoding="utf-8")  # keeps the default folder out of git
    print(f"{len(pdfs)} PDFs from {dev_set}, systems {', '.join(systems)}, output in {out}")

    production: dict[str, dict[str, Any]] = {}
    for system in systems:
        print(f"producing markdown: {system}", flush=True)
        production[system] = produce_all(system, pdfs, pdf_root, out / system)

    request = {
        "dev_set": str(dev_set),
        "pdfs": pdfs,
        "systems": {
            s: {
                "dir": str(out / s),
                "missing": {k: d["error"] for k, d in production[s]["documents"].items() if d["error"]},
            }
            for s in systems
        },
    }
    print("scoring with olmOCR-bench's tests", flush=True)
    scored = run_scorer(args.olmocr_python, request, out)["results"]
    summaries = {s: summarize(scored[s]) for s in systems}
    print_tables(summaries, production)

    report = {
        "dev_set": str(dev_set),
        "pdfs": pdfs,
        "systems": {s: {"summary": summaries[s], "production": production[s], "tests": scored[s]} for s in systems},
    }
    (out / "results.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"\nevery test's result: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
