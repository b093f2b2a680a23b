"""Hostile PDFs written as raw bytes: each class of damage an attacker or an unlucky archive brings to the PDF
parser (pages that cannot be loaded, giant page sizes, quadratic pages, decompression bombs, content pdfium
drops), and a good document to parse after each of them."""

from __future__ import annotations

import zlib
from collections.abc import Sequence


def build_pdf(objects: Sequence[bytes | None], *, root: int = 1, xref: bool = True) -> bytes:
    """A PDF of ``objects`` (object k+1 is ``objects[k]``: a body such as ``b"<< /Type /Catalog ... >>"``, or a
    whole ``b"<<...>> stream ... endstream"``; None leaves the number free), with a correct cross-reference
    table unless ``xref`` is False."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int | None] = []
    for number, body in enumerate(objects, start=1):
        if body is None:
            offsets.append(None)
            continue
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    if xref:
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        for offset in offsets:
            out += b"%010d 00000 n \n" % offset if offset is not None else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, start)
    return bytes(out)


def stream(data: bytes, extra: bytes = b"", *, compress: bool = False) -> bytes:
    """A stream object's body holding ``data`` (Flate-compressed when ``compress``)."""
    if compress:
        data = zlib.compress(data, 9)
        extra += b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def text_content(lines: Sequence[str], *, size: float = 12, top: float = 720) -> bytes:
    """A content stream that writes ``lines`` in Helvetica from ``top`` down."""
    ops = [b"BT /F1 %g Tf %g TL 72 %g Td" % (size, size * 1.4, top)]
    for line in lines:
        escaped = line.encode("latin-1").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
        ops.append(b"(" + escaped + b") Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def pages_pdf(contents: Sequence[bytes], *, media_box: bytes = b"[0 0 612 792]", extra_page: bytes = b"") -> bytes:
    """A PDF with one page per content stream (Helvetica as /F1)."""
    n = len(contents)
    kids = b" ".join(b"%d 0 R" % (4 + 2 * k) for k in range(n))
    objects: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n),
        _FONT,
    ]
    for k, content in enumerate(contents):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R%s >>"
            % (media_box, 5 + 2 * k, extra_page)
        )
        objects.append(stream(content))
    return build_pdf(objects)


def good_pdf(words: str = "The good document after the bad one") -> bytes:
    """A plain one-page document with a text layer."""
    return pages_pdf([text_content([words, "is parsed all the same."])])


# ---- 1. pages that cannot be loaded ------------------------------------------------------------------------


def page_count_lie(claimed: int = 1_000_000) -> bytes:
    """Two real pages, a page tree that claims ``claimed``."""
    pdf = pages_pdf([text_content(["first real page"]), text_content(["second real page"])])
    return pdf.replace(b"/Count 2", b"/Count %d" % claimed, 1)


def junk_page_object() -> bytes:
    """Three pages; the second page's object is not a page dictionary (a number where the dictionary should be)."""
    contents = [text_content([f"page {k} of three"]) for k in (1, 2, 3)]
    objects: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R 6 0 R 8 0 R] /Count 3 >>",
        _FONT,
    ]
    for k, content in enumerate(contents):
        page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        page += b"/Contents %d 0 R >>" % (5 + 2 * k)
        objects.append(b"12345" if k == 1 else page)
        objects.append(stream(content))
    return build_pdf(objects)


# ---- 2. page sizes past the render cap ---------------------------------------------------------------------


def giant_page(side: float = 100_000_000) -> bytes:
    """One page of ``side`` x ``side`` points with a line of text."""
    return pages_pdf([text_content(["a page as big as a country"])], media_box=b"[0 0 %d %d]" % (side, side))


def sliver_page(long: float = 14_400_000, short: float = 1) -> bytes:
    """One page ``long`` points wide and ``short`` high (a degenerate aspect ratio)."""
    return pages_pdf([text_content(["x"], top=0.5)], media_box=b"[0 0 %d %d]" % (long, short))


# ---- 3. quadratic pages ------------------------------------------------------------------------------------


