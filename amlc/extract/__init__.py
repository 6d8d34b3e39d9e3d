"""Extraction: an image's OCR lines -> the answer for an entity ("<number> <unit>") or a blank.

    from amlc.extract import Extractor
    prediction = Extractor.load().predict("item_weight", ocr_lines, group_id="748919")
    prediction.text()        # '250 gram' or '' (abstained)
    prediction.candidates    # ranked Candidate objects; str(c) is a short line for prompts
"""

from .candidates import Candidate, extract_candidates
from .choose import Extractor, Prediction
from .data import split_rows

__all__ = ["Candidate", "Extractor", "Prediction", "extract_candidates", "split_rows"]
