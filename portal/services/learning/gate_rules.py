"""The promotion gate's rules, from test-split figures to a decision (no database, no engine): a first
model against the majority-class baseline, the paired bootstrap of candidate minus production, and the point
rule. Each returns its decision as data (`GateDecision`: the rule, the verdict, the figures it went by);
`gate_words` renders a decision in words, for the pages and the stored `gate_reason`. Which rule applies, and
what is done with its answer: portal.services.learning.promotion."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from portal.rates import percent, points


@dataclass(frozen=True)
class GateDecision:
    """A gate's decision as data. rule: "first_model", "point", "not_compared" or "bootstrap"; passed: None
    when the rule cannot tell (left to an admin); figures: what the rule went by, all the words need."""

    rule: str
    passed: bool | None
    figures: dict = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return gate_words(self)

    def as_data(self) -> dict:
        """Stored as the version's `metrics["gate"]`: the figures flat beside the rule and the verdict (a
        bootstrap's intervals stay where the Training page's bars read them)."""
        return {**self.figures, "rule": self.rule, "passed": self.passed}

    @classmethod
    def from_data(cls, data: dict | None) -> GateDecision | None:
        """The decision stored by `as_data`, or None without one (a version gated before decisions were
        stored keeps only its words)."""
        if not isinstance(data, dict) or data.get("rule") not in _WORDS:
            return None
        return cls(data["rule"], data.get("passed"), {k: v for k, v in data.items() if k not in ("rule", "passed")})


_BOOTSTRAP_PASSED = {"promoted": True, "refused": False, "too_small": None}


def gate_decision(candidate: dict, production: dict | None) -> GateDecision:
    """The point rule: a candidate's test-split metrics against production's on the same images."""
    if production is None:
        return first_model_decision(candidate)
    tolerance, max_drop = settings.SEM_GATE_MACRO_F1_TOLERANCE, settings.SEM_GATE_MAX_RECALL_DROP
    f1, production_f1 = _macro_f1(candidate), _macro_f1(production)
    drops = [[name, drop] for name, drop in _recall_drops(candidate, production) if drop > max_drop + 1e-9]
    figures = {
        "macro_f1": f1,
        "production_macro_f1": production_f1,
        "tolerance": tolerance,
        "max_recall_drop": max_drop,
        "recall_drops": drops,
    }
    return GateDecision("point", f1 >= production_f1 - tolerance and not drops, figures)


def first_model_decision(candidate: dict) -> GateDecision:
    """A first model must beat answering the test split's largest class every time, by a clear
    margin, and reach the macro-F1 floor: a model no better than that guess would only mislabel."""
    majority = majority_baseline(candidate)
    figures = {
        "accuracy": float(candidate.get("accuracy") or 0.0),
        "macro_f1": _macro_f1(candidate),
        "floor": settings.SEM_GATE_FIRST_MODEL_FLOOR,
        "margin": settings.SEM_GATE_BASELINE_MARGIN,
        "baseline_class": majority[0] if majority else None,
        "baseline": majority[1] if majority else None,
    }
    passed = (
        majority is not None
        and figures["accuracy"] >= figures["baseline"] + figures["margin"]
        and figures["macro_f1"] >= figures["floor"]
    )
    return GateDecision("first_model", passed, figures)


def not_compared(why: str) -> GateDecision:
    """Production could not be evaluated on the candidate's test images: left to an admin, refused."""
    return GateDecision("not_compared", False, {"why": why})


def gate_words(decision: GateDecision) -> str:
    """A gate's decision in words: shown on the pages and stored as the version's `gate_reason`."""
    return _WORDS[decision.rule](decision.figures)


def stored_reason(metrics: dict | None) -> str | None:
    """A version's gate reason in words from its stored data: the decision's words, changed by what happened
    after it (`metrics["gate_notes"]`); None without a stored decision (the stored words then stand)."""
    decision = GateDecision.from_data((metrics or {}).get("gate"))
    if decision is None:
        return None
    words = gate_words(decision)
    for note in metrics.get("gate_notes") or []:
        words = noted(words, note)
    return words


