"""Samples per second of the full training step (forward, every loss, backward, Adam), per method, and data loading.

    python benchmarks/train_step.py [--device cpu|cuda] [--model resnet50] [--img_size 224] [--batch_size 64]
                                    [--blocks 5] [--steps 3] [--loading]
                                    [--variants KEY ...] [--compare_bf16]

Each method alone and the full stack run the same model on the same random batch (data excluded), timed in
alternating blocks (every variant once per block, so slow drifts of a shared machine hit all alike); the table
gives the median images per second (of the batch of ``--batch_size``: ConR's views and the doubled batch of the
"vanilla, 2 × batch" row, the floor of any two-view method, are not counted) and each variant's step time against
vanilla. Every variant runs the training loop's own step (``Trainer.train_step``: the objective, the loss's health
record and meters on the device, backward, Adam); the "bare loop" row is the same model, batch and optimiser in a
plain PyTorch loop (forward, L1, backward, step), so "vanilla / bare" is the loop's overhead (issue 30's target:
≤ 1.05×). ``--loading`` also times the data pipeline per loader process on synthetic AgeDB-DIR: decoding JPEG files
against reading the HDF5 pack (``python -m common.tools.pack``), both followed by the same augmentation.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from types import MethodType, SimpleNamespace

import torch

import torch.nn.functional as F

from common.bsam import BSAMStep
from common.fds import FDS
from common.meters import DeviceMeters, StepHealth
from common.models.resnet import ResNetRegressor
from common.losses.accon import ACConHead
from common.losses.group_dir import GroupDIRHead
from common.objective import ObjectiveData, objective_from_flags
from common.trainer import Trainer

# key (for --variants): (row label, what differs from vanilla)
VARIANTS = {
    "vanilla": ("vanilla", {}),
    "lds": ("LDS (re-weighting)", {"weights": True}),
    "fds": ("FDS", {"fds": True}),
    "ranksim": ("RankSim", {"objective": {"regularization_weight": 100.0, "interpolation_lambda": 2.0}}),
    "srl": ("SRL", {"srl": True, "objective": {"srl": True, "w1": 10.0, "w2": 100.0, "w3": 0.01, "n_points": 2000}}),
    "bmc": ("Balanced MSE (BMC)", {"objective": {"bmse": True, "imp": "bmc"}}),
    "conr": ("ConR, 3 passes (reference)", {"views": True, "objective": {"conr": True, "conr_beta": 4.0}}),
    "conr_views2": ("ConR, `--conr_views 2`", {"views": True, "reuse": True,
                                               "objective": {"conr": True, "conr_beta": 4.0}}),
    # The 2023–2025 methods (docs/methods.md §12), each at its AgeDB-DIR defaults.
    "dist": ("Dist Loss", {"weights": True, "objective": {"dist_loss": True, "reweight": "inverse"}}),
    "group_dir": ("Group-DIR (G = 10)", {"head": "group_dir", "objective": {"group_dir": True}}),
    "ordinal_entropy": ("Ordinal Entropy", {"objective": {"ordinal_entropy": True}}),
    "accon": ("ACCon (two views, the main pass)", {"head": "accon", "views": True, "reuse": True,
                                                   "objective": {"accon": True}}),
    # The floor of any method that forwards two views: vanilla on twice the batch (ConR's loss itself excluded).
    "bsam": ("BSAM (ρ = 0.2, two passes)", {"weights": True, "rho": 0.2}),
    "vanilla_2x": ("vanilla, 2 × batch", {"batch_factor": 2}),
    "all": ("all (LDS+FDS+RankSim+SRL+ConR)", {"weights": True, "fds": True, "srl": True, "views": True,
                                               "objective": {"regularization_weight": 100.0, "srl": True,
                                                             "w1": 10.0, "w2": 100.0, "w3": 0.01, "conr": True,
                                                             "conr_beta": 4.0}}),
}

# --compare_bf16: ConR (two extra views) with FDS smoothing, in float32 and under bf16 autocast.
BF16_VARIANT = {"fds": True, "views": True, "objective": {"conr": True, "conr_beta": 4.0}}


def build(variant: dict, args, device):
    torch.manual_seed(0)
    width = 64 if args.model == "resnet50" or args.img_size >= 128 else args.width
    fds = FDS(ResNetRegressor.encoding_dim_of(args.model, width), 100, 3) if variant.get("fds") else None
    head = {"group_dir": partial(GroupDIRHead, groups=10), "accon": partial(ACConHead, proj_dims=512, relu=True,
                                                                            normalized=False)}.get(variant.get("head"))
    model = ResNetRegressor(args.model, fds=fds, projection_dim=128 if variant.get("srl") else None, width=width,
                            stem="imagenet" if args.img_size >= 128 else "cifar",
                            **({"head": head} if head else {})).to(device).train()
    # Dist Loss's pseudo-labels come from the training labels: ages drawn as the batch's are.
    ages = torch.randint(0, 100, (2000,), generator=torch.Generator().manual_seed(1)).float().numpy()
    objective = objective_from_flags(ObjectiveData(train_labels=ages), srl_num_labels=121,
                                     **variant.get("objective", {})).to(device)
    objective.reuse_views = bool(variant.get("reuse"))
    optimizer = torch.optim.Adam(list(model.parameters()) + list(objective.parameters()), lr=1e-4)
    n, size = args.batch_size * variant.get("batch_factor", 1), args.img_size
    x = torch.randn(n, 3, size, size, device=device)
    batch = {"input": x, "target": torch.randint(0, 100, (n, 1), device=device).float(),
             "weight": (torch.rand(n, 1, device=device) + 0.5) if variant.get("weights") else None}
    if variant.get("views"):
        batch["views"] = (x.flip(3), x.flip(2))
    if fds is not None:      # statistics as after a first epoch, so that smoothing calibrates
        fds.update_last_epoch_stats(1)
    objective._step_rule = BSAMStep(variant["rho"]) if "rho" in variant else None
    return model, objective, optimizer, batch


def step(model, objective, optimizer, batch, autocast_dtype=None) -> torch.Tensor:
    """One training step (epoch 2: FDS smooths); ``autocast_dtype`` runs the forward pass under autocast."""
    precision = nullcontext() if autocast_dtype is None else torch.autocast(batch["input"].device.type,
                                                                             dtype=autocast_dtype)
    with precision:
        total = sum(objective(model, batch, 2).values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return total


def loop_step(model, objective, optimizer, batch, meters=None) -> None:
    """The training loop's step (``Trainer.train_step``) on this model, objective and optimiser, float32."""
    if not hasattr(objective, "_loop"):
        device = batch["input"].device
        objective._loop = SimpleNamespace(
            model=model, objective=objective, optimizer=optimizer, device=device, amp_dtype=None,
            scaler=torch.amp.GradScaler(device.type, enabled=False), health=StepHealth(1e4),
            config=SimpleNamespace(grad_clip=None, compile_model=None, step_rule=objective._step_rule),
            _last_good_checkpoint=lambda: "")
        for name in ("_losses", "_rule_between"):     # the step's own helpers, bound to this stand-in
            setattr(objective._loop, name, MethodType(getattr(Trainer, name), objective._loop))
    Trainer.train_step(objective._loop, batch, 2, 0, meters if meters is not None else DeviceMeters())


