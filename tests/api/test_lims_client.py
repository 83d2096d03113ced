"""examples/lims_client.py without a portal: it stops waiting at every final status, "out_of_scope"
included, and its table says which images are out of scope (issue 24)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from portal.api import examples as ex

CLIENT = Path(__file__).resolve().parents[2] / "examples" / "lims_client.py"


@pytest.fixture(scope="module")
def lims_client():
    spec = importlib.util.spec_from_file_location("lims_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakePortal:
    """Answers GET /api/images/{id}/ from a script of states per image (the last one repeats)."""

    def __init__(self, states: dict[int, list[dict]]):
        self.states = states
        self.calls: dict[int, int] = dict.fromkeys(states, 0)

    def image(self, image_id: int) -> dict:
        self.calls[image_id] += 1
        script = self.states[image_id]
        return script[min(self.calls[image_id], len(script)) - 1]


def api_image(image_id: int, **fields) -> dict:
    return ex.IMAGE | {"id": image_id, "original_filename": f"frame-{image_id}.tif"} | fields


OUTSIDE = {
    "status": "out_of_scope",
    "out_of_scope": True,
    "predicted_category": "powder",
    "predicted_confidence": 0.97,
    "predicted_set": ["powder"],
    "predicted_set_label": "Powder",
}
PAIR = {"predicted_set": ["particles", "powder"], "predicted_set_label": "Particles or Powder"}


def test_the_client_stops_waiting_for_an_out_of_scope_image(lims_client):
    assert "out_of_scope" in lims_client.DONE_STATUSES
    pending = api_image(7, status="pending", predicted_category=None, predicted_confidence=None)
    portal = FakePortal({7: [pending, pending, api_image(7, **OUTSIDE)], 8: [api_image(8, **PAIR)]})

    latest = lims_client.wait_for_classification(portal, [7, 8], timeout=30, interval=0)

    assert portal.calls == {7: 3, 8: 1}
    assert latest[7]["status"] == "out_of_scope" and latest[8]["status"] == "classified"


def test_the_table_says_out_of_scope_and_shows_the_set(lims_client, capsys):
    lims_client.print_table({7: api_image(7, **OUTSIDE), 8: api_image(8, **PAIR)})

    out, err = capsys.readouterr()
    header, outside, pair = out.splitlines()
    assert header.split()[-1] == "set"
    assert outside.split()[:4] == ["7", "frame-7.tif", "out_of_scope", "powder"] and outside.endswith("Powder")
    assert " classified " in pair and pair.endswith("Particles or Powder")
    assert "1 image(s) out of scope" in err and err.strip().endswith(": 7")
