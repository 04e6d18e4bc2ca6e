"""A toy regulariser in one file, as a new method is added: its maths, its term and its method entry. The test
``tests/common/test_methods.py`` adds it to the method list inside the test only and trains it on every benchmark.

The maths: ``W · mean_i ‖f_i‖² / D`` over the per-sample features f (N, D) the benchmark's view gives (NYUD2:
each image's flattened map), a feature-norm penalty.
"""
import torch

from common.method import Method, Step, Term, flag


def feature_norm_penalty(features: torch.Tensor) -> torch.Tensor:
    """features: (N, D) → the mean over samples of ‖f‖² / D, a 0-d tensor."""
    return features.float().pow(2).mean()


class FeatureNormTerm(Term):
    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight

    def forward(self, step: Step) -> dict:
        features, _ = step.view.per_sample(step.share(step.out["encoding"]), step.share(step.targets, False))
        return {"toy_reg": self.weight * feature_norm_penalty(features)}


class FeatureNormMethod(Method):
    name = "toy_reg"
    non_negative = ("toy_reg_weight",)

    def add_args(self, parser) -> None:
        g = parser.add_argument_group("toy regulariser (tests)")
        g.add_argument("--toy_reg_weight", type=float, default=0.0, help="W; 0 turns it off")

    def enabled(self, args) -> bool:
        return flag(args, "toy_reg_weight", 0.0) > 0

    def tag(self, args):
        return f"toyreg_{args.toy_reg_weight:g}"

    def term(self, args, data):
        return FeatureNormTerm(args.toy_reg_weight)


METHOD = FeatureNormMethod()
