"""The command-line glue (common/launch.py): flags become the trainer's configuration (--amp, --workers)."""
import os

import torch


def test_amp_flag_values_and_bf16_training():
    from common import cli
    from common.launch import amp_dtype_of
    parser = cli.Parser("t")
    cli.add_run_args(parser)
    assert [parser.parse_args(argv).amp for argv in ([], ["--amp"], ["--amp", "bf16"], ["--amp", "fp16"])] == \
        ["none", "auto", "bf16", "fp16"]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [amp_dtype_of(v, cpu) for v in ("none", "auto", "bf16", True)] == [None, torch.bfloat16, torch.bfloat16,
                                                                            torch.bfloat16]
    assert (amp_dtype_of("auto", cuda), amp_dtype_of(False, cuda)) == (torch.float16, None)


def test_more_workers_than_cpus_are_capped_and_said(capsys):
    import argparse
    from common.launch import config_from_args
    args = argparse.Namespace(device="cpu", gpu=None, epoch=1, batch_size=4, workers=10_000, seed=0, amp="none",
                              val_interval=0, patience=None, max_vals=None, grad_clip=None, print_freq=1, resume="",
                              overwrite=False, lr=1e-3)
    config = config_from_args(args, "run")
    cpus = os.cpu_count()
    assert config.workers == cpus == args.workers and config.flags["workers"] == cpus
    assert f"--workers 10000 is more than this machine's {cpus} CPUs; using {cpus}" in capsys.readouterr().out
