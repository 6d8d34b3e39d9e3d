"""Product-label-like images rendered with PIL, for OCR tests that know what the text says."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEST_IMAGES = DATA / "test_images"

Color = tuple[int, int, int]


def render_label(lines: Sequence[str], size: tuple[int, int] = (900, 600), font_size: int = 56,
                 ink: Color = (20, 20, 20), paper: Color = (255, 255, 255),
                 fmt: str = "PNG") -> bytes:
    """Lines of text stacked on a plain card, encoded as `fmt`.

    Pillow's bundled FreeType font is used so the picture is the same on every machine.
    """
    img = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    gap = font_size // 2
    block = len(lines) * font_size + (len(lines) - 1) * gap
    y = (size[1] - block) // 2
    for line in lines:
        width = draw.textlength(line, font=font)
        draw.text(((size[0] - width) / 2, y), line, font=font, fill=ink)
        y += font_size + gap
    return encode(img, fmt)


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def real_images(n: int, stride: int = 1) -> list[Path]:
    """A fixed, spread-out sample of the real test images (sorted by name, every `stride`-th)."""
    return sorted(TEST_IMAGES.glob("*.jpg"))[::stride][:n]
