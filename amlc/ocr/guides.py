"""Which way the drawn line beside a number runs: a dimension diagram's measuring line.

A diagram prints each length beside the line it measures: an upright line at the side for the
height, a level one along the bottom for the width, a slanted one for the depth. The OCR boxes
alone do not show it (a height is often written level beside an upright arrow), so after reading
an image each line holding a digit gets the direction of the nearest straight segment around it
(Canny edges, OpenCV's probabilistic Hough transform): 'vertical', 'horizontal', 'slanted', or ''
where there is none. The ranker (amlc.extract.features) weighs whether that direction measures
the dimension asked. On the dimension photos, cross-validated, it took width/height/depth F1 from
0.717 to 0.739 (docs/accuracy.md).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import cv2
import numpy as np

from .base import Box, OcrLine
from .preprocess import Prepared
from .reread import DIGIT

SHORTEST = 0.06     # of the image's shorter side: shorter segments are edges of letters and texture
TEXT_HEIGHTS = 3    # and a segment is at least this many text heights long
REACH = 1.5         # text heights between a number's box and its line
LEVEL_DEGREES = 12  # within this of level or upright, a segment counts as horizontal or vertical

Segment = tuple[float, float, float, float]


def with_guides(lines: Sequence[OcrLine], prepared: Prepared) -> list[OcrLine]:
    """`lines` with the direction of the nearest measuring line set on each line holding a digit."""
    numbered = [i for i, line in enumerate(lines) if DIGIT.search(line.text)]
    if not numbered:
        return list(lines)
    gray = cv2.cvtColor(prepared.bgr, cv2.COLOR_BGR2GRAY)
    found = segments(gray)
    out = list(lines)
    for i in numbered:
        box = [(x * prepared.scale, y * prepared.scale) for x, y in lines[i].box]
        out[i] = replace(lines[i], guide=guide_of(box, found, min(gray.shape)))
    return out


def segments(gray: np.ndarray) -> list[Segment]:
    """Straight segments at least SHORTEST of the image's shorter side long."""
    shortest = max(8, int(SHORTEST * min(gray.shape)))
    edges = cv2.Canny(gray, 50, 150)
    found = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=max(20, int(0.6 * shortest)),
                            minLineLength=shortest, maxLineGap=4)
    return [] if found is None else [tuple(float(v) for v in s[0]) for s in found]


def guide_of(box: Box | Sequence[tuple[float, float]], found: Sequence[Segment], shorter_side: int) -> str:
    """The direction of the segment nearest the box, among those long enough to be a measuring
    line and not lying across the text itself."""
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    rect = (min(xs), min(ys), max(xs), max(ys))
    text_height = max(min(rect[2] - rect[0], rect[3] - rect[1]), 1.0)
    shortest = max(TEXT_HEIGHTS * text_height, SHORTEST * shorter_side)
    near = []
    for seg in found:
        length = math.hypot(seg[2] - seg[0], seg[3] - seg[1])
        if length < shortest or _inside_share(seg, rect) > 0.5:
            continue
        distance = _distance(seg, rect)
        if distance <= REACH * text_height:
            near.append((distance, -length, seg))
    return direction(min(near)[2]) if near else ""


def direction(seg: Segment) -> str:
    angle = abs(math.degrees(math.atan2(seg[3] - seg[1], seg[2] - seg[0]))) % 180
    if angle < LEVEL_DEGREES or angle > 180 - LEVEL_DEGREES:
        return "horizontal"
    if abs(angle - 90) < LEVEL_DEGREES:
        return "vertical"
    return "slanted"


def _points(seg: Segment, n: int) -> list[tuple[float, float]]:
    return [(seg[0] + t * (seg[2] - seg[0]), seg[1] + t * (seg[3] - seg[1])) for t in np.linspace(0, 1, n)]


def _inside_share(seg: Segment, rect: tuple[float, float, float, float]) -> float:
    """How much of the segment lies within the box (a stroke or underline of the text)."""
    points = _points(seg, 11)
    return sum(rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3] for x, y in points) / len(points)


def _distance(seg: Segment, rect: tuple[float, float, float, float]) -> float:
    """Distance from the segment to the box (0 where they touch), sampled along the segment."""
    return min(math.hypot(max(rect[0] - x, 0.0, x - rect[2]), max(rect[1] - y, 0.0, y - rect[3]))
               for x, y in _points(seg, 25))