def bare_step(model, objective, optimizer, batch) -> None:
    """The same step in a plain PyTorch loop: forward, L1 loss, backward, Adam."""
    loss = F.l1_loss(model(batch["input"])["pred"], batch["target"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_steps(args, device) -> dict[str, list[float]]:
    built = {key: build(VARIANTS[key][1], args, device) for key in args.variants}
    built["bare"] = build(VARIANTS["vanilla"][1], args, device)
    steps = {name: (bare_step if name == "bare" else loop_step) for name in built}
    for name, parts in built.items():            # warm-up
        steps[name](*parts)
    rates = {name: [] for name in built}
    for _ in range(args.blocks):
        for name, parts in built.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name](*parts)
            sync(device)
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    return rates


def precision_comparison(args, device, count: int = 10) -> dict[str, tuple[float, list[float]]]:
    """``--compare_bf16``: seconds per step (after two warm-up steps) and the loss of every step, for the ConR + FDS
    step in float32 and under bf16 autocast, from the same initial model and batch."""
    results = {}
    for name, dtype in (("float32", None), ("bf16", torch.bfloat16)):
        parts = build(BF16_VARIANT, args, device)
        losses = []
        for i in range(count + 2):
            if i == 2:
                sync(device)
                start = time.perf_counter()
            losses.append(step(*parts, autocast_dtype=dtype).item())
        sync(device)
        results[name] = ((time.perf_counter() - start) / count, losses)
    return results


def loading(args) -> dict[str, float]:
    """Images per second of one loader process: JPEG decoding vs the HDF5 pack, same augmentation."""
    from common.age import AgeDataset, PackReader, read_split_csv
    from common.tools import pack
    from common.synthetic import write_synthetic
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_synthetic("agedb", data, n=600, img_size=args.stored_size, seed=0)
        pack.write_pack(data, "agedb", args.img_size)
        frame = read_split_csv(data / "agedb.csv", 120)
        paths = frame.loc[frame["split"] == "train", "path"].tolist()
        sets = {"JPEG files": AgeDataset(frame, data, "train", args.img_size),
                "HDF5 pack": AgeDataset(frame, data, "train", args.img_size,
                                        pack=PackReader(data, "agedb", args.img_size, paths))}
        rates = {}
        for name, dataset in sets.items():
            dataset[0]
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset[i]
            rates[name] = len(dataset) / (time.perf_counter() - start)
        return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet50", choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--width", type=int, default=16, help="first-stage channels when the images are small")
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant and block")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="KEY",
                        help=f"the variants to time (vanilla always); default: all of {', '.join(VARIANTS)}")
    parser.add_argument("--loading", action="store_true", help="also time JPEG decoding against the HDF5 pack")
    parser.add_argument("--compare_bf16", action="store_true",
                        help="instead of the table: the ConR + FDS step in float32 and under bf16 autocast (12 steps)")
    parser.add_argument("--stored_size", type=int, default=250, help="--loading: size of the synthetic JPEG files")
    args = parser.parse_args(argv)
    args.variants = ["vanilla"] + [name for name in args.variants if name != "vanilla"]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model}, {args.img_size} px, "
          f"batch {args.batch_size}" + ("" if args.compare_bf16 else
                                        f"; median of {args.blocks} blocks of {args.steps} steps"))
    if args.compare_bf16:
        (fp32, fp32_losses), (bf16, bf16_losses) = precision_comparison(args, device).values()
        print(f"float32 {fp32 * 1000:.1f} ms/step, bf16 {bf16 * 1000:.1f} ms/step, speed-up {fp32 / bf16:.2f}x")
        finite = all(math.isfinite(value) for value in bf16_losses)
        print(f"loss after {len(bf16_losses)} steps: float32 {fp32_losses[-1]:.4f}, bf16 {bf16_losses[-1]:.4f} "
              f"(finite: {finite})")
        return
    rates = training_steps(args, device)
    base, bare = statistics.median(rates["vanilla"]), statistics.median(rates.pop("bare"))
    print(f"\n| variant | batch images/s (B = {args.batch_size}) | step time vs vanilla | vs the bare loop |")
    print("|---|---:|---:|---:|")
    print(f"| bare loop (plain PyTorch, vanilla's model and batch) | {bare:.1f} | {base / bare:.2f}× | 1.00× |")
    for key, values in rates.items():
        rate = statistics.median(values)
        print(f"| {VARIANTS[key][0]} | {rate:.1f} | {base / rate:.2f}× | {bare / rate:.2f}× |")
    if args.loading:
        speeds = loading(args)
        print("\n| loader (one process) | images/s |")
        print("|---|---:|")
        for variant, rate in speeds.items():
            print(f"| {variant} | {rate:.0f} |")
        print(f"\nHDF5 / JPEG: {speeds['HDF5 pack'] / speeds['JPEG files']:.2f}×")


if __name__ == "__main__":
    main()
