"""The IMDB-WIKI-DIR network: the age ResNet of AgeDB-DIR (``common/models/resnet.py``), from scratch.

ResNet-50 by default; FDS on the pooled 2048-d encoding (buckets 0–99, ``--bucket_start 0``); ``--uvote`` (3
heads by default here) and ``--vir`` replace the linear head (``common/models/heads.py``).
"""
from common.methods import head_options
from common.models.resnet import ResNetRegressor


def build_model(args, fds=None) -> ResNetRegressor:
    projection = args.embedding_dim if args.srl else None      # SRL's projector
    return ResNetRegressor(args.model, fds=fds, projection_dim=projection, width=args.width, stem=args.stem,
                           **head_options(args))
