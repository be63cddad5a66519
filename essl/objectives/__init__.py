"""SSL objectives and the E-SSL prediction loss; pure functions with thin ``nn.Module`` wrappers."""

from essl.objectives.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from essl.objectives.distributed import all_reduce_sum, gather
from essl.objectives.equivariance import prediction_loss
from essl.objectives.simclr import InfoNCELoss, info_nce, nt_xent
from essl.objectives.simsiam import SimSiamLoss, negative_cosine, simsiam_loss

__all__ = ["BarlowTwinsLoss", "barlow_twins_loss", "all_reduce_sum", "gather", "prediction_loss", "InfoNCELoss",
           "info_nce", "nt_xent", "SimSiamLoss", "negative_cosine", "simsiam_loss"]
