"""Training, progress, cancellation, engine parity (tiny synthetic runs)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier import transforms
from classifier.artifact import load_artifact
from classifier.calibration import softmax
from classifier.config import TrainConfig
from classifier.engine import Engine, ImagePrediction, clear_engine_cache, get_engine
from classifier.train import TrainingCancelled, stratified_split, train

CLASSES = ["dots", "noise", "stripes"]  # as in conftest


def test_progress_events_in_order_with_increasing_fraction(trained):
    _, events, _ = trained
    json.dumps(events)  # JSON-serialisable for the worker's result backend
    kinds = [e["event"] for e in events]
    assert kinds[0] == "stage_start" and kinds[-2:] == ["evaluating", "done"]
    compact = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert compact == ["stage_start", "batch", "epoch_end", "stage_end"] * 2 + ["evaluating", "done"]
    fractions = [e["fraction"] for e in events]
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert fractions[0] < 0.2 and fractions[-1] == 1.0
    batch = next(e for e in events if e["event"] == "batch")
    for key in ("stage", "stages", "size", "epoch", "epochs", "batch", "batches", "train_loss", "fraction"):
        assert key in batch
    epoch_end = next(e for e in events if e["event"] == "epoch_end")
    assert math.isfinite(epoch_end["valid_loss"]) and "accuracy" in epoch_end["metrics"]


def test_each_stage_changes_the_input_size(trained):
    result, events, _ = trained
    shapes = {}
    for event in events:
        if event["event"] == "batch":
            shapes.setdefault(event["stage"], set()).add(tuple(event["input_shape"][1:]))
    assert shapes == {0: {(3, 32, 32)}, 1: {(3, 48, 48)}}
    assert [summary["size"] for summary in result.stages] == [32, 48]
    # `epochs` counts the stage's epochs and agrees with its per-epoch results and its progress events.
    assert all(s["best_epoch"] == 0 and s["epochs"] == len(s["epoch_results"]) == 1 for s in result.stages)
    assert [e["epochs"] for e in events if e["event"] == "epoch_end"] == [s["epochs"] for s in result.stages]


def test_offline_pretrained_falls_back_to_scratch(trained):
    result, _, warnings = trained
    assert result.metadata["pretrained_used"] is False
    assert any("FROM SCRATCH" in r.getMessage() for r in warnings)


def test_artifact_metadata_is_complete(trained):
    result, _, _ = trained
    metadata = load_artifact(result.artifact_path, expected_sha256=result.sha256).metadata
    for key in (
        "format_version",
        "classes",
        "input_size",
        "normalisation",
        "arch",
        "training_config",
        "history",
        "data_fingerprint",
        "library_versions",
        "temperature",
        "evaluation",
        "pretrained_used",
        "created_at",
        "device",
        "duration_s",
    ):
        assert key in metadata, key
    assert metadata["classes"] == CLASSES and metadata["input_size"] == 48
    assert TrainConfig.from_dict(metadata["training_config"]).sizes == (32, 48)
    assert metadata["evaluation"]["split"] == "valid"
    assert metadata["temperature"] > 0


def test_engine_matches_fastai_learner(trained, synthetic_items):
    result, _, _ = trained
    engine = Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)
    learner = result.learner
    test_dl = learner.dls.test_dl(synthetic_items)
    learner_probs, _ = learner.get_preds(dl=test_dl)
    arrays = [transforms.eval_array(path, engine.input_size) for path, _ in synthetic_items]
    engine_probs = softmax(engine.predict_logits(arrays))
    assert engine_probs.shape == tuple(learner_probs.shape)
    np.testing.assert_allclose(engine_probs, learner_probs.numpy(), atol=1e-4)
    # Calibrated predictions keep the same ranking.
    predictions = engine.predict_paths([p for p, _ in synthetic_items], batch_size=5)
    assert [p.top_index for p in predictions] == list(learner_probs.numpy().argmax(1))


def test_predictions_carry_uncertainty(trained, synthetic_items):
    result, _, _ = trained
    engine = Engine.from_artifact(result.artifact_path)
    paths = [p for p, _ in synthetic_items[:6]]
    predictions = engine.predict_paths(paths)
    for prediction in predictions:
        assert isinstance(prediction, ImagePrediction)
        assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-5)
        ordered = sorted(prediction.probabilities, reverse=True)
        assert prediction.confidence == pytest.approx(ordered[0])
        assert prediction.margin == pytest.approx(ordered[0] - ordered[1])
        assert 0 <= prediction.entropy <= math.log(len(CLASSES)) + 1e-6
        assert prediction.top_class == CLASSES[prediction.top_index]
    from PIL import Image

    from_images = engine.predict_images([Image.open(p) for p in paths])
    for a, b in zip(predictions, from_images):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)


def test_get_engine_caches_and_reloads(trained, tmp_path):
    result, _, _ = trained
    clear_engine_cache()
    first = get_engine(result.artifact_path, result.sha256)
    assert get_engine(result.artifact_path, result.sha256) is first
    copy = tmp_path / "copy.semcls"
    copy.write_bytes(Path(result.artifact_path).read_bytes())
    assert get_engine(copy, result.sha256) is not first
    clear_engine_cache()


def test_cancellation_between_batches(synthetic_items, tmp_path):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 2

    out = tmp_path / "cancelled.semcls"
    config = TrainConfig(arch="resnet18", sizes=(32,), epochs=(3,), batch_sizes=(8,), pretrained=False)
    with pytest.raises(TrainingCancelled):
        train(synthetic_items, config, str(out), should_stop=should_stop)
    assert calls["n"] == 3 and not out.exists()


def test_weighted_sampler_raw_inputs_local_weights_and_seed(tmp_path, dataset_factory):
    """Imbalanced raw data (class with 2 images), weighted sampler, a local
    'pretrained' weights file, and two runs with one seed giving equal weights."""
    import torchvision

    items = dataset_factory(tmp_path / "data", {"dots": 10, "noise": 2, "stripes": 6}, seed=3)
    weights = tmp_path / "resnet18-local.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    config = TrainConfig(
        arch="resnet18",
        sizes=(32,),
        epochs=(1,),
        batch_sizes=(6,),
        imbalance="weighted_sampler",
        raw_inputs=True,
        weights_path=str(weights),
        seed=11,
        derivative_cache=str(tmp_path / "cache"),
    )
    first = train(items, config, str(tmp_path / "a.semcls"))
    second = train(items, config, str(tmp_path / "b.semcls"))
    assert first.metadata["pretrained_used"] is True
    assert first.metadata["n_valid"] >= 3  # every class with >= 2 images is in validation
    a = load_artifact(first.artifact_path).state_dict
    b = load_artifact(second.artifact_path).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stratified_split_copes_with_tiny_classes():
    labels = ["big"] * 20 + ["pair"] * 2 + ["single"]
    train_idx, valid_idx = stratified_split(labels, 0.2, seed=0)
    assert sorted(train_idx + valid_idx) == list(range(23))
    valid_labels = [labels[i] for i in valid_idx]
    assert valid_labels.count("big") == 4 and valid_labels.count("pair") == 1 and "single" not in valid_labels
    with pytest.raises(ValueError):
        stratified_split(["a", "b"], 0.2, seed=0)


def test_cli_evaluate_and_predict(trained, synthetic_items, capsys):
    from classifier.cli import main

    result, _, _ = trained
    data_dir = str(Path(synthetic_items[0][0]).parents[1])
    assert main(["evaluate", result.artifact_path, data_dir, "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["n"] == len(synthetic_items) and evaluation["classes"] == CLASSES
    assert main(["predict", result.artifact_path, synthetic_items[0][0], synthetic_items[-1][0]]) == 0
    table = capsys.readouterr().out
    assert synthetic_items[0][0] in table and "entropy" in table


def test_timm_architecture_trains_loads_local_weights_and_matches_the_learner(synthetic_items, tmp_path):
    """A timm name ("timm/NAME", or a plain name torchvision does not have) trains through the same
    path, takes a local weights file, and the engine reproduces the learner's probabilities."""
    timm = pytest.importorskip("timm")
    weights = tmp_path / "resnet10t-local.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), weights)
    config = TrainConfig(
        arch="timm/resnet10t", sizes=(32,), epochs=(1,), batch_sizes=(8,), weights_path=str(weights), seed=3
    )
    result = train(synthetic_items, config, str(tmp_path / "timm.semcls"))
    assert result.metadata["pretrained_used"] is True and result.metadata["arch"] == "timm/resnet10t"
    # The file's tensors are the body's (its first stage is frozen, so they are still as loaded).
    body = result.learner.model[0].model.state_dict()
    loaded = torch.load(weights)
    assert all(torch.equal(body[name].cpu(), loaded[name]) for name in body if name.endswith("conv.weight"))

    engine = Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)
    learner_probs, _ = result.learner.get_preds(dl=result.learner.dls.test_dl(synthetic_items))
    arrays = [transforms.eval_array(path, engine.input_size) for path, _ in synthetic_items]
    np.testing.assert_allclose(softmax(engine.predict_logits(arrays)), learner_probs.numpy(), atol=1e-4)


