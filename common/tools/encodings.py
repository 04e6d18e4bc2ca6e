"""How spread out an age regressor's encodings are on its test split: a check for collapsed features.

    python -m common.tools.encodings RUN_DIR [RUN_DIR ...] [--data_dir DIR] [--checkpoint best|last]

For each run folder of an age benchmark (AgeDB-DIR, IMDB-WIKI-DIR) the ResNet trunk is rebuilt from the run's
flags (``results.json``'s ``args``) and loaded from its checkpoint; the test split, read from ``--data_dir`` (by
default the run's own) and preprocessed as at evaluation, is encoded into the pooled encodings z (N, D). Printed per
run, as a markdown table:

* ``|z|``: the mean encoding norm;
* ``sd per dim``: the standard deviation of each encoding dimension over the test images, averaged over dimensions;
* ``cos min`` and ``cos mean``: the smallest and the mean cosine similarity of two different test images'
  encodings (1 and 1: every image has the same encoding direction);
* ``max |r|``: the largest absolute Pearson correlation of one encoding dimension with the age;
* ``pred sd``: the standard deviation of the run's saved test predictions (``test_predictions.npz``), in years.

A regulariser that collapses the encodings shows ``cos min`` near 1, a small ``sd per dim`` and a ``pred sd`` near
0: the model predicts one age for every image (README, "Every method, three seeds").
"""
from __future__ import annotations

import math
from argparse import Namespace
from pathlib import Path

import torch

from common.errors import RunError

#: the trunk's parameter and buffer names start with one of these (the head, FDS and projector are not read).
TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
AGE_DATASETS = ("agedb", "imdb_wiki")


def encoding_statistics(encodings: torch.Tensor, labels: torch.Tensor) -> dict:
    """Spread statistics of ``encodings`` (N, D) with their ``labels`` (N,), both float64, N ≥ 2 (see the module
    docstring): ``norm``, ``sd_per_dim``, ``cos_min``, ``cos_mean`` (over the N(N − 1) ordered pairs of different
    rows), ``max_abs_r`` (dimensions that do not vary have no correlation and are skipped; 0 when none varies)."""
    n = encodings.shape[0]
    if n < 2:
        raise ValueError(f"encoding_statistics: needs at least 2 encodings, got {n}.")
    unit = torch.nn.functional.normalize(encodings, dim=1)
    cosines = unit @ unit.T
    off_diagonal = cosines[~torch.eye(n, dtype=torch.bool, device=encodings.device)]
    centred = encodings - encodings.mean(0)
    spread = centred.pow(2).sum(0).sqrt()               # (D,) ‖z_k − mean‖
    label_centred = labels - labels.mean()
    varies = spread > 0
    r = (centred[:, varies] * label_centred[:, None]).sum(0) / (spread[varies] * label_centred.norm())
    return {"norm": float(encodings.norm(dim=1).mean()), "sd_per_dim": float(encodings.std(0).mean()),
            "cos_min": float(off_diagonal.min()), "cos_mean": float(off_diagonal.mean()),
            "max_abs_r": float(r.abs().max()) if r.numel() else 0.0}


def run_flags(results: dict, path) -> Namespace:
    """The flags an age benchmark's run was trained with, from its loaded ``results.json`` (at ``path``)."""
    flags = results.get("args")
    if not isinstance(flags, dict) or flags.get("dataset") not in AGE_DATASETS:
        raise RunError(f"{path} is not an age benchmark's run (its flags name no dataset among "
                       f"{', '.join(AGE_DATASETS)}); this tool reads AgeDB-DIR and IMDB-WIKI-DIR runs.")
    return Namespace(**flags)