def one_char_objects(count: int = 500_000, *, columns: int = 500) -> bytes:
    """One letter-size page of ``count`` one-character text objects on a grid, written column by column: every
    character is a text line of its own to pdfium, and every line of a row starts a region of its own."""
    rows = -(-count // columns)
    dx, dy = 540 / columns, 720 / rows
    size = max(0.5, min(dx, dy) * 0.9)
    parts = [b"BT /F1 %.3g Tf" % size]
    k = 0
    for col in range(columns):
        for row in range(rows):
            if k == count:
                break
            parts.append(b"1 0 0 1 %.2f %.2f Tm (%c) Tj" % (36 + col * dx, 756 - (row + 1) * dy, 97 + (k % 26)))
            k += 1
    parts.append(b"ET")
    return pages_pdf([b"\n".join(parts)])


# ---- 4. decompression bombs --------------------------------------------------------------------------------


def _deflate_repeated(block: bytes, times: int, tail: bytes) -> bytes:
    """zlib data of ``block`` * ``times`` + ``tail``, made in the time of compressing ``block`` once: a segment
    ended with a full flush refers to nothing before it, so copies of it in a row inflate to copies of the
    block."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = end.compress(tail) + end.flush()
    check = zlib.adler32(block)
    for _ in range(times - 1):
        check = zlib.adler32(block, check)
    check = zlib.adler32(tail, check)
    return b"\x78\xda" + segment * times + last + check.to_bytes(4, "big")


def content_bomb(inflated: int = 2 << 30, *, chunk: int = 16 << 20) -> bytes:
    """One page whose content stream is a few MB compressed and inflates to ``inflated`` bytes: spaces, then a
    line of text (a valid content stream: pdfium reads it all)."""
    data = _deflate_repeated(b" " * chunk, max(1, inflated // chunk), b"\nBT /F1 12 Tf 72 720 Td (bomb) Tj ET\n")
    objects: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        _FONT,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
    ]
    return build_pdf(objects)


def image_bomb(side: int = 30_000) -> bytes:
    """One page showing a ``side`` x ``side`` RGB image (2.7 GB raw for 30,000) that Flate packs into a few MB."""
    data = _deflate_repeated(b"\xff" * (3 * side), side - 1, b"\xff" * (3 * side))
    objects: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        _FONT,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im1 6 0 R >> >> "
        b"/Contents 5 0 R >>",
        stream(b"q 540 0 0 720 36 36 cm /Im1 Do Q"),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 "
        b"/Length %d /Filter /FlateDecode >>\nstream\n" % (side, side, len(data)) + data + b"\nendstream",
    ]
    return build_pdf(objects)


# ---- 5. content pdfium drops -------------------------------------------------------------------------------


def nested_forms(depth: int = 200) -> bytes:
    """One page whose text is drawn inside form XObjects nested ``depth`` deep, each with its own resources."""
    objects: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        _FONT,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /X0 6 0 R >> >> "
        b"/Contents 5 0 R >>",
        stream(b"/X0 Do"),
    ]
    for level in range(depth):
        number = 6 + level
        if level + 1 < depth:
            body, res = (
                b"/X%d Do" % (level + 1),
                b"/Resources << /XObject << /X%d %d 0 R >> >>" % (level + 1, number + 1),
            )
        else:
            body, res = text_content(["text at the bottom of the forms"]), b"/Resources << /Font << /F1 3 0 R >> >>"
        objects.append(stream(body, b" /Type /XObject /Subtype /Form /BBox [0 0 612 792] " + res))
    return build_pdf(objects)


def nested_resources(depth: int = 5000) -> bytes:
    """One page whose resource dictionary is nested ``depth`` arrays deep before its font: a parser that gives up
    on the nesting drops the page's resources and draws nothing."""
    deep = b"[" * depth + b"]" * depth
    objects: list[bytes | None] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        _FONT,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Junk " + deep + b" "
        b"/Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        stream(text_content(["text whose resources are buried"])),
    ]
    return build_pdf(objects)


def dense_table(rows: int = 35, columns: int = 25) -> bytes:
    """A page of ``rows`` x ``columns`` nine-digit numbers in 3 pt type, one text object each: a table whose
    cells camelot's stream parser aligns in time that grows with the square of their count (35 x 25: seconds)."""
    content = b"".join(
        b"BT /F1 3 Tf %g %g Td (%09d) Tj ET\n" % (20 + c * 23, 780 - r * 6.4, r * 100 + c)
        for r in range(rows)
        for c in range(columns)
    )
    return pages_pdf([content])
