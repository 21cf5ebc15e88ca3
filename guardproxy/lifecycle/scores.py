"""Precision, recall, F1 and false-positive rate, overall and one category against the rest.

Positive means the policy would not let the content pass as it came (block or redact);
guard errors are counted apart and left out of the scores.
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

    def view(self) -> dict[str, float | int]:
        precision = _ratio(self.tp, self.tp + self.fp)
        recall = _ratio(self.tp, self.tp + self.fn)
        f1 = _ratio(2 * precision * recall, precision + recall)
        return {
            "n": self.tp + self.fp + self.fn + self.tn,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "fpr": round(_ratio(self.fp, self.fp + self.tn), 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


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
