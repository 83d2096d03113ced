"""One number style on the pages: rates, probabilities and shares as whole percentages with a no-break
space before the sign ("79 %"), never a three-decimal fraction ("0.793") beside them; differences of
rates in percentage points. The REST API keeps sending fractions."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from portal import rates
from portal.models import TrainingRun

NBSP = "\u00a0"
# 23 of 29 right: accuracy 0.793, and no per-class figure a round number.
COUNTS = [[7, 1, 1], [2, 7, 1], [0, 1, 9]]
PROBABILITIES = {"Fibres": 0.873, "Particles": 0.1, "Powder": 0.027}


def shown_text(html: str) -> str:
    """What a person reads: the text without scripts (the chart's data is JSON), plus the tooltips and
    accessible names (title, aria-label)."""
    html = re.sub(r"<script\b.*?</script>", " ", html, flags=re.S)
    attributes = " ".join(re.findall(r'(?:title|aria-label)="([^"]*)"', html))
    return re.sub(r"<[^>]+>", " ", html) + " " + attributes


def fractions_in(text: str) -> list[str]:
    """Rates written as fractions ("0.793", "1.000"); entropy and cosine similarity stay plain numbers."""
    return [
        match.group(0)
        for match in re.finditer(r"(?<![\w.])[01]\.\d{2,3}(?![\d])", text)
        if not re.search(r"(entropy|similarity)\s*$", text[: match.start()])
    ]


def test_percent_and_points_say_fractions_the_same_way_everywhere():
    assert rates.percent(0.873) == f"87{NBSP}%" and rates.percent(1) == f"100{NBSP}%"
    assert rates.percent(0.0453, 1) == f"4.5{NBSP}%"
    assert rates.percent(None) == "" and rates.percent("n/a") == "" and rates.percent(float("nan")) == ""
    assert rates.points(0.6) == f"60{NBSP}points"
    assert rates.points(0.031, 1, signed=True) == "+3.1" and rates.points(-0.012, 1, signed=True) == "−1.2"
    assert rates.points(-0.0004, 1, signed=True) == "+0.0"  # no "−0.0"


@pytest.fixture
def evaluated(make_model, make_image, sample, predict, categories):
    model = make_model(1, status="production", counts=COUNTS)
    image = make_image(sample)
    predict(image, model, PROBABILITIES, categories)
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.MANUAL, active=None, status=TrainingRun.Status.SUCCEEDED, model_version=model
    )
    return model, image, run


def test_every_page_says_rates_as_percentages(client, curator, evaluated):
    model, image, run = evaluated
    assert model.accuracy == pytest.approx(23 / 29)
    client.force_login(curator)
    pages = {
        "dashboard": reverse("web:dashboard"),
        "training": reverse("web:training"),
        "run": reverse("web:training_run", args=[run.pk]),
        "image": reverse("web:image_detail", args=[image.pk]),
        "browse": reverse("web:browse"),
        "review": reverse("web:review"),
    }
    text = {name: shown_text(client.get(url).content.decode()) for name, url in pages.items()}

    for name, shown in text.items():
        assert fractions_in(shown) == [], name
        assert not re.search(r"\d%", shown), (name, re.findall(r".{30}\d%", shown))  # "87%": no space
        assert not re.search(r"\d %", shown), (name, re.findall(r".{30}\d %", shown))  # a space that breaks
    for name in ("dashboard", "training", "run"):
        assert f"79{NBSP}%" in text[name], name  # accuracy 0.793
    assert f"Fibres 87{NBSP}%" in text["browse"] and f"Fibres 87{NBSP}%" in text["image"]
    assert f"87{NBSP}%" in text["review"]


def test_the_api_keeps_sending_fractions(client, curator, evaluated):
    model, image, _ = evaluated
    client.force_login(curator)
    body = client.get(f"/api/images/{image.pk}/").json()
    assert body["predicted_confidence"] == pytest.approx(0.873)
    models = client.get("/api/models/").json()
    listed = models["results"] if isinstance(models, dict) else models
    assert any(row.get("accuracy") == pytest.approx(23 / 29) for row in listed), listed
