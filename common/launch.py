"""The command-line glue of every ``train.py``: parsed flags → a resumed or evaluated run's flags → a
:class:`~common.trainer.Trainer` of the benchmark's task, and one sentence for a run that cannot go on.

``python train.py ...`` ends with ``run(args, TheTask)``. The trainer itself knows no flag: this module turns
the flags into its :class:`~common.trainer.TrainerConfig`, applies the rules of ``--resume`` and ``--evaluate``
(:func:`common.cli.restore_flags`: what a continued run keeps, what an evaluated checkpoint keeps) and refuses a
checkpoint of another benchmark.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from common import checkpointing, cli, distributed, methods, runtime
from common.errors import RunError
from common.trainer import Task, Trainer, TrainerConfig


def config_from_args(args, run_dir, branch: bool = False) -> TrainerConfig:
    """The :class:`~common.trainer.TrainerConfig` a parsed ``train.py`` command line asks for."""
    device = runtime.resolve_device(args.device, args.gpu)
    cpus = os.cpu_count() or 1
    if args.workers > cpus:
        # The references' 32 (8 on NYUD2) on a laptop: PyTorch warns on every loader and the workers only
        # contend. The run records the number it used.
        print(f"note: --workers {args.workers} is more than this machine's {cpus} CPUs; using {cpus} (pass "
              "--workers to choose).")
        args.workers = cpus
    get = lambda flag, default: getattr(args, flag, default)   # noqa: E731 (flags a benchmark may lack)
    return TrainerConfig(run_dir=run_dir, epochs=args.epoch, batch_size=args.batch_size, workers=args.workers,
                         seed=args.seed, device=device, amp_dtype=amp_dtype_of(args.amp, device),
                         val_interval=args.val_interval, patience=args.patience, max_vals=args.max_vals,
                         grad_clip=args.grad_clip, print_freq=args.print_freq, resume=args.resume or None,
                         overwrite=args.overwrite, flags=vars(args), sync_bn=get("sync_bn", False),
                         channels_last=get("channels_last", False), compile_model=get("compile", False),
                         persistent_workers=get("persistent_workers", False), prefetch=get("prefetch", 2),
                         branch=branch, lr=args.lr, patience_rule=get("patience_rule", "best"),
                         save_every_minutes=get("save_every_minutes", 30.0),
                         full_tables=get("full_tables", False), step_rule=methods.step_rule(args))


def amp_dtype_of(amp, device: torch.device):
    """``--amp`` → the autocast dtype: none → None, bf16/fp16 as named, auto (or a checkpoint's old ``True``) →
    fp16 on CUDA and bf16 on CPU."""
    if amp in (None, False, "none"):
        return None
    if amp in (True, "auto"):
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def run(args, task_class: type[Task]) -> dict:
    """Train (or with ``--evaluate`` test) from parsed flags: the shared ``main`` of every ``train.py``.

    ``task_class(args)`` builds the benchmark's :class:`Task`; its ``run_name(args)`` names a new run folder under
    ``--store_root`` unless ``--store_name`` is given, its ``model_flags`` and ``eval_defaults``, with the
    methods', say what an evaluated or resumed checkpoint keeps (:func:`common.cli.restore_flags`). ``--resume``
    continues in the checkpoint's folder, or, with a ``--store_name`` naming another folder, starts a new run
    there from the checkpoint. A checkpoint of another benchmark is refused. A :class:`RunError` ends the process
    with its one sentence (exit status 1), which is also the last line of the run's ``training.log``.
    """
    given, names = getattr(args, "given_flags", None), getattr(args, "option_names", None)
    for attribute in ("given_flags", "option_names"):      # properties of this command line, not of the run
        if hasattr(args, attribute):
            delattr(args, attribute)
    trainer = None
    try:
        checkpoint = checkpointing.load_checkpoint(args.resume) if args.resume else {}
        check_benchmark(checkpoint, args.resume, task_class.benchmark)
        checkpoint_args = {k: v for k, v in checkpoint.get("args", {}).items()
                           if k not in ("given_flags", "option_names")}
        branch = bool(args.resume) and not args.evaluate and given is not None and "store_name" in given \
            and bool(args.store_name)
        # What a checkpoint keeps: the flags that define the model (the benchmark's and the methods') and the
        # evaluation defaults it was reported with.
        model_flags = tuple(task_class.model_flags) + methods.model_flags()
        eval_defaults = {**task_class.eval_defaults, **methods.eval_defaults()}
        args = cli.restore_flags(args, checkpoint_args, model_flags, eval_defaults, given, names)
        run_dir = Path(args.store_root) / (args.store_name or task_class.run_name(args))
        branch = branch and run_dir.resolve() != Path(args.resume).resolve().parent
        trainer = Trainer(task_class(args), config_from_args(args, run_dir, branch=branch))
        result = trainer.evaluate(args.resume) if args.evaluate else trainer.fit()
        distributed.shutdown()
        return result
    except RunError as error:
        # Raised in a DataLoader worker, the message arrives wrapped in the worker's traceback: keep its sentence.
        sentence = str(error).strip().splitlines()[-1].split("RunError: ", 1)[-1]
        if trainer is not None:
            trainer.log_fatal(sentence)
        raise SystemExit(f"error: {sentence}")


# The benchmark of a checkpoint written before checkpoints named theirs, from the flags only it has.
_BENCHMARK_OF_DATASET = {"agedb": "agedb-dir", "imdb_wiki": "imdb-wiki-dir"}


def check_benchmark(checkpoint: dict, path, benchmark: str) -> None:
    """Refuse a checkpoint that another benchmark's ``train.py`` wrote (a reference checkpoint, without flags,
    passes: its tensors are checked against the model when they load)."""
    if not checkpoint or not benchmark:
        return
    saved = checkpoint.get("args") or {}
    source = checkpoint.get("benchmark") or ("nyud2-dir" if "encoder" in saved else "sts-b-dir" if "d_hid" in saved
                                                       else _BENCHMARK_OF_DATASET.get(saved.get("dataset"), ""))
    if source and source != benchmark:
        raise RunError(f"checkpoint {path} was trained by {source}/train.py, not {benchmark}/train.py; run it there "
                                 f"(cd {source} && python train.py --resume {Path(path).resolve()} ...).")