def noted(words: str, note: dict) -> str:
    """A reason's words after a note: the gate failing after it decided ({"note": "failed", "error"})
    replaces them; a roll back ({"note": "rolled_back", "to", "by", "at"}) adds a line."""
    if note["note"] == "failed":
        return f"Gate failed: {note['error']}"
    return (words + "\n" if words else "") + f"Rolled back to v{note['to']} by {note['by']} on {note['at']}"


def _first_model_words(figures: dict) -> str:
    accuracy, f1, margin = figures["accuracy"], figures["macro_f1"], figures["margin"]
    name, baseline = figures["baseline_class"], figures["baseline"]
    if baseline is None:
        return "First model: no test images to compare it with the majority-class baseline"
    if accuracy < baseline + margin:
        return (
            f"First model: accuracy {_pct(accuracy)} does not beat the majority-class baseline "
            f"(always '{name}': {_pct(baseline)}) by the required {_pts(margin)}"
        )
    if f1 < figures["floor"]:
        return f"First model: macro-F1 {_pct(f1)} is below the floor {_pct(figures['floor'])}"
    return (
        f"First model: accuracy {_pct(accuracy)} beats the majority-class baseline "
        f"(always '{name}': {_pct(baseline)}) by more than {_pts(margin)}; macro-F1 {_pct(f1)}"
    )


def _point_words(figures: dict) -> str:
    f1, production_f1, tolerance = figures["macro_f1"], figures["production_macro_f1"], figures["tolerance"]
    max_drop = figures["max_recall_drop"]
    if f1 < production_f1 - tolerance:
        return f"Macro-F1 {_pct(f1)} is below production's {_pct(production_f1)} (tolerance {_pts(tolerance)})"
    if figures["recall_drops"]:
        worst = [f"{name} {_pts(drop)}" for name, drop in figures["recall_drops"]]
        return f"Recall dropped by more than {_pts(max_drop)}: " + ", ".join(worst)
    return (
        f"Macro-F1 {_pct(f1)} vs production {_pct(production_f1)}; no class recall dropped more than {_pts(max_drop)}"
    )


# The words say rates as the pages do (portal.rates), to one decimal: a gate decides on differences of a
# few tenths of a point, which whole percentages would hide.
def _pct(value: float) -> str:
    return percent(value, 1)


def _pts(value: float) -> str:
    return points(value, 1)


def _signed(value: float) -> str:
    return points(value, 1, signed=True)


def majority_baseline(metrics: dict) -> tuple[str, float] | None:
    """(class, accuracy) of always answering the class with the most test images, or None without any."""
    supports = {name: int(values.get("support") or 0) for name, values in (metrics.get("per_class") or {}).items()}
    total = sum(supports.values())
    if not total:
        return None
    name = max(supports, key=supports.get)
    return name, supports[name] / total


def _macro_f1(metrics: dict) -> float:
    return float((metrics.get("macro_avg") or {}).get("f1") or 0.0)


def _recall_drops(candidate: dict, production: dict) -> list[tuple[str, float]]:
    """Per-class recall drop, for classes with test images in both evaluations."""
    drops = []
    candidate_classes = candidate.get("per_class") or {}
    for name, before in (production.get("per_class") or {}).items():
        after = candidate_classes.get(name)
        if not before.get("support"):
            continue
        recall_after = after["recall"] if after and after.get("support") else 0.0
        drops.append((name, float(before["recall"]) - float(recall_after)))
    return sorted(drops, key=lambda item: -item[1])


def too_small_to_tell(y_true: list[str], classes: list[str]) -> str | None:
    """Why the test split cannot tell two models apart, or None when it is large enough."""
    from collections import Counter

    minimum, per_class = settings.SEM_GATE_MIN_TEST_IMAGES, settings.SEM_GATE_MIN_TEST_PER_CLASS
    support = Counter(y_true)
    short = [f"{name} {support[name]}" for name in classes if support[name] < per_class]
    if len(y_true) < minimum or short:
        parts = []
        if len(y_true) < minimum:
            parts.append(f"{len(y_true)} test images (at least {minimum} needed)")
        if short:
            parts.append(f"classes with fewer than {per_class} test images: " + ", ".join(short))
        return "The test split is too small to tell the two models apart: " + "; ".join(parts)
    return None


