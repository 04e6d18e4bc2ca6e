"""The DIR losses and regularizers. Plain functions hold the maths; ``nn.Module`` twins hold hyper-parameters."""
from common.losses.regression import (REGRESSION_LOSSES, RegressionLoss, elementwise_loss, weighted_focal_l1_loss,
                                      weighted_focal_mse_loss, weighted_huber_loss, weighted_l1_loss,
                                      weighted_mse_loss)
from common.losses.conr import ConR, ConRDense, conr_dense_loss, conr_loss
from common.losses.ranksim import RankSim, ranksim_loss
from common.losses.balanced_mse import BMCLoss, BNILoss, GAILoss, bmc_loss, bni_loss, gai_loss
from common.losses.srl import SRL, SRLSurrogate, srl_losses, srl_random_points

__all__ = [
    "REGRESSION_LOSSES", "RegressionLoss", "weighted_mse_loss", "weighted_l1_loss", "weighted_focal_mse_loss",
    "weighted_focal_l1_loss", "weighted_huber_loss", "elementwise_loss",
    "ConR", "ConRDense", "conr_loss", "conr_dense_loss",
    "RankSim", "ranksim_loss",
    "BMCLoss", "GAILoss", "BNILoss", "bmc_loss", "gai_loss", "bni_loss",
    "SRL", "SRLSurrogate", "srl_losses", "srl_random_points",
]
from common.losses.rnc import RnC, rnc_loss
from common.losses.uvote import (UVOTELoss, laplace_nll, uvote_exponents, uvote_head_losses, uvote_head_weights,
                                 uvote_loss, uvote_predict, uvote_weight_table)
from common.losses.vir import (VIRLoss, nig_nll, nig_regularizer, vir_loss, vir_nig_params, vir_nig_update,
                               vir_predict)

__all__ += [
    "RnC", "rnc_loss",
    "UVOTELoss", "laplace_nll", "uvote_exponents", "uvote_head_losses", "uvote_head_weights", "uvote_loss",
    "uvote_predict", "uvote_weight_table",
    "VIRLoss", "nig_nll", "nig_regularizer", "vir_loss", "vir_nig_params", "vir_nig_update", "vir_predict",
]
from common.losses.group_dir import (GroupDIRLoss, group_contrastive_loss, group_index, group_predict,
                                     group_regression_loss, soft_label_loss, soft_labels)

__all__ += [
    "GroupDIRLoss", "group_contrastive_loss", "group_index", "group_predict", "group_regression_loss",
    "soft_label_loss", "soft_labels",
]
# The function dist_loss stays in its module: the name common.losses.dist_loss is the module (the method list's).
from common.losses.dist_loss import DistLoss, dist_term, pseudo_label_counts, pseudo_labels

__all__ += ["DistLoss", "dist_term", "pseudo_label_counts", "pseudo_labels"]
