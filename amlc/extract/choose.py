"""Choosing the answer: a linear score per candidate, a softmax over the candidates plus 'none'.

The 'none' option has a fixed score (fitted after the ranker), so a row whose candidates all look poor gets a low confidence; the
confidence of an answer is the summed probability of its mentions. An entity's threshold turns a
low-confidence answer into a blank.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..units import Answer, check_entity, make_answer
from .candidates import Candidate
from .features import entity_candidates, featurize
from .priors import Priors

MODEL_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = MODEL_DIR / "model.json"
DEFAULT_PRIORS = MODEL_DIR / "priors.json"

# Hand-set weights added to the learned ones. A range label ('[100.0, 240.0] volt', 1,775 of the
# voltage rows in train.csv) is scored by its upper bound, so the low end of '100-240V' is almost
# never the answer; the labelled OCR rows hold only two ranges, too few to learn that from.
# train.csv has range labels for every entity but the dimensions (none of 132k rows), and
# on the labelled OCR rows a dimension range ('40-48cm' for an adjustable height) is more often
# labelled by its low end, so the rule leaves dimensions to the learned range_low:<entity>.
# Everything else, the box features included, is fitted (amlc.extract.fit).
RANGE_LABELLED = ("item_weight", "maximum_weight_recommendation", "voltage", "wattage", "item_volume")
RULE_WEIGHTS: dict[str, float] = {f"range_low:{entity}": -1.5 for entity in RANGE_LABELLED}


@dataclass
class Prediction:
    answer: Answer | None          # None = abstain
    confidence: float
    candidates: list[Candidate]    # allowed for the entity, best first
    whole_number_bare: bool = False   # the labels of this entity, unit and group write '21', not '21.0'
    ranked: list[tuple[str, float, Candidate]] = field(default_factory=list)   # distinct answers, rank()

    def text(self) -> str:
        """The answer as the labels write it ('21.0 centimetre'), or '' for a blank."""
        return self.answer.label_text(self.whole_number_bare) if self.answer else ""


@dataclass
class Model:
    weights: dict[str, float]
    thresholds: dict[str, float] = field(default_factory=dict)   # entity -> minimum confidence
    meta: dict[str, Any] = field(default_factory=dict)
    none_score: float = 0.0    # the score of answering nothing, against which confidence is read

    def score(self, features: dict[str, float]) -> float:
        return sum((self.weights.get(name, 0.0) + RULE_WEIGHTS.get(name, 0.0)) * value
                   for name, value in features.items())

    def to_json(self) -> dict:
        return {"weights": self.weights, "thresholds": self.thresholds, "meta": self.meta,
                "none_score": self.none_score}

    @classmethod
    def from_json(cls, data: dict) -> "Model":
        return cls(dict(data["weights"]), dict(data.get("thresholds", {})), dict(data.get("meta", {})),
                   float(data.get("none_score", 0.0)))


def rank(candidates: list[Candidate], entity: str, group: str | None, priors: Priors,
         model: Model, mentions: Sequence[Candidate] = ()) -> list[tuple[str, float, Candidate]]:
    """Distinct answers as (answer text, probability, best mention), most probable first."""
    feats = featurize(candidates, entity, group, priors, mentions)
    for cand, f in zip(candidates, feats):
        cand.features = f
        cand.score = model.score(f)
    top = max((c.score for c in candidates), default=0.0)
    norm = math.exp(model.none_score - top) + sum(math.exp(c.score - top) for c in candidates)
    by_answer: dict[str, tuple[float, Candidate]] = {}
    for cand in candidates:
        p = math.exp(cand.score - top) / norm
        total, best = by_answer.get(cand.answer_text, (0.0, cand))
        by_answer[cand.answer_text] = (total + p, best if best.score >= cand.score else cand)
    ranked = [(text, p, best) for text, (p, best) in by_answer.items()]
    return sorted(ranked, key=lambda item: -item[1])


class Extractor:
    """OCR lines -> the answer for an entity (or a blank), with the ranked candidates."""

    def __init__(self, model: Model | None = None, priors: Priors | None = None, digest: str = ""):
        self.model = model or load_model(DEFAULT_MODEL)
        self.priors = priors or load_priors(DEFAULT_PRIORS)
        # which ranker this is, recorded with every answer ("" for one built in memory)
        self.digest = digest or (ranker_digest() if model is None and priors is None else "")

    @classmethod
    def load(cls, path: Path | None = None, priors_path: Path | None = None) -> "Extractor":
        """The model at path (default: the shipped amlc/extract/model.json) and its priors."""
        path, priors_path = path or DEFAULT_MODEL, priors_path or DEFAULT_PRIORS
        return cls(load_model(path), load_priors(priors_path), ranker_digest(path, priors_path))

    def predict(self, entity: str, ocr: str | Sequence[Any], group_id: str | None = None) -> Prediction:
        """`ocr` is the OCR text, or its lines (strings or objects with .text/.confidence/.box).
        Raises AnswerError for an unknown entity."""
        check_entity(entity)
        candidates, mentions = entity_candidates(ocr, entity, group_id, self.priors)
        if not candidates:
            return Prediction(None, 0.0, [])
        ranked = rank(candidates, entity, group_id, self.priors, self.model, mentions)
        ordered = sorted(candidates, key=lambda c: -c.score)
        _, confidence, best = ranked[0]
        if confidence < self.model.thresholds.get(entity, 0.0):
            return Prediction(None, confidence, ordered, ranked=ranked)
        bare = self.priors.whole_number_bare(entity, best.unit, group_id)
        return Prediction(make_answer(best.value, best.unit, entity), confidence, ordered, bare, ranked)


def ranker_digest(model: Path = DEFAULT_MODEL, priors: Path = DEFAULT_PRIORS) -> str:
    """A short digest of the ranker's files: answers record it, and a run answers again the
    rows a different ranker answered."""
    sha = hashlib.sha256()
    for path in (model, priors):
        sha.update(Path(path).read_bytes())
    return sha.hexdigest()[:12]


def load_model(path: Path) -> Model:
    return Model.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def load_priors(path: Path) -> Priors:
    return Priors.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
