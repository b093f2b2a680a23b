"""Synthetic scanned pages with known truth, for tests, benchmarks and the shipped sample.

Text is drawn with real fonts (DejaVu, from the system or from a font folder given by ``QWENVL_FONT_DIR``) at
known boxes; each page comes with its blocks (type, box, text, reading order) so that an OCR or VLM backend can be
scored by character error rate, reading order and box overlap.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFilter
import PIL.ImageFont

__all__ = ["PAGE_KINDS", "SyntheticPage", "TruthBlock", "find_font", "make_page", "make_pages", "write_pdf"]

PAGE_KINDS = ("article", "two_column", "table", "list")

_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/Library/Fonts",
    "C:/Windows/Fonts",
)
_FONT_FILES = {
    "serif": "DejaVuSerif.ttf",
    "serif-bold": "DejaVuSerif-Bold.ttf",
    "sans": "DejaVuSans.ttf",
    "sans-bold": "DejaVuSans-Bold.ttf",
}

_WORDS = (
    "the invoice contract shall payment within days of receipt total amount due supplier customer agreement "
    "delivery goods services period terms conditions price quantity order number date account bank transfer "
    "report annual revenue growth market share quarter results company board meeting approved budget plan "
    "section clause party parties notice written consent liability damages insurance property rights law "
    "record archive scanned page document table figure chart value rate percent increase decrease level "
    "method sample analysis data water energy project design review final draft version office street city "
    "include provide require receive accept return note change update cost fee tax net gross balance credit"
).split()


@dataclass
class TruthBlock:
    """One block of a synthetic page as drawn: its type, ink box in page pixels, text and reading order."""

    type: str
    bbox: tuple[float, float, float, float]
    text: str
    order: int
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class SyntheticPage:
    """A page image and the blocks drawn on it."""

    image: PIL.Image.Image
    blocks: list[TruthBlock]
    kind: str
    dpi: int = 200

    @property
    def text(self) -> str:
        """The page's text in reading order, blocks separated by blank lines."""
        return "\n\n".join(b.text for b in sorted(self.blocks, key=lambda b: b.order))


@cache
def find_font(style: str = "serif") -> str:
    """Path of a DejaVu font file for ``style`` (serif, serif-bold, sans, sans-bold), or of a Noto Sans CJK font
    for "cjk" (from the cvttf-notosanscjk-regular package, $QWENVL_FONT_DIR or the system's fonts)."""
    if style == "cjk":
        return _find_cjk_font()
    name = _FONT_FILES[style]
    dirs = [os.environ["QWENVL_FONT_DIR"]] if os.environ.get("QWENVL_FONT_DIR") else []
    dirs += list(_FONT_DIRS)
    try:  # matplotlib ships DejaVu fonts, when it is installed
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        dirs.append(str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"))
    except ImportError:
        pass
    for folder in dirs:
        path = Path(folder) / name
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        f"Font {name} not found in {dirs}: install DejaVu fonts (Debian: fonts-dejavu-core) or set QWENVL_FONT_DIR"
    )


def _find_cjk_font() -> str:
    import importlib.util

    dirs = [os.environ["QWENVL_FONT_DIR"]] if os.environ.get("QWENVL_FONT_DIR") else []
    spec = importlib.util.find_spec("cvttf_NotoSansCJK_Regular")  # a wheel that is only the font file
    if spec is not None and spec.origin:
        dirs.append(str(Path(spec.origin).parent))
    dirs += ["/usr/share/fonts/opentype/noto", "/usr/share/fonts/noto-cjk", "/usr/share/fonts/google-noto-cjk"]
    for folder in dirs:
        for pattern in ("NotoSansCJK*.otf", "NotoSansCJK*.ttc", "NotoSerifCJK*.ttc"):
            found = sorted(Path(folder).glob(pattern))
            if found:
                return str(found[0])
    raise FileNotFoundError(
        f"No Noto CJK font in {dirs}: pip install cvttf-notosanscjk-regular (Debian: fonts-noto-cjk) or set "
        "QWENVL_FONT_DIR"
    )


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    if rng.random() < 0.5:
        words.insert(rng.randrange(1, n), str(rng.randint(2, 9999)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".,;") if rng.random() < 0.3 else text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng, rng.randint(6, 12)) for _ in range(sentences))


