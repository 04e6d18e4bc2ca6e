"""The AgeDB-DIR network: a ResNet trained from scratch, FDS on the pooled encoding, a ``linear`` head.

The same ResNet serves both age benchmarks (``common/models/resnet.py``); ``--model`` picks resnet18/34/50,
``--width`` and ``--stem cifar`` make it small for CPU demos; with ``--srl``, a projector of ``--embedding_dim``;
``--uvote`` and ``--vir`` replace the linear head (``common/models/heads.py``).
"""
from common.methods import head_options
from common.models.resnet import ResNetRegressor


def build_model(args, fds=None) -> ResNetRegressor:
    """ResNet → encoding (B, E) → [FDS] → ``linear`` (the head) → age (B, 1) in years."""
    return ResNetRegressor(args.model, fds=fds, projection_dim=args.embedding_dim if args.srl else None,
                           width=args.width, stem=args.stem, **head_options(args))
