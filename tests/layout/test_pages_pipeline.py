"""Page sources (PDF text layer, scans, TIFF, images, bytes, folders) and the parser without an engine."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image as PILImage

from qwenvl.layout import BBox, BlockType, DocumentError, DocumentParser, ParsedDocument, open_document, render_page
from qwenvl.layout.ocr import TesseractEngine
from qwenvl_testkit.synthetic_pages import make_page, make_pages, write_digital_pdf, write_pdf

DPI = 200.0


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("docs")
    digital = folder / "digital.pdf"
    truth = write_digital_pdf(digital, pages=2)
    scans = make_pages(3, seed=20)
    scan = write_pdf([p.image for p in scans[:2]], folder / "scan.pdf")
    tiff = folder / "pages.tiff"
    scans[0].image.save(tiff, save_all=True, append_images=[scans[2].image], dpi=(200, 200))
    png = folder / "page.png"
    scans[1].image.save(png)
    # a mixed PDF: a digital page, then a scanned page
    mixed = pdfium.PdfDocument.new()
    mixed.import_pages(pdfium.PdfDocument(str(digital)), [0])
    mixed.import_pages(pdfium.PdfDocument(str(scan)), [1])
    mixed.save(str(folder / "mixed.pdf"))
    from fpdf import FPDF

    enc = FPDF()
    enc.add_page()
    enc.set_font("helvetica", size=14)
    enc.text(20, 20, "Confidential figures")
    enc.set_encryption(owner_password="owner", user_password="s3cret")
    enc.output(str(folder / "locked.pdf"))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n")
    return {
        "folder": folder,
        "digital": digital,
        "truth": truth,
        "scan": scan,
        "scans": scans,
        "tiff": tiff,
        "png": png,
    }


def _ink_box(image: PILImage.Image, region: tuple[float, float, float, float]) -> BBox:
    gray = np.asarray(image.convert("L"))
    x0, y0, x1, y1 = (int(v) for v in region)
    ys, xs = np.nonzero(gray[y0:y1, x0:x1] < 200)
    return BBox.of(x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)


def test_digital_pdf_text_layer_exact_text_and_boxes(files: dict) -> None:
    doc = DocumentParser(backend="auto").parse(files["digital"])
    assert [p.backend for p in doc.pages] == ["pdf_text", "pdf_text"]
    for page, truth in zip(doc.pages, files["truth"], strict=True):
        assert page.dpi == DPI and (page.width, page.height) == (1700, 2200)  # letter at 200 dpi
        assert [b.text for b in page.blocks] == [t.text for t in truth]
        assert [b.type.value for b in page.blocks] == [t.type for t in truth]
        assert all(b.origin == "pdf_text" for b in page.blocks)
        image = render_page(files["digital"], page.number, page.dpi)
        for block, t in zip(page.blocks, truth, strict=True):
            # the ink inside the area the text was written to, found in the rendered page
            area = tuple(v * DPI / 72 for v in t.bbox)
            ink = _ink_box(image, (area[0] - 6, area[1] - 6, area[2] + 6, area[3] + 6))
            diffs = [abs(a - b) for a, b in zip(block.bbox.xyxy, ink.xyxy, strict=True)]
            assert max(diffs) <= 2.5, (block.text[:30], block.bbox.xyxy, ink.xyxy)


def test_mixed_pdf_is_handled_page_by_page(files: dict) -> None:
    doc = DocumentParser(backend="auto").parse(files["folder"] / "mixed.pdf")
    assert [p.backend for p in doc.pages] == ["pdf_text", "ocr"]
    assert doc.pages[0].blocks[0].text == files["truth"][0][0].text
    scanned_title = [b for b in files["scans"][1].blocks if b.type == "title"][0].text
    assert doc.pages[1].blocks[0].text == scanned_title and doc.pages[1].blocks[0].type is BlockType.TITLE


def test_encrypted_and_corrupt_pdfs_fail_alone(files: dict) -> None:
    folder = files["folder"]
    with pytest.raises(DocumentError, match="encrypted: pass password"):
        open_document(folder / "locked.pdf")
    with pytest.raises(DocumentError, match="not a readable PDF"):
        open_document(folder / "broken.pdf")
    docs = list(
        DocumentParser(backend="ocr").parse_many(
            [folder / "locked.pdf", files["png"], folder / "broken.pdf", folder / "missing.pdf"]
        )
    )
    assert [d.error is None for d in docs] == [False, True, False, False]
    assert "password" in (docs[0].error or "") and docs[0].pages == []
    assert "missing.pdf" in (docs[3].error or "")
    assert docs[1].pages[0].status == "ok" and docs[1].pages[0].blocks
    unlocked = DocumentParser(backend="auto", password="s3cret").parse(folder / "locked.pdf")
    assert unlocked.pages[0].blocks[0].text == "Confidential figures"


def test_tiff_png_bytes_folder_and_glob(files: dict) -> None:
    parser = DocumentParser(backend="ocr")
    tiff = parser.parse(files["tiff"])
    assert len(tiff.pages) == 2 and tiff.pages[0].dpi == 200
    titles = [[b for b in p.blocks if b.type is BlockType.TITLE][0].text for p in tiff.pages]
    expected = [[b for b in files["scans"][i].blocks if b.type == "title"][0].text for i in (0, 2)]
    assert titles == expected
    buf = io.BytesIO()
    files["scans"][1].image.save(buf, "JPEG", quality=92)
    from_bytes = parser.parse(buf.getvalue(), name="upload.jpg")
    assert from_bytes.source == "upload.jpg" and from_bytes.pages[0].blocks
    names = [Path(d.source).name for d in DocumentParser(backend="ocr").parse_many(str(files["folder"] / "*.p*"))]
    assert names == sorted(names) and "page.png" in names and "digital.pdf" in names
    with pytest.raises(ValueError, match="parse_many"):
        parser.parse(files["folder"])
    # a pattern that matches nothing fails alone, as an unreadable document; the other sources are parsed
    [unmatched, png] = parser.parse_many([str(files["folder"] / "*.nothing"), files["png"]])
    assert unmatched.error and "matches no file" in unmatched.error and not unmatched.pages
    assert png.error is None and png.pages
    with pytest.raises(DocumentError, match="matches no file"):
        parser.parse(str(files["folder"] / "*.nothing"))


class CountingOCR:
    """Tesseract that counts the pages it reads."""

    name = "tesseract"

    def __init__(self) -> None:
        self.inner = TesseractEngine()
        self.pages = 0

    def read(self, image: PILImage.Image):  # noqa: ANN201
        self.pages += 1
        return self.inner.read(image)


def test_cache_skips_finished_pages(files: dict, tmp_path: Path) -> None:
    ocr = CountingOCR()
    first = list(
        DocumentParser(backend="ocr", ocr_engine=ocr, cache_dir=tmp_path).parse_many([files["scan"], files["png"]])
    )
    assert ocr.pages == 3
    again = list(
        DocumentParser(backend="ocr", ocr_engine=ocr, cache_dir=tmp_path).parse_many([files["scan"], files["png"]])
    )
    assert ocr.pages == 3  # nothing read twice
    assert [d.to_json() for d in again] == [d.to_json() for d in first]
    # other settings are another cache key
    list(DocumentParser(backend="ocr", ocr_engine=ocr, cache_dir=tmp_path, dpi=150).parse_many([files["png"]]))
    assert ocr.pages == 4


def test_page_images_keep_their_pixels_and_blank_pages_say_so(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    PILImage.new("RGB", (600, 800), "white").save(blank)
    doc = DocumentParser(backend="ocr").parse(blank)
    (page,) = doc.pages
    assert (page.width, page.height) == (600, 800) and page.blocks == []
    assert page.status == "ok" and "no text" in (page.error or "")


def test_parsed_document_round_trips_after_parsing(files: dict) -> None:
    doc = DocumentParser(backend="auto").parse(files["scan"])
    assert ParsedDocument.from_json(doc.to_json()) == doc
    md = doc.to_markdown()
    assert md.count("<!-- page") == 2 and md.count("\n# ") == 2  # one title per page


def test_sample_page_text_reads_back_through_the_pipeline(tmp_path: Path) -> None:
    page = make_page("article", seed=4)
    path = write_pdf([page.image], tmp_path / "one.pdf")
    doc = DocumentParser().parse(path)  # no engine: OCR
    assert doc.pages[0].backend == "ocr" and doc.pages[0].dpi == DPI
    assert " ".join(doc.text.split()) == " ".join(page.text.split())
