"""RRT, two-stage training (Kang et al., *Decoupling representation and classifier*, ICLR 2020; DIR's RRT): a
trained model's trunk is loaded and frozen, and only its last layer is retrained, usually on a balanced
objective. The loading and freezing are :func:`common.checkpointing.load_pretrained_trunk` and
:func:`common.checkpointing.train_only`; this file holds the method's command line."""
from __future__ import annotations

import sys

from common.method import Method, flag


class RRTMethod(Method):
    """``--retrain_fc --pretrained CKPT``."""

    name = "rrt"
    switch = "--retrain_fc"
    independent = ("pretrained",)     # a new run starts from these weights, RRT or not

    def add_args(self, parser) -> None:
        g = parser.add_argument_group("RRT, two-stage training (Kang et al., ICLR 2020)")
        g.add_argument("--retrain_fc", action="store_true", help="RRT: retrain only the last layer of --pretrained")
        g.add_argument("--pretrained", default="", help="checkpoint whose trunk initialises RRT")

    def enabled(self, args) -> bool:
        return bool(flag(args, "retrain_fc"))

    def check(self, parser, args) -> None:
        if flag(args, "retrain_fc") and not args.pretrained:
            parser.error("--retrain_fc retrains the last layer of a trained model: pass it with --pretrained CKPT.")
        # BSAM's own weights (--bsam_weights raw or sqrt_inv) re-weight the loss as --reweight does.
        bsam_weights = flag(args, "bsam") and flag(args, "bsam_weights", "reweight") != "reweight"
        if flag(args, "retrain_fc") and flag(args, "reweight", "none") == "none" and not flag(args, "bmse") \
                and flag(args, "rnc_stage", "none") != "linear" and not bsam_weights:
            # Allowed, as the NYUD2 and STS-B references allow it (the age ones assert a --reweight): said, not
            # refused.
            print("warning: --retrain_fc without --reweight or --bmse retrains on the unweighted loss, which does "
                  "not rebalance the head (RRT is meant for a balanced objective).", file=sys.stderr)
        if flag(args, "resume") and flag(args, "pretrained"):
            parser.error("--resume continues a run and --pretrained starts a new one: pass only one of them.")

    def prepare_model(self, args, model, spec, log) -> None:
        """``--pretrained``: every tensor but the head's (``spec.head``) from the checkpoint; ``--retrain_fc``:
        only ``spec.retrained`` trains (RnC's linear stage: the frozen part also computes as in evaluation)."""
        from common import checkpointing
        if flag(args, "pretrained"):
            checkpointing.load_pretrained_trunk(model, args.pretrained, part=spec.part, fits=spec.fits,
                                                flags=spec.flags, log=log, head=spec.head)
        if flag(args, "retrain_fc"):
            checkpointing.train_only(model, tuple(spec.retrained or spec.head),
                                     frozen_in_eval=flag(args, "rnc_stage", "none") == "linear")

    def tag(self, args):
        # RnC's linear stage is RRT on an RnC encoder; its tag says so.
        return "rrt" if flag(args, "rnc_stage", "none") != "linear" else None


METHOD = RRTMethod()
