"""BDIRNet: robust image deblurring via blur distilling and information comparison in latent space.

Public API::

    from bdirnet import BDIRNet, ModelConfig
    from bdirnet.degrade import FAMILIES, degrade
    from bdirnet.metrics import psnr, ssim
"""

from bdirnet.config import ModelConfig
from bdirnet.model import BDIRNet

__all__ = ["BDIRNet", "ModelConfig"]
__version__ = "0.1.0"