def test_timm_weights_under_other_names_are_refused(tmp_path):
    """timm bodies load a file under timm's own key names; a file under other names is refused, not
    silently left random (its unexpected keys are ignored only beside a complete body)."""
    timm = pytest.importorskip("timm")
    from classifier.network import create_network

    renamed = {f"backbone.{name}": value for name, value in timm.create_model("resnet10t").state_dict().items()}
    with pytest.raises(ValueError, match="do not fit resnet10t"):
        create_network("timm/resnet10t", 3, renamed)


def test_unknown_architecture_names_say_what_is_accepted():
    from classifier.network import create_network

    with pytest.raises(ValueError, match="torchvision name .* or a timm name"):
        create_network("resnet-does-not-exist", 3)


def test_first_stage_trains_only_the_head_of_a_pretrained_body(synthetic_items, tmp_path, monkeypatch):
    """freeze_first_stage: with local weights, stage 1 leaves the body's convolutions as loaded and
    moves the head's weights."""
    import torchvision

    from classifier import network

    initial_head = {}

    def create_and_remember_the_head(*args, **kwargs):
        model = build(*args, **kwargs)
        initial_head.update({name: p.detach().clone() for name, p in model[1].named_parameters() if p.dim() > 1})
        return model

    build = network.create_network
    monkeypatch.setattr(network, "create_network", create_and_remember_the_head)
    weights = tmp_path / "resnet18-local.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    config = TrainConfig(arch="resnet18", sizes=(32,), epochs=(1,), batch_sizes=(8,), weights_path=str(weights))
    result = train(synthetic_items, config, str(tmp_path / "frozen.semcls"))
    first_conv = result.learner.model[0][0].weight.detach().cpu()
    assert torch.equal(first_conv, torch.load(weights)["conv1.weight"])
    trained_head = dict(result.learner.model[1].named_parameters())
    assert initial_head and all(
        not torch.equal(trained_head[name].detach().cpu(), before.cpu()) for name, before in initial_head.items()
    )


def test_training_uses_every_core_even_when_another_process_is_busy():
    """A run owns the host's cores: a busy core at the start used to leave a whole run one thread."""
    import subprocess
    import sys

    from classifier.train import default_cpu_threads

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        threads = default_cpu_threads()
    finally:
        spinner.kill()
        spinner.wait()
    assert threads == len(os.sched_getaffinity(0))