class _Canvas:
    def __init__(self, width: int, height: int, style: str) -> None:
        self.image = PIL.Image.new("RGB", (width, height), "white")
        self.draw = PIL.ImageDraw.Draw(self.image)
        self.style = style
        self.blocks: list[TruthBlock] = []
        # Simplified Chinese glyph forms (the font's default region may be another: punctuation sits elsewhere)
        self.text_options: dict[str, Any] = {"language": "zh-Hans"} if style == "cjk" else {}

    def font(self, size: int, bold: bool = False) -> PIL.ImageFont.FreeTypeFont:
        if self.style == "cjk":  # one weight
            return PIL.ImageFont.truetype(find_font("cjk"), size)
        return PIL.ImageFont.truetype(find_font(self.style + ("-bold" if bold else "")), size)

    def lines(self, text: str, font: PIL.ImageFont.FreeTypeFont, width: float) -> list[str]:
        if self.style == "cjk":  # Chinese wraps between any two characters
            out, line = [], ""
            for ch in text:
                if line and font.getlength(line + ch) > width:
                    out.append(line.strip())
                    line = ch
                else:
                    line += ch
            return out + [line.strip()] if line.strip() else out
        out = []
        line = ""
        for word in text.split():
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > width:
                out.append(line)
                line = word
            else:
                line = trial
        if line:
            out.append(line)
        return out

    def text_block(
        self, kind: str, text: str, x: float, y: float, width: float, size: int, bold: bool = False
    ) -> float:
        """Draws wrapped ``text`` at (x, y); records a block; returns the y below it."""
        font = self.font(size, bold)
        step = size * 1.45
        box = [math.inf, math.inf, -math.inf, -math.inf]
        lines = self.lines(text, font, width)
        for i, line in enumerate(lines):
            pos = (x, y + i * step)
            self.draw.text(pos, line, fill="black", font=font, **self.text_options)
            ink = self.draw.textbbox(pos, line, font=font, **self.text_options)
            box = [min(box[0], ink[0]), min(box[1], ink[1]), max(box[2], ink[2]), max(box[3], ink[3])]
        joined = "".join(lines) if self.style == "cjk" else " ".join(lines)
        self.blocks.append(TruthBlock(kind, (box[0], box[1], box[2], box[3]), joined, len(self.blocks)))
        return y + len(lines) * step

    def table(self, rows: list[list[str]], x: float, y: float, col_widths: Sequence[float], size: int) -> float:
        row_h = size * 2.0
        total_w = sum(col_widths)
        for r in range(len(rows) + 1):
            self.draw.line([(x, y + r * row_h), (x + total_w, y + r * row_h)], fill="black", width=2)
        cx = x
        for c in range(len(col_widths) + 1):
            self.draw.line([(cx, y), (cx, y + len(rows) * row_h)], fill="black", width=2)
            if c < len(col_widths):
                cx += col_widths[c]
        for r, row in enumerate(rows):
            cx = x
            for c, cell in enumerate(row):
                cell_font = self.font(size, bold=(r == 0))
                position = (cx + size * 0.5, y + r * row_h + size * 0.45)
                self.draw.text(position, cell, fill="black", font=cell_font, **self.text_options)
                cx += col_widths[c]
        bottom = y + len(rows) * row_h
        text = "\n".join(" ".join(row) for row in rows)
        self.blocks.append(TruthBlock("table", (x, y, x + total_w, bottom), text, len(self.blocks), rows=rows))
        return bottom


def make_page(
    kind: str = "article",
    *,
    seed: int = 0,
    width: int = 1700,
    height: int = 2200,
    style: str = "serif",
    rotate: float = 0.0,
    noise: float = 0.0,
) -> SyntheticPage:
    """Draws a page of ``kind`` (article, two_column, table, list) with known blocks.

    ``rotate`` turns the page by that many degrees (a skewed scan); ``noise`` (0-1) adds scanner grain, blur and
    specks. Truth boxes follow the rotation (the axis-aligned box of each rotated block).
    """
    if kind not in PAGE_KINDS:
        raise ValueError(f"kind={kind!r}: use one of {PAGE_KINDS}")
    rng = random.Random(f"{kind}-{seed}")  # noqa: S311 - reproducible test content
    c = _Canvas(width, height, style)
    margin = width * 0.1
    body = 30
    y = height * 0.07
    y = (
        c.text_block(
            "title",
            " ".join(rng.choice(_WORDS) for _ in range(4)).title(),
            margin,
            y,
            width - 2 * margin,
            64,
            bold=True,
        )
        + 50
    )
    if kind == "article":
        y = (
            c.text_block(
                "section_header",
                "1. " + " ".join(rng.choice(_WORDS) for _ in range(3)).title(),
                margin,
                y,
                width - 2 * margin,
                42,
                bold=True,
            )
            + 30
        )
        for _ in range(3):
            y = c.text_block("paragraph", _paragraph(rng, 4), margin, y, width - 2 * margin, body) + 40
    elif kind == "two_column":
        gap = 80
        col_w = (width - 2 * margin - gap) / 2
        top = y
        for col in range(2):
            y = top
            for _ in range(3):
                y = c.text_block("paragraph", _paragraph(rng, 3), margin + col * (col_w + gap), y, col_w, body) + 40
    elif kind == "table":
        y = c.text_block("paragraph", _paragraph(rng, 3), margin, y, width - 2 * margin, body) + 50
        header = ["Item", "Quantity", "Price", "Total"]
        rows = [header] + [
            [
                rng.choice(_WORDS).title(),
                str(rng.randint(1, 99)),
                f"{rng.randint(1, 999)}.{rng.randint(10, 99)}",
                f"{rng.randint(100, 9999)}.{rng.randint(10, 99)}",
            ]
            for _ in range(5)
        ]
        y = c.table(rows, margin, y, [440, 300, 300, 320], body) + 60
        y = c.text_block("paragraph", _paragraph(rng, 2), margin, y, width - 2 * margin, body) + 40
    elif kind == "list":
        y = c.text_block("paragraph", _paragraph(rng, 2), margin, y, width - 2 * margin, body) + 40
        for _ in range(4):
            y = (
                c.text_block(
                    "list_item",
                    "\u2022 " + _sentence(rng, rng.randint(5, 9)),
                    margin + 30,
                    y,
                    width - 2 * margin - 30,
                    body,
                )
                + 24
            )
    image = c.image
    blocks = c.blocks
    if rotate:
        image = image.rotate(rotate, resample=PIL.Image.Resampling.BICUBIC, fillcolor="white")
        blocks = [_rotate_block(b, rotate, width, height) for b in blocks]
    if noise:
        image = _add_noise(image, noise, rng)
    return SyntheticPage(image, blocks, kind)


