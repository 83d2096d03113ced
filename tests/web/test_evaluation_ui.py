"""Issue 13 in the UI: "near-duplicate of image N" in the upload outcome, the image page and the API (only
when the user may see that image), the gate's interval and decision on the Training page, and the
dashboard's per-class interval bars with each class's test support."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, ImageEnhance
from rest_framework.test import APIClient

from classifier.synthetic import make_image as synthetic_image
from portal.models import SEMImage
from portal.services.ingestion.ingest import ingest_file
from tests.web.conftest import evaluation

pytestmark = pytest.mark.django_db


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def original_and_copy(seed: int = 3) -> tuple[bytes, bytes]:
    """A synthetic micrograph and a re-saved copy 10 % brighter (a near-duplicate, other bytes)."""
    grey = synthetic_image("Powder", seed, size=(512, 384)).convert("L")
    return _png(grey), _png(ImageEnhance.Brightness(grey).enhance(1.1))


def post_file(client, sample, name, content):
    return client.post(reverse("web:upload_file"), {"sample": sample.pk, "file": SimpleUploadedFile(name, content)})


def api_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- near-duplicates --------------------------------------------------------------------------------------


def test_upload_outcome_image_page_and_api_name_the_near_duplicate(client, member, sample):
    original, copy = original_and_copy()
    client.force_login(member)
    first = post_file(client, sample, "original.png", original).json()
    assert first["outcome"] == "stored" and first["near_duplicate_of"] is None

    second = post_file(client, sample, "brighter.png", copy).json()

    url = reverse("web:image_detail", args=[first["id"]])
    assert second["outcome"] == "stored" and second["id"] != first["id"]
    assert second["near_duplicate_of"] == {"id": first["id"], "url": url, "filename": "original.png"}
    page = client.get(reverse("web:image_detail", args=[second["id"]])).content.decode()
    assert f'Near-duplicate of <a href="{url}"' in page and f"image {first['id']}</a>" in page
    first_page = client.get(url).content.decode()
    assert "Near-duplicate of" not in first_page  # the first of its group ...
    assert f'href="{reverse("web:image_detail", args=[second["id"]])}"' in first_page  # ... lists the others

    api = api_client(member)
    assert api.get(f"/api/images/{second['id']}/").json()["near_duplicate_of"] == first["id"]
    listed = {row["id"]: row["near_duplicate_of"] for row in api.get("/api/images/").json()["results"]}
    assert listed == {first["id"]: None, second["id"]: first["id"]}


def test_a_near_duplicate_the_user_cannot_see_is_never_revealed(client, member, sample, other_sample):
    original, copy = original_and_copy(seed=5)
    hidden = ingest_file(
        io.BytesIO(original), filename="theirs.png", sample=other_sample, uploaded_by=other_sample.owner
    ).image
    client.force_login(member)

    body = post_file(client, sample, "mine.png", copy).json()

    mine = SEMImage.objects.get(pk=body["id"])
    assert mine.near_duplicate_of_id == hidden.pk  # it is one (and shares its side of the split) ...
    assert body["near_duplicate_of"] is None  # ... but this user cannot see it
    page = client.get(reverse("web:image_detail", args=[mine.pk])).content.decode()
    assert "Near-duplicate" not in page and "theirs.png" not in page
    api = api_client(member)
    assert api.get(f"/api/images/{mine.pk}/").json()["near_duplicate_of"] is None
    assert [row["near_duplicate_of"] for row in api.get("/api/images/").json()["results"]] == [None]


# --- the gate on the Training page ------------------------------------------------------------------------


def _gate(decision: str, diff: float, low: float, high: float) -> dict:
    return {
        "level": 0.9,
        "resamples": 2000,
        "seed": 0,
        "n": 60,
        "tolerance": 0.0,
        "max_recall_drop": 0.05,
        "decision": decision,
        "macro_f1": {"diff": diff, "low": low, "high": high},
        "recall": {
            "Fibres": {"diff": -0.05, "low": -0.15, "high": 0.05, "support": 20},
            "Particles": {"diff": 0.1, "low": 0.0, "high": 0.2, "support": 40},
        },
    }


def test_training_page_shows_each_models_gate_interval_and_decision(client, member, make_model):
    for version, gate in [
        (1, None),
        (2, _gate("promoted", 0.031, 0.0004, 0.080)),
        (3, _gate("refused", 0.031, -0.012, 0.080)),
        (4, _gate("too_small", 0.2, -0.1, 0.5)),
    ]:
        model = make_model(
            version,
            status="production" if version == 2 else "candidate",
            gate_passed=version < 3,
            gate_reason=f"reason {version}",
        )
        if gate:
            model.metrics = {**model.metrics, "gate": gate}
            model.save()
    client.force_login(member)

    html = client.get(reverse("web:training")).content.decode()

    rows = {
        int(row.split("?model=")[1].split('"')[0]): row
        for row in html.split('id="models"')[1].split("</table>")[0].split("<tr>")[2:]
    }
    assert "Δ macro-F1" not in rows[1] and "passed" in rows[1] and "reason 1" in rows[1]
    assert "passed" in rows[2] and "+3.1 [+0.0, +8.0]</span> points at 90\u00a0%" in rows[2]
    assert (
        "refused" in rows[3] and 'Δ macro-F1 <span class="mono">+3.1 [−1.2, +8.0]</span> points at 90\u00a0%' in rows[3]
    )
    assert "worst recall: Fibres" in rows[3] and "−5.0 [−15.0, +5.0]</span> points" in rows[3]
    assert "too small to tell" in rows[4] and "refused" not in rows[4]


# --- per-class intervals on the dashboard -----------------------------------------------------------------


def test_dashboard_draws_per_class_interval_bars_with_the_test_support(client, member, make_model):
    from portal.services.learning.promotion import evaluation_intervals

    classes = ("Fibres", "Particles", "Powder")
    metrics = evaluation(classes, [[18, 2, 0], [4, 6, 0], [0, 0, 0]])
    metrics.update(evaluation_intervals(metrics), interval_level=0.9)
    make_model(1, status="production", classes=classes, metrics=metrics)
    client.force_login(member)

    response = client.get(reverse("web:dashboard"))

    rows = {row["name"]: row for row in response.context["per_class"]}
    fibres = rows["Fibres"]
    assert fibres["support"] == 20 and fibres["recall"] == 0.9
    bar = fibres["recall_interval"]
    assert float(bar["low"]) < 0.9 < float(bar["high"]) <= 1.0 and bar["point"] == "90.0" and bar["level"] == 0.9
    assert float(rows["Particles"]["recall_interval"]["width"]) > float(bar["width"])  # 10 test images, not 20
    assert "recall_interval" not in rows["Powder"]  # no test image: nothing measured, no bar
    html = response.content.decode()
    table = html.split('id="per-class"')[1].split("</table>")[0]
    assert table.count('class="ci"') == 4  # precision and recall of the two classes with test images
    assert f'style="left: {bar["left"]}%; width: {bar["width"]}%"' in table
    assert "Test support" in table and '<td class="num">20</td>' in table
    assert "90\u00a0% interval of a stratified bootstrap" in html
    powder = table.split("<td>Powder</td>")[1].split("</tr>")[0]
    assert powder.count("—") == 3 and "ci" not in powder


def test_dashboard_without_intervals_says_so(client, member, make_model):
    make_model(1, status="production")
    client.force_login(member)
    html = client.get(reverse("web:dashboard")).content.decode()
    assert 'class="ci"' not in html and "No intervals for this evaluation" in html


def test_stored_evaluation_intervals_come_from_its_confusion_matrix():
    from portal.services.learning.promotion import evaluation_intervals

    metrics = evaluation(("Fibres", "Particles"), [[10, 0], [3, 7]])
    intervals = evaluation_intervals(metrics)["intervals"]
    assert intervals["Fibres"]["recall"] == [1.0, 1.0]  # every resample of ten right answers is right
    low, high = intervals["Particles"]["recall"]
    assert low < 0.7 < high
    assert evaluation_intervals({}) == {}
