"""The training defaults have one source, TrainConfig: the CLI reads it (as the portal's settings do)."""

from classifier.cli import build_parser
from classifier.config import TrainConfig


def test_the_cli_trains_with_the_classifiers_defaults():
    args = build_parser().parse_args(["train", "data", "--out", "model.safetensors"])
    cli = TrainConfig(
        arch=args.arch, sizes=args.sizes, seed=args.seed, valid_pct=args.valid_pct, imbalance=args.imbalance
    )
    assert cli == TrainConfig()