def bootstrap_gate_decision(
    y_true: list[str], candidate_pred: list[str], production_pred: list[str], classes: list[str]
) -> GateDecision:
    """The paired bootstrap's decision from per-image predictions of both models on the same test images;
    passed is None when the test split is too small to tell. Its figures: the intervals (statistics), then
    `decision` and what decided it (policy); `bootstrap_reason` renders them in words."""
    summary = _paired_differences(y_true, candidate_pred, production_pred, classes)
    summary.update(_bootstrap_verdict(summary, too_small_to_tell(y_true, classes)))
    return GateDecision("bootstrap", _BOOTSTRAP_PASSED[summary["decision"]], summary)


def _paired_differences(y_true, candidate_pred, production_pred, classes) -> dict:
    """The paired, stratified bootstrap of candidate minus production, with the thresholds it is held to."""
    from classifier.bootstrap import paired_bootstrap

    result = paired_bootstrap(
        y_true,
        candidate_pred,
        production_pred,
        classes,
        resamples=settings.SEM_GATE_BOOTSTRAP_RESAMPLES,
        level=settings.SEM_GATE_CONFIDENCE,
        seed=0,
    )
    result.update(tolerance=settings.SEM_GATE_MACRO_F1_TOLERANCE, max_recall_drop=settings.SEM_GATE_MAX_RECALL_DROP)
    return result


def _bootstrap_verdict(summary: dict, too_small: str | None) -> dict:
    """The rule: too small to tell; else refused when the macro-F1 interval's lower bound is not above
    -tolerance or a class's recall interval reaches a drop of max_recall_drop; else promoted."""
    if too_small:
        return {"decision": "too_small", "too_small": too_small}
    max_drop = summary["max_recall_drop"]
    dropped = [name for name, recall in summary["recall"].items() if not recall["low"] > -max_drop]
    f1_holds = summary["macro_f1"]["low"] > -summary["tolerance"]
    return {"decision": "promoted" if f1_holds and not dropped else "refused", "recall_dropped": dropped}


def bootstrap_reason(summary: dict) -> str:
    """The bootstrap gate's decision in words, from its figures."""
    f1, level, tolerance = summary["macro_f1"], summary["level"], summary["tolerance"]
    max_drop = summary["max_recall_drop"]
    described = (
        f"macro-F1 difference {_signed(f1['diff'])} points, {percent(level)} interval "
        f"[{_signed(f1['low'])}, {_signed(f1['high'])}] on {summary['n']} test images "
        f"({summary['resamples']} paired resamples)"
    )
    if summary["decision"] == "too_small":
        return f"{summary['too_small']}. Not promoted automatically; {described}. An admin may promote it by hand."
    if not f1["low"] > -tolerance:
        return (
            f"Not shown to be at least as good as production: {described}; the lower bound must be "
            f"above {_signed(-tolerance)} points"
        )
    if summary["recall_dropped"]:
        recall = summary["recall"]
        drops = [
            f"{name} [{_signed(recall[name]['low'])}, {_signed(recall[name]['high'])}] points"
            for name in summary["recall_dropped"]
        ]
        return (
            f"A class's recall may have dropped by more than {_pts(max_drop)} "
            f"({percent(level)} interval): " + ", ".join(drops) + f"; {described}"
        )
    return (
        f"Promoted: {described}, lower bound above {_signed(-tolerance)} points; no class's recall interval "
        f"reaches a drop of {_pts(max_drop)}"
    )


_WORDS = {
    "first_model": _first_model_words,
    "point": _point_words,
    "not_compared": lambda figures: f"Not compared: {figures['why']}. An admin may promote it by hand.",
    "bootstrap": bootstrap_reason,
}
