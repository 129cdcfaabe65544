"""Building blocks shared by every architecture."""

from .activations import ACTIVATIONS, canonical_activation, make_activation
from .blocks import (BlockSpec, DepthwiseSeparable, FusedMBConv, InvertedResidual,
                     UniversalInvertedBottleneck, make_block)
from .conv_norm_act import ConvNormAct, NormConfig, PooledConvNormAct
from .drop_path import DropPath
from .squeeze_excite import SqueezeExcite

__all__ = ["ACTIVATIONS", "BlockSpec", "ConvNormAct", "DepthwiseSeparable", "DropPath",
           "FusedMBConv", "InvertedResidual", "NormConfig", "PooledConvNormAct",
           "SqueezeExcite", "UniversalInvertedBottleneck", "canonical_activation",
           "make_activation", "make_block"]
