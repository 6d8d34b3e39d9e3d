"""Product-label images with PIL that read like real packaging: the answer among clutter.

Each card carries the labelled quantity written the way packaging writes it ("Net Wt 500g",
"H 30 cm", "12 V DC"), plus distractors a reader must not pick (barcodes, "Made in", model
numbers, another quantity), in varied fonts, sizes and colours, rotated, blurred and noisy.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .distributions import Label

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype"))

# How packaging writes each canonical unit (first form is the commonest).
UNIT_FORMS: dict[str, tuple[str, ...]] = {
    "centimetre": ("cm", "CM", " cm", " centimetres"), "millimetre": ("mm", " mm", "MM"),
    "metre": ("m", " m", " metres"), "inch": (" in", '"', " inches", " inch"), "foot": (" ft", "'", " feet"),
    "yard": (" yd", " yards"), "gram": ("g", " g", "G", " grams", "gm"), "kilogram": ("kg", " kg", "KG", " kgs"),
    "milligram": ("mg", " mg"), "microgram": ("mcg", " mcg", "µg"), "ounce": (" oz", "oz", " OZ", " ounces"),
    "pound": (" lb", " lbs", "lbs", " pounds"), "ton": (" ton", " tons", "t"), "volt": ("V", " V", " volts", "v"),
    "kilovolt": ("kV", " kV"), "millivolt": ("mV", " mV"), "watt": ("W", " W", " watts", "w"),
    "kilowatt": ("kW", " kW"), "litre": ("L", " L", " litre", "l"), "millilitre": ("ml", " ml", "mL", " ML"),
    "centilitre": ("cl", " cl"), "decilitre": ("dl", " dl"), "fluid ounce": (" fl oz", " fl. oz", "fl.oz"),
    "gallon": (" gal", " gallon"), "imperial gallon": (" imp gal",), "cup": (" cups", " cup"),
    "pint": (" pt", " pint"), "quart": (" qt", " quart"), "cubic foot": (" cu ft", " cubic feet"),
    "cubic inch": (" cu in", " cubic inches"), "microlitre": (" µl", " ul"),
}

# What is written before the quantity, per entity ("" = the bare quantity).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "item_weight": ("Net Wt", "NET WEIGHT", "Weight:", "Net wt.", ""),
    "maximum_weight_recommendation": ("Max load", "MAX LOAD", "Capacity:", "Supports up to", "Max weight"),
    "voltage": ("Input:", "Voltage:", "Rated voltage", "DC", ""),
    "wattage": ("Power:", "Rated power", "Output", "Wattage:", ""),
    "item_volume": ("Volume:", "Capacity", "NET VOL", "Contents", ""),
    "height": ("Height:", "H", "Height", "Tall"), "width": ("Width:", "W", "Width", "Wide"),
    "depth": ("Depth:", "D", "Depth", "Length:"),
}

TITLES = ("PREMIUM QUALITY", "Organic Blend", "Heavy Duty", "Classic Series", "PRO EDITION", "Eco Pack",
          "Stainless Steel", "Everyday Essentials", "Kitchen Helper", "Garden Tools")
# Other quantities a label carries: they share digits, sometimes units, with the answer.
DISTRACTORS = ("Made in China", "Made in India", "Pack of {n}", "Model: {code}-{n}{n}", "Batch No. {n}{n}{n}{n}",
               "{n}{n} pcs", "Best before 12/{n}{n}", "{n}0% more free", "Item No. {n}{n}{n}{n}{n}",
               "{n}.{n} cm", "{n}{n}0 g", "Age {n}+", "MRP Rs. {n}{n}9", "{n} x {n}{n} mm", "220-240V ~ 50Hz")


@dataclass(frozen=True)
class Style:
    size: tuple[int, int]
    font_size: int
    paper: tuple[int, int, int]
    ink: tuple[int, int, int]
    angle: float
    blur: float
    noise: int


DIMENSION_SLOTS = {"width": "W", "depth": "D", "height": "H"}
# Quantities of the same kind that are not the answer (a reader must weigh the context).
SAME_KIND = {"item_weight": "Per serving {v}{u}", "maximum_weight_recommendation": "Weight {v}{u}",
             "wattage": "Standby {v}{u}", "voltage": "Battery {v}{u}", "item_volume": "Serving {v}{u}"}


def text_for(label: Label, rng: random.Random) -> str:
    """The quantity as packaging writes it, e.g. 'Net Wt 500g', 'H 30 cm' or 'W 20 x D 12 x H 30 cm'."""
    unit = rng.choice(UNIT_FORMS.get(label.unit, (" " + label.unit,)))
    if label.entity in DIMENSION_SLOTS and rng.random() < 0.4:
        sizes = {k: label.value if k == label.entity else _other_value(label.value, rng) for k in DIMENSION_SLOTS}
        return "Size: " + " x ".join(f"{DIMENSION_SLOTS[k]} {v}" for k, v in sizes.items()) + unit
    keyword = rng.choice(KEYWORDS[label.entity])
    return f"{keyword} {label.value}{unit}".strip()


def _other_value(value: str, rng: random.Random) -> str:
    """A different number of the same magnitude."""
    number = float(value) * rng.choice((0.5, 0.75, 1.5, 2.0, 3.0))
    return f"{number:g}" if number != float(value) else f"{number + 1:g}"


def same_kind_distractor(label: Label, rng: random.Random) -> str | None:
    template = SAME_KIND.get(label.entity)
    if template is None or rng.random() > 0.35:
        return None
    unit = rng.choice(UNIT_FORMS.get(label.unit, (" " + label.unit,)))
    return template.format(v=_other_value(label.value, rng), u=unit)


def _distractor(rng: random.Random) -> str:
    code = "".join(rng.choice("ABCDEFGHKLMPRSTX") for _ in range(2))
    template = rng.choice(DISTRACTORS)
    while "{n}" in template:
        template = template.replace("{n}", str(rng.randint(1, 9)), 1)
    return template.replace("{code}", code)


def card_lines(label: Label, rng: random.Random) -> list[str]:
    """Title, the answer line and 1-3 distractors in a random order."""
    lines = [text_for(label, rng), *(_distractor(rng) for _ in range(rng.randint(1, 3)))]
    lines += [d for d in (same_kind_distractor(label, rng),) if d]
    rng.shuffle(lines)
    return [rng.choice(TITLES), *lines]


@lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """TrueType fonts found on this machine (DejaVu where present); empty means Pillow's own."""
    for folder in FONT_DIRS:
        found = sorted(p for p in folder.glob("*.ttf") if "Math" not in p.name and "ExtraLight" not in p.name)
        if found:
            return tuple(found)
    return ()


