"""The reference recipe with its one leak closed: its DataLoaders see only the training tree.

`../shared/tools/reference_recipe.py` converts TRAIN_DIR and TEST_DIR into WORK/train and WORK/test and
then calls `ImageDataLoaders.from_folder(WORK, valid_pct=0.15)`. With `valid_pct`, fastai's from_folder
collects *every* image under WORK (`get_image_files(WORK)`) and splits them at random, so about 85 % of
the test images are trained on and the rest validate: its test accuracy measures memory. This wrapper runs
the script unchanged (same arguments, same output) with fastai's `from_folder` confined to WORK/train.

    python bench/reference_leakfree.py TRAIN_DIR TEST_DIR [the reference recipe's options]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "shared" / "tools" / "reference_recipe.py"


def confine_from_folder_to_train() -> None:
    import fastai.vision.all  # noqa: F401  (binds the recipe's own get_image_files before the patch)
    import fastai.vision.data as vision_data

    everything = vision_data.get_image_files

    def train_tree_only(path, *args, **kwargs):
        path = Path(path)
        if (path / "train").is_dir() and (path / "test").is_dir():
            return everything(path / "train", *args, **kwargs)
        return everything(path, *args, **kwargs)

    vision_data.get_image_files = train_tree_only  # the name from_folder looks up


def main() -> None:
    confine_from_folder_to_train()
    spec = importlib.util.spec_from_file_location("reference_recipe", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    sys.argv[0] = str(RECIPE)
    recipe.main()


if __name__ == "__main__":
    main()