_ZH_WORDS = (
    "合同 发票 付款 金额 公司 日期 客户 供应商 服务 项目 报告 年度 收入 增长 市场 季度 结果 董事会 会议 预算 "
    "计划 条款 双方 通知 书面 同意 责任 损失 保险 财产 权利 法律 记录 档案 扫描 页面 文件 表格 图表 数值 比率 "
    "增加 减少 水平 方法 样本 分析 数据 能源 设计 审核 最终 版本 办公室 城市 提供 要求 接收 退回 变更 更新 "
    "费用 税款 余额 信用 银行 账户 订单 编号 价格 数量 交付 货物 期限 条件 负责 管理 部门 员工 生产 质量"
).split()
#: Latin words and numbers mixed into Chinese text, as real documents mix them
_ZH_LATIN = ("PDF", "API", "Excel", "CPU", "ISO 9001", "Q3", "USB", "AI")


def _zh_sentence(rng: random.Random, n: int, *, latin: bool) -> str:
    words = [rng.choice(_ZH_WORDS) for _ in range(n)]
    if rng.random() < 0.5:
        words.insert(rng.randrange(1, n), f"{rng.randint(2, 9999)}")
    if latin:
        words.insert(rng.randrange(1, n), rng.choice(_ZH_LATIN))
    cut = rng.randrange(2, n)
    return "".join(words[:cut]) + "，" + "".join(words[cut:]) + "。"


def _zh_paragraph(rng: random.Random, sentences: int, *, latin: bool = False) -> str:
    return "".join(_zh_sentence(rng, rng.randint(5, 9), latin=latin) for _ in range(sentences))


#: Chinese page kinds: "mixed" is an article whose sentences carry Latin words and numbers
ZH_PAGE_KINDS = ("article", "two_column", "table", "mixed")


def make_chinese_page(kind: str = "article", *, seed: int = 0, width: int = 1700, height: int = 2200) -> SyntheticPage:
    """Draws a Simplified Chinese page of ``kind`` (`ZH_PAGE_KINDS`) with known blocks, in Noto Sans CJK (see
    `find_font`). Truth texts have no spaces between Chinese characters (Latin words keep theirs)."""
    if kind not in ZH_PAGE_KINDS:
        raise ValueError(f"kind={kind!r}: use one of {ZH_PAGE_KINDS}")
    rng = random.Random(f"zh-{kind}-{seed}")  # noqa: S311 - reproducible test content
    c = _Canvas(width, height, "cjk")
    margin, body = width * 0.1, 32
    title = "".join(rng.choice(_ZH_WORDS) for _ in range(4))
    y = c.text_block("title", title, margin, height * 0.07, width - 2 * margin, 64) + 50
    full = width - 2 * margin
    if kind in ("article", "mixed"):
        header = "一、" + "".join(rng.choice(_ZH_WORDS) for _ in range(3))
        y = c.text_block("section_header", header, margin, y, full, 44) + 30
        for _ in range(3):
            y = c.text_block("paragraph", _zh_paragraph(rng, 3, latin=kind == "mixed"), margin, y, full, body) + 40
    elif kind == "two_column":
        gap = 90
        col_w = (full - gap) / 2
        top = y
        for col in range(2):
            y = top
            for _ in range(3):
                y = c.text_block("paragraph", _zh_paragraph(rng, 2), margin + col * (col_w + gap), y, col_w, body) + 40
    else:
        y = c.text_block("paragraph", _zh_paragraph(rng, 2), margin, y, full, body) + 50
        rows = [["项目", "数量", "单价", "合计"]] + [
            [
                rng.choice(_ZH_WORDS),
                str(rng.randint(1, 99)),
                f"{rng.randint(1, 999)}.{rng.randint(10, 99)}",
                f"{rng.randint(100, 9999)}.{rng.randint(10, 99)}",
            ]
            for _ in range(5)
        ]
        y = c.table(rows, margin, y, [440, 300, 300, 320], body) + 60
        y = c.text_block("paragraph", _zh_paragraph(rng, 2), margin, y, full, body) + 40
    return SyntheticPage(c.image, c.blocks, f"zh-{kind}")


