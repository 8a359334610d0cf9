"""Registration of every hf_ssl config, model and image processor with the `transformers` Auto classes."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)

from .backbones import SSLResNetConfig, SSLResNetModel, SSLViTConfig, SSLViTModel
from .modeling.dino import DinoConfig, DinoForImageClassification, DinoForPreTraining, DinoModel
from .modeling.simclr import SimCLRConfig, SimCLRForImageClassification, SimCLRForPreTraining, SimCLRModel
from .modeling.moco import MoCoConfig, MoCoForImageClassification, MoCoForPreTraining, MoCoModel
from .modeling.mocov3 import MoCoV3Config, MoCoV3ForImageClassification, MoCoV3ForPreTraining, MoCoV3Model
from .modeling.byol import BYOLConfig, BYOLForImageClassification, BYOLForPreTraining, BYOLModel
from .modeling.simsiam import SimSiamConfig, SimSiamForImageClassification, SimSiamForPreTraining, SimSiamModel
from .modeling.nnclr import NNCLRConfig, NNCLRForImageClassification, NNCLRForPreTraining, NNCLRModel
from .modeling.swav import SwAVConfig, SwAVForImageClassification, SwAVForPreTraining, SwAVModel
from .modeling.barlow_twins import (
    BarlowTwinsConfig,
    BarlowTwinsForImageClassification,
    BarlowTwinsForPreTraining,
    BarlowTwinsModel,
)
from .modeling.vicreg import VICRegConfig, VICRegForImageClassification, VICRegForPreTraining, VICRegModel
from .modeling.supcon import SupConConfig, SupConForImageClassification, SupConForPreTraining, SupConModel
from .modeling.wmse import WMSEConfig, WMSEForImageClassification, WMSEForPreTraining, WMSEModel
from .modeling.deepclusterv2 import (
    DeepClusterV2Config,
    DeepClusterV2ForImageClassification,
    DeepClusterV2ForPreTraining,
    DeepClusterV2Model,
)
from .modeling.mae import MaeConfig, MaeForImageClassification, MaeForPreTraining, MaeModel
from .modeling.simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMModel
from .modeling.maskfeat import MaskFeatConfig, MaskFeatForImageClassification, MaskFeatForPreTraining, MaskFeatModel
from .modeling.beit_ssl import (
    BeitSSLConfig,
    BeitSSLForImageClassification,
    BeitSSLForPreTraining,
    BeitSSLModel,
    KMeansPatchTokenizer,
    KMeansTokenizerConfig,
)
from .modeling.ibot import IBOTConfig, IBOTForImageClassification, IBOTForPreTraining, IBOTModel
from .modeling.dinov2_ssl import Dinov2SSLConfig, Dinov2SSLForImageClassification, Dinov2SSLForPreTraining, Dinov2SSLModel
from .modeling.distill import DistillConfig, DistillForImageClassification, DistillForPreTraining, DistillModel
from .modeling.ssl_ijepa import IJepaSSLConfig, IJepaSSLForImageClassification, IJepaSSLForPreTraining, IJepaSSLModel
from .modeling.msn import MSNConfig, MSNForImageClassification, MSNForPreTraining, MSNModel
from .modeling.data2vec_ssl import (
    Data2VecSSLConfig,
    Data2VecSSLForImageClassification,
    Data2VecSSLForPreTraining,
    Data2VecSSLModel,
)
from .processing import SSLImageProcessor, SSLImageProcessorPil

# (config, feature model, classification model or None, pretraining model or None)
MODELS = [
    (SSLViTConfig, SSLViTModel, None, None),
    (SSLResNetConfig, SSLResNetModel, None, None),
    (DinoConfig, DinoModel, DinoForImageClassification, DinoForPreTraining),
    (SimCLRConfig, SimCLRModel, SimCLRForImageClassification, SimCLRForPreTraining),
    (MoCoConfig, MoCoModel, MoCoForImageClassification, MoCoForPreTraining),
    (MoCoV3Config, MoCoV3Model, MoCoV3ForImageClassification, MoCoV3ForPreTraining),
    (BYOLConfig, BYOLModel, BYOLForImageClassification, BYOLForPreTraining),
    (SimSiamConfig, SimSiamModel, SimSiamForImageClassification, SimSiamForPreTraining),
    (NNCLRConfig, NNCLRModel, NNCLRForImageClassification, NNCLRForPreTraining),
    (SwAVConfig, SwAVModel, SwAVForImageClassification, SwAVForPreTraining),
    (BarlowTwinsConfig, BarlowTwinsModel, BarlowTwinsForImageClassification, BarlowTwinsForPreTraining),
    (VICRegConfig, VICRegModel, VICRegForImageClassification, VICRegForPreTraining),
    (SupConConfig, SupConModel, SupConForImageClassification, SupConForPreTraining),
    (WMSEConfig, WMSEModel, WMSEForImageClassification, WMSEForPreTraining),
    (DeepClusterV2Config, DeepClusterV2Model, DeepClusterV2ForImageClassification, DeepClusterV2ForPreTraining),
    (MaeConfig, MaeModel, MaeForImageClassification, MaeForPreTraining),
    (SimMIMConfig, SimMIMModel, SimMIMForImageClassification, SimMIMForPreTraining),
    (MaskFeatConfig, MaskFeatModel, MaskFeatForImageClassification, MaskFeatForPreTraining),
    (BeitSSLConfig, BeitSSLModel, BeitSSLForImageClassification, BeitSSLForPreTraining),
    (KMeansTokenizerConfig, KMeansPatchTokenizer, None, None),
    (IBOTConfig, IBOTModel, IBOTForImageClassification, IBOTForPreTraining),
    (Dinov2SSLConfig, Dinov2SSLModel, Dinov2SSLForImageClassification, Dinov2SSLForPreTraining),
    (DistillConfig, DistillModel, DistillForImageClassification, DistillForPreTraining),
    (IJepaSSLConfig, IJepaSSLModel, IJepaSSLForImageClassification, IJepaSSLForPreTraining),
    (MSNConfig, MSNModel, MSNForImageClassification, MSNForPreTraining),
    (Data2VecSSLConfig, Data2VecSSLModel, Data2VecSSLForImageClassification, Data2VecSSLForPreTraining),
]


def register_auto_classes() -> None:
    """Make the Auto classes (config, models, image processors) know our model types (idempotent)."""
    image_processors = {"torchvision": SSLImageProcessor, "pil": SSLImageProcessorPil}
    for config_class, model_class, classification_class, pretraining_class in MODELS:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoImageProcessor.register(config_class, image_processor_classes=image_processors, exist_ok=True)
        if classification_class is not None:
            AutoModelForImageClassification.register(config_class, classification_class, exist_ok=True)
        if pretraining_class is not None:
            AutoModelForPreTraining.register(config_class, pretraining_class, exist_ok=True)