@lru_cache(maxsize=64)
def _font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size=size)


def pick_font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    files = font_files()
    return _font(rng.choice(files) if files else None, size)


def random_style(rng: random.Random) -> Style:
    light = rng.random() < 0.8  # most labels are dark on light
    paper = tuple(rng.randint(200, 255) if light else rng.randint(0, 70) for _ in range(3))
    ink = tuple(rng.randint(0, 60) if light else rng.randint(200, 255) for _ in range(3))
    return Style(size=(rng.randint(480, 800), rng.randint(360, 640)), font_size=rng.randint(26, 46),
                 paper=paper, ink=ink, angle=rng.uniform(-8, 8) if rng.random() < 0.6 else 0.0,
                 blur=rng.choice((0.0, 0.0, 0.6, 1.0)), noise=rng.choice((0, 0, 8, 16)))


def render_card(lines: list[str], style: Style, rng: random.Random) -> Image.Image:
    """The lines stacked at a random left margin, each in its own font, then degraded."""
    img = Image.new("RGB", style.size, style.paper)
    draw = ImageDraw.Draw(img)
    y = rng.randint(10, 40)
    for i, line in enumerate(lines):
        size = int(style.font_size * (1.3 if i == 0 else rng.uniform(0.75, 1.1)))
        font = pick_font(rng, size)
        width = draw.textlength(line, font=font)
        x = rng.randint(10, max(11, int(style.size[0] - width - 10)))
        draw.text((x, y), line, font=font, fill=style.ink)
        y += int(size * rng.uniform(1.3, 1.8))
    return _degrade(img, style, rng)


def _degrade(img: Image.Image, style: Style, rng: random.Random) -> Image.Image:
    if style.angle:
        img = img.rotate(style.angle, expand=True, fillcolor=style.paper, resample=Image.Resampling.BICUBIC)
    if style.blur:
        img = img.filter(ImageFilter.GaussianBlur(style.blur))
    if style.noise:
        noise = Image.effect_noise(img.size, style.noise).convert("RGB")
        img = Image.blend(img, noise, 0.12)
    return img


def render_label(label: Label, rng: random.Random) -> tuple[bytes, list[str]]:
    """A JPEG of a product label carrying `label`, and the lines written on it."""
    lines = card_lines(label, rng)
    img = render_card(lines, random_style(rng), rng)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=rng.randint(70, 92))
    return buf.getvalue(), lines