def _rotate_block(block: TruthBlock, degrees: float, width: int, height: int) -> TruthBlock:
    # PIL rotates counter-clockwise about the centre; y grows downwards.
    a = math.radians(degrees)
    cx, cy = width / 2, height / 2
    x0, y0, x1, y1 = block.bbox
    xs, ys = [], []
    for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
        dx, dy = x - cx, y - cy
        xs.append(cx + dx * math.cos(a) + dy * math.sin(a))
        ys.append(cy - dx * math.sin(a) + dy * math.cos(a))
    box = (max(0.0, min(xs)), max(0.0, min(ys)), min(float(width), max(xs)), min(float(height), max(ys)))
    return TruthBlock(block.type, box, block.text, block.order, block.rows)


def _add_noise(image: PIL.Image.Image, amount: float, rng: random.Random) -> PIL.Image.Image:
    gen = np.random.default_rng(rng.randrange(2**32))
    image = image.filter(PIL.ImageFilter.GaussianBlur(0.6 * amount))
    arr = np.asarray(image.convert("L"), dtype=np.float64)
    arr = arr + gen.normal(0, 18 * amount, arr.shape)
    specks = gen.random(arr.shape) < 0.0008 * amount
    arr[specks] = 0
    arr = np.clip(arr * (1 - 0.08 * amount) + 255 * 0.08 * amount, 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(arr).convert("RGB")


def make_pages(n: int, *, seed: int = 0, **kwargs: object) -> list[SyntheticPage]:
    """``n`` pages cycling through the page kinds."""
    return [make_page(PAGE_KINDS[i % len(PAGE_KINDS)], seed=seed + i, **kwargs) for i in range(n)]  # type: ignore[arg-type]


def write_pdf(pages: Sequence[PIL.Image.Image], path: str | os.PathLike[str], dpi: int = 200) -> Path:
    """Saves page images as an image-only PDF (a scan with no text layer)."""
    path = Path(path)
    first, *rest = [p.convert("RGB") for p in pages]
    first.save(path, "PDF", resolution=float(dpi), save_all=True, append_images=rest)
    return path


def write_digital_pdf(path: str | os.PathLike[str], *, seed: int = 0, pages: int = 2) -> list[list[TruthBlock]]:
    """Writes a PDF with a real text layer (needs fpdf2) and returns each page's blocks, boxes in PDF points from
    the top-left of the area where each block was written (its text cells, not its ink)."""
    from fpdf import FPDF

    rng = random.Random(f"digital-{seed}")  # noqa: S311 - reproducible test content
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_auto_page_break(False)
    pdf.add_font("serif", "", find_font("serif"))
    pdf.add_font("serif", "B", find_font("serif-bold"))
    truth: list[list[TruthBlock]] = []
    for _ in range(pages):
        pdf.add_page()
        blocks: list[TruthBlock] = []
        y = 60.0

        def write(blocks: list[TruthBlock], kind: str, text: str, size: float, style: str = "") -> None:
            nonlocal y
            width = 480.0
            pdf.set_font("serif", style, size)
            pdf.set_xy(66, y)
            line_h = size * 1.3
            lines: list[str] = pdf.multi_cell(width, line_h, text, dry_run=True, output="LINES")  # type: ignore[assignment]
            pdf.set_xy(66, y)
            pdf.multi_cell(width, line_h, text)
            box = (66.0, y, 66.0 + width, y + line_h * len(lines))
            blocks.append(TruthBlock(kind, box, " ".join(lines), len(blocks)))
            y += line_h * len(lines) + size

        write(blocks, "title", " ".join(rng.choice(_WORDS) for _ in range(4)).title(), 22, "B")
        for _ in range(2):
            write(blocks, "paragraph", _paragraph(rng, 3), 11)
        write(blocks, "section_header", " ".join(rng.choice(_WORDS) for _ in range(3)).title(), 15, "B")
        write(blocks, "paragraph", _paragraph(rng, 2), 11)
        truth.append(blocks)
    pdf.output(str(path))
    return truth
