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


def render_diagram(height: str, width: str, size: tuple[int, int] = (900, 900), font_size: int = 44) -> bytes:
    """A product drawing as listings print one: a box with a vertical arrow at its left edge
    labelled `height` in text turned 90 degrees, and a horizontal arrow below it labelled `width`."""
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    left, top, right, bottom = 300, 150, 700, 650
    draw.rectangle((left, top, right, bottom), outline=(40, 40, 40), width=6)
    arrow_x, arrow_y = left - 60, bottom + 60
    draw.line((arrow_x, top, arrow_x, bottom), fill=(0, 0, 0), width=4)
    draw.line((left, arrow_y, right, arrow_y), fill=(0, 0, 0), width=4)
    for x, y in ((arrow_x, top), (arrow_x, bottom)):
        draw.line((x - 15, y, x + 15, y), fill=(0, 0, 0), width=4)
    for x, y in ((left, arrow_y), (right, arrow_y)):
        draw.line((x, y - 15, x, y + 15), fill=(0, 0, 0), width=4)
    # the height's label, written along the arrow and turned to read bottom to top
    label = Image.new("RGB", (int(draw.textlength(height, font=font)) + 20, font_size + 20), (255, 255, 255))
    ImageDraw.Draw(label).text((10, 5), height, font=font, fill=(20, 20, 20))
    turned = label.rotate(90, expand=True)
    img.paste(turned, (arrow_x - turned.width - 10, (top + bottom - turned.height) // 2))
    text_width = draw.textlength(width, font=font)
    draw.text(((left + right - text_width) / 2, arrow_y + 15), width, font=font, fill=(20, 20, 20))
    return encode(img)


def render_measuring_lines(size: tuple[int, int] = (900, 900), font_size: int = 44) -> bytes:
    """Four lengths, all written level: '25 cm' beside an upright line, '40 cm' under a level
    one, '18 cm' beside a slanted one and '7 cm' with no line near it."""
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    draw.line((150, 100, 150, 600), fill=(0, 0, 0), width=4)
    draw.text((175, 330), "25 cm", font=font, fill=(20, 20, 20))
    draw.line((300, 720, 800, 720), fill=(0, 0, 0), width=4)
    draw.text((500, 740), "40 cm", font=font, fill=(20, 20, 20))
    draw.line((450, 450, 750, 150), fill=(0, 0, 0), width=4)
    draw.text((640, 330), "18 cm", font=font, fill=(20, 20, 20))
    draw.text((120, 800), "7 cm", font=font, fill=(20, 20, 20))
    return encode(img)
