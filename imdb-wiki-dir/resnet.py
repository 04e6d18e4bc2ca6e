"""The IMDB-WIKI-DIR model: the age ResNet of AgeDB-DIR (``common/models/resnet.py``), from scratch.

ResNet-50 by default; FDS on the pooled 2048-d encoding (buckets 0–99, ``--bucket_start 0``).
"""
from common.models.resnet import ResNetRegressor

encoding_dim = ResNetRegressor.encoding_dim_of


def build_model(arch="resnet50", *, width=64, stem="imagenet", fds=None, projection_dim=None) -> ResNetRegressor:
    return ResNetRegressor(arch, fds=fds, projection_dim=projection_dim, width=width, stem=stem)
