"""SSL objectives and the E-SSL prediction loss; pure functions with thin ``nn.Module`` wrappers."""

from essl.objectives.barlow_twins import BarlowTwinsLoss, barlow_twins_loss, scale_gradient
from essl.objectives.byol import BYOLLoss, byol_loss
from essl.objectives.distributed import all_reduce_sum, gather
from essl.objectives.equivariance import prediction_loss
from essl.objectives.mocov3 import MoCoV3Loss, mocov3_loss
from essl.objectives.simclr import InfoNCELoss, cross_view_ce, info_nce, nt_xent
from essl.objectives.simsiam import SimSiamLoss, negative_cosine, simsiam_loss
from essl.objectives.vicreg import VICRegLoss, covariance_term, variance_term, vicreg_loss, vicreg_terms

__all__ = [
    "BarlowTwinsLoss",
    "barlow_twins_loss",
    "scale_gradient",
    "BYOLLoss",
    "byol_loss",
    "all_reduce_sum",
    "gather",
    "prediction_loss",
    "MoCoV3Loss",
    "mocov3_loss",
    "InfoNCELoss",
    "cross_view_ce",
    "info_nce",
    "nt_xent",
    "SimSiamLoss",
    "negative_cosine",
    "simsiam_loss",
    "VICRegLoss",
    "covariance_term",
    "variance_term",
    "vicreg_loss",
    "vicreg_terms",
]
