"""Precision, recall, F1 and false-positive rate, overall and one category against the rest.

Positive means the policy would not let the content pass as it came (block or redact);
guard errors are counted apart and left out of the scores. A score whose denominator is zero
(precision with nothing flagged, recall with nothing unsafe) is undefined, `None`, never 0.0:
a category no example carries has not been measured, not failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from guardproxy.lifecycle.datasets import Example
from guardproxy.lifecycle.judge import Outcome


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, truth: bool, predicted: bool) -> None:
        if truth and predicted:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1

    def view(self) -> dict[str, float | int | None]:
        precision = _ratio(self.tp, self.tp + self.fp)
        recall = _ratio(self.tp, self.tp + self.fn)
        return {
            "n": self.tp + self.fp + self.fn + self.tn,
            "support": self.tp + self.fn,  # the examples labelled with it
            "precision": _rounded(precision),
            "recall": _rounded(recall),
            "f1": _rounded(_f1(precision, recall)),
            "fpr": _rounded(_ratio(self.fp, self.fp + self.tn)),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    """Undefined where either side is; 0.0 where both are defined and both are zero."""
    if precision is None or recall is None:
        return None
    return _ratio(2 * precision * recall, precision + recall) or 0.0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def score(
    examples: Sequence[Example], outcomes: Sequence[Outcome]
) -> tuple[Confusion, dict[str, Confusion]]:
    overall, per_category = Confusion(), {}
    judged = [(e, o) for e, o in zip(examples, outcomes, strict=True) if o.error is None]
    names = sorted({c for e, o in judged for c in (*e.categories, *o.categories)})
    for name in names:
        per_category[name] = Confusion()
    for example, outcome in judged:
        overall.add(example.unsafe, outcome.positive)
        for name, confusion in per_category.items():
            truth = example.unsafe and name in example.categories
            confusion.add(truth, outcome.positive and name in outcome.categories)
    return overall, per_category
