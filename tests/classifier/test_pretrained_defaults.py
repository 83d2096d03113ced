"""With pretrained weights present, fine-tuning a torchvision architecture (classifier/train.py, the fastai
path) must not do worse than from scratch. The default recipe, a head on frozen EfficientNet-Lite0 features,
is tested in test_backbones.py.

No download: the "pretrained" body is produced here, by training a resnet18 on one synthetic texture task
and saving its body as a torchvision state dict (the format of an ImageNet weights file). The fine-tuning
defaults then train on a second task of the same textures with and without that file.
"""

from __future__ import annotations

import pytest

from classifier.config import TrainConfig
from classifier.train import train

pytestmark = pytest.mark.slow
SMALL = dict(arch="resnet18", sizes=(32, 48), seed=5)


def body_as_torchvision_state(model) -> dict:
    """Our network's body (resnet children up to layer4) under torchvision's resnet18 key names."""
    import torchvision

    names = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    state = torchvision.models.resnet18(weights=None).state_dict()  # fc stays random: the head is new anyway
    for key, value in model[0].state_dict().items():
        index, rest = key.split(".", 1)
        state[f"{names[index]}.{rest}"] = value.detach().cpu().clone()
    return state


def test_local_pretrained_weights_do_not_make_fine_tuning_worse(dataset_factory, tmp_path):
    import torch

    source = dataset_factory(tmp_path / "pretrain", {"dots": 24, "noise": 24, "stripes": 24}, seed=11)
    pretrained = train(source, TrainConfig(**SMALL, epochs=(4, 3), pretrained=False), str(tmp_path / "p.semcls"))
    weights = tmp_path / "resnet18-local-imagenet-stand-in.pth"
    torch.save(body_as_torchvision_state(pretrained.learner.model), weights)

    target = dataset_factory(tmp_path / "target", {"dots": 14, "noise": 14, "stripes": 14}, seed=23)
    held_out = dataset_factory(tmp_path / "held-out", {"dots": 8, "noise": 8, "stripes": 8}, seed=37)
    scores = {}
    for name, options in {"scratch": dict(pretrained=False), "weights": dict(weights_path=str(weights))}.items():
        config = TrainConfig(**SMALL, epochs=(3, 2), **options)  # the defaults otherwise
        result = train(target, config, str(tmp_path / f"{name}.semcls"), test_items=held_out)
        scores[name] = result.evaluation["accuracy"]
        assert result.metadata["pretrained_used"] is (name == "weights")

    assert scores["weights"] >= scores["scratch"], scores  # not worse: no tolerance that hides a loss