def load_trunk(run_dir: Path, flags: Namespace, checkpoint: str):
    """The run's ResNet (trunk weights from ``ckpt.best.pth.tar`` or ``ckpt.pth.tar``; its head as built), in
    evaluation mode, and the checkpoint's ``state_dict``."""
    from common.checkpointing import load_checkpoint
    from common.models.resnet import ResNetRegressor

    path = run_dir / ("ckpt.best.pth.tar" if checkpoint == "best" else "ckpt.pth.tar")
    state = load_checkpoint(path)["state_dict"]
    model = ResNetRegressor(flags.model, width=flags.width, stem=flags.stem)
    trunk = {k: v for k, v in state.items() if k.startswith(TRUNK_PREFIXES)}
    try:
        missing, unexpected = model.load_state_dict(trunk, strict=False)
        misfits = [k for k in missing if k.startswith(TRUNK_PREFIXES)] + unexpected
    except RuntimeError as error:           # a tensor of another shape raises even without strict
        misfits = [str(error).splitlines()[-1].strip()]
    if misfits:
        raise RunError(f"checkpoint {path} does not fit a {flags.model} of width {flags.width} ({misfits[0]}); "
                       "check the run's results.json, or was the checkpoint written by another version of the repo?")
    return model.eval(), state


def load_test_split(flags: Namespace, data_dir: Path):
    """(images (N, 3, S, S) float32, ages (N,) float64) of the test split, preprocessed as at evaluation."""
    from common.age import AgeDataset, read_split_csv

    # No range check on the ages: the run's training already made it against its benchmark's range.
    frame = read_split_csv(data_dir / f"{flags.dataset}.csv", max_age=math.inf)
    dataset = AgeDataset(frame, data_dir, "test", flags.img_size)
    samples = [dataset[i] for i in range(len(dataset))]
    return torch.stack([s["input"] for s in samples]), torch.cat([s["target"] for s in samples]).double()


@torch.no_grad()
def encode(model, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, D) float64 encodings of ``images``, ``batch_size`` at a time."""
    return torch.cat([model.encode(images[i:i + batch_size]).double() for i in range(0, len(images), batch_size)])


def run_statistics(run_dir, data_dir=None, checkpoint: str = "best", batch_size: int = 256) -> dict:
    """:func:`encoding_statistics` of one run on its test split, with ``pred_sd`` from its saved predictions."""
    from common.tools.report import load_run

    run_dir = Path(run_dir)
    results = load_run(run_dir)
    flags = run_flags(results, run_dir / "results.json")
    model, _ = load_trunk(run_dir, flags, checkpoint)
    images, ages = load_test_split(flags, Path(data_dir or flags.data_dir))
    stats = encoding_statistics(encode(model, images, batch_size), ages)
    predictions = results.get("predictions")
    stats["pred_sd"] = float(predictions["preds"].std()) if predictions else float("nan")
    return stats


COLUMNS = (("norm", "\\|z\\|"), ("sd_per_dim", "sd per dim"), ("cos_min", "cos min"), ("cos_mean", "cos mean"),
           ("max_abs_r", "max \\|r\\|"), ("pred_sd", "pred sd"))


def main(argv=None) -> None:
    from common.cli import Parser

    parser = Parser(__doc__, prog="python -m common.tools.encodings", formatter_class=Parser.RawFormatter)
    parser.add_argument("runs", nargs="+", help="age benchmark run folders (results.json and the checkpoints)")
    parser.add_argument("--data_dir", default=None, help="the data folder (default: each run's --data_dir)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="ckpt.best.pth.tar (best) or ckpt.pth.tar (last)")
    parser.add_argument("--batch_size", type=int, default=256, help="images encoded at a time")
    args = parser.parse_args(argv)
    print("| run | " + " | ".join(header for _, header in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for run in args.runs:
        try:
            stats = run_statistics(run, args.data_dir, args.checkpoint, args.batch_size)
        except RunError as error:
            raise SystemExit(f"error: {error}") from None
        print(f"| {run} | " + " | ".join(f"{stats[key]:.4g}" for key, _ in COLUMNS) + " |")


if __name__ == "__main__":
    main()
