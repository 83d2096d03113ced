"""Artifact format, metrics and calibration (no training needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from classifier import artifact as artifact_module
from classifier.artifact import FORMAT_VERSION, ArtifactError, load_artifact, read_metadata, save_artifact
from classifier.calibration import expected_calibration_error, fit_temperature, softmax
from classifier.metrics import evaluate, format_report


def _state():
    torch.manual_seed(0)
    return {"layer.weight": torch.randn(4, 3), "layer.bias": torch.zeros(4), "bn.num_batches_tracked": torch.tensor(5)}


def test_round_trip(tmp_path):
    path = tmp_path / "m.semcls"
    sha = save_artifact(path, _state(), {"classes": ["a", "b"], "arch": "resnet18"})
    loaded = load_artifact(path, expected_sha256=sha)
    assert loaded.sha256 == sha and len(sha) == 64
    assert loaded.metadata["classes"] == ["a", "b"] and loaded.metadata["format_version"] == FORMAT_VERSION
    for key, value in _state().items():
        assert torch.equal(loaded.state_dict[key], value)
    assert read_metadata(path)["arch"] == "resnet18"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # temp file renamed away


def test_corrupt_payload_is_detected(tmp_path):
    path = tmp_path / "m.semcls"
    save_artifact(path, _state(), {"classes": ["a"]})
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_artifact(path)


def test_truncated_file_is_detected(tmp_path):
    path = tmp_path / "m.semcls"
    save_artifact(path, _state(), {"classes": ["a"]})
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ArtifactError, match="truncated"):
        load_artifact(path)
    path.write_bytes(data[:30])
    with pytest.raises(ArtifactError, match="truncated"):
        load_artifact(path)


def test_wrong_format_version(tmp_path, monkeypatch):
    path = tmp_path / "m.semcls"
    monkeypatch.setattr(artifact_module, "FORMAT_VERSION", FORMAT_VERSION + 1)
    save_artifact(path, _state(), {"classes": ["a"]})
    monkeypatch.setattr(artifact_module, "FORMAT_VERSION", FORMAT_VERSION)
    with pytest.raises(ArtifactError, match="format version"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="format version"):
        read_metadata(path)


def test_checksum_mismatch_and_not_an_artifact(tmp_path):
    path = tmp_path / "m.semcls"
    save_artifact(path, _state(), {"classes": ["a"]})
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_artifact(path, expected_sha256="0" * 64)
    other = tmp_path / "x.pth"
    torch.save(_state(), other)  # a plain pickle container
    with pytest.raises(ArtifactError, match="not a classifier artifact"):
        load_artifact(other)
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "missing.semcls")


def test_the_weights_are_a_safetensors_file_with_our_header(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    save_artifact(path, _state(), {"classes": ["a"], "arch": "resnet18"})
    with safe_open(path, "pt") as weights:  # any safetensors reader opens it
        assert set(weights.keys()) == set(_state())
        header = json.loads(weights.metadata()["sem_artifact"])
    assert header["format_version"] == FORMAT_VERSION == 2 and len(header["weights_sha256"]) == 64
    assert header["metadata"]["classes"] == ["a"]


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    sha = save_artifact(path, _state(), {"classes": ["a"]})

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (the unpickler) was called")

    monkeypatch.setattr(torch, "load", refuse)
    assert torch.equal(load_artifact(path, sha).state_dict["layer.weight"], _state()["layer.weight"])


def test_an_old_format_artifact_is_refused_until_upgraded(tmp_path):
    from classifier.artifact import LegacyArtifactError, format_version, upgrade_artifact
    from tests.worker_fixtures import write_legacy_artifact

    old = tmp_path / "model.pth"
    old_sha = write_legacy_artifact(old, _state(), {"classes": ["a", "b"], "arch": "resnet18"})
    assert format_version(old) == 1 and read_metadata(old)["arch"] == "resnet18"
    with pytest.raises(LegacyArtifactError, match="upgrade"):
        load_artifact(old, old_sha)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):  # checked before anything is unpickled
        upgrade_artifact(old, tmp_path / "x.safetensors", "0" * 64)

    new = tmp_path / "model.safetensors"
    new_sha = upgrade_artifact(old, new, old_sha)
    loaded = load_artifact(new, new_sha)
    assert format_version(new) == 2 and loaded.metadata["classes"] == ["a", "b"]
    assert loaded.metadata["upgraded_from_format_version"] == 1
    for key, value in _state().items():
        assert torch.equal(loaded.state_dict[key], value)
    assert upgrade_artifact(old, tmp_path / "again.safetensors", old_sha) == new_sha  # deterministic bytes


def test_metrics_against_hand_computed_confusion_matrix():
    classes = ["A", "B", "C"]
    y_true = ["A", "A", "A", "B", "B", "C"]
    # predictions: A,A,B | B,C | C  -> confusion [[2,1,0],[0,1,1],[0,0,1]]
    probabilities = np.array(
        [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.1, 0.3, 0.6], [0.2, 0.1, 0.7]]
    )
    result = evaluate(y_true, probabilities, classes)
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert result["confusion_matrix_pct"][0] == pytest.approx([66.67, 33.33, 0.0], abs=0.01)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_class"]["A"] == {
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
        "support": 3,
    }
    assert result["per_class"]["B"]["precision"] == pytest.approx(0.5)
    assert result["per_class"]["C"]["precision"] == pytest.approx(0.5)
    assert result["macro_avg"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert result["weighted_avg"]["recall"] == pytest.approx(4 / 6)
    # top-2: the true class is in the two most probable for every row except none -> all 6
    assert result["top2_accuracy"] == pytest.approx(1.0)
    json.dumps(result)
    assert "confusion matrix" in format_report(result)


def test_metrics_with_absent_class_and_top2_miss():
    classes = ["A", "B", "C", "D"]
    probabilities = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]])
    result = evaluate(["A", "B"], probabilities, classes)
    assert result["per_class"]["C"]["support"] == 0 and result["per_class"]["D"]["recall"] == 0.0
    assert result["confusion_matrix"][1] == [0, 0, 0, 1]
    assert result["confusion_matrix_pct"][2] == [0.0, 0.0, 0.0, 0.0]  # no row-normalising a missing class
    assert result["top2_accuracy"] == pytest.approx(0.5)  # B is ranked 3rd in row 2
    assert result["macro_avg"]["recall"] == pytest.approx(0.5)  # over present classes A and B
    with pytest.raises(ValueError, match="not in classes"):
        evaluate(["Z"], probabilities[:1], classes)


def test_temperature_scaling_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, temperature), labels)
    assert after < before / 2
    assert np.array_equal(softmax(overconfident).argmax(1), softmax(overconfident, temperature).argmax(1))
