"""Monocular depth heads on any backbone: FastDepth (metric depth) and MiDaS v2.1 small
(relative inverse depth).

- ``fastdepth``: FastDepth's ``MobileNetSkipAdd`` (Wofk et al., ICRA 2019; dwofk/fast-depth
  ``models.py``) with its NNConv5 depthwise decoder. Five stages, each depthwise 5x5 (BN, ReLU)
  -> 1x1 (BN, ReLU) -> nearest x2; the /8, /4 and /2 maps are added after stages 2, 3 and 4;
  a final 1x1 conv to one channel with BN and ReLU. On ``mobilenet_v1_100`` the widths are
  the reference's 1024 -> 512 -> 256 -> 128 -> 64 -> 32 and the model has its parameters
  exactly (encoder 3,206,976 + decoder 753,954). On other backbones the five widths halve
  from the deepest tap's channels (``decoder_channels`` overrides them), and a skip whose
  channels differ from the decoder's at that point is projected by a 1x1 conv + BN. The
  taps are ``feature_info`` indices 0, 1, 2 and 4 (/2, /4, /8, /32); index 4 is the last
  block's map for MobileNetV2 and EfficientNet (320 channels at 1.0, as timm's
  ``features_only``), not their 1280-channel head conv, and the head conv for MobileNetV3.
- ``midas_small``: the decoder of MiDaS v2.1 small (isl-org/MiDaS ``midas_net_custom.py``,
  ``blocks_custom.py``): 3x3 projections of the /4, /8, /16, /32 maps to ``features`` x (1, 2,
  4, 8) channels, four feature-fusion blocks (residual conv units with ReLU and no BN,
  bilinear x2 with align_corners, 1x1 conv halving the channels) and the output head
  3x3 -> bilinear x2 -> 3x3 -> ReLU -> 1x1 -> ReLU. Its submodule names are MiDaS's
  (``scratch.layer1_rn``, ``scratch.refinenet4.resConfUnit2.conv1`` ...). One departure:
  MiDaS builds a first residual unit in ``refinenet4`` that its forward never calls (the
  deepest block has no skip); it is left out here (4,719,616 parameters at features 64), so
  every parameter gets a gradient (DistributedDataParallel needs no
  ``find_unused_parameters``) and the parameter count is what the model computes with. The
  last 1x1 conv starts with non-negative weights and bias (see ``MidasSmall``); the other
  layers keep PyTorch's default init, as MiDaS does.

FastDepth's decoder is initialised by ``network.init_weights`` like the backbones: the
reference's normal(0, sqrt(2 / (k * k * out))) for every conv but the depthwise ones, whose
fan-out is k * k here (k * k * channels in the reference); a BatchNorm follows each of them.

Both take ``"resnet18"`` (torchvision's ResNet-18, see ``encoders``) as well as any registered
backbone, return ``B x 1 x H x W`` at the input's size (resized bilinearly when the decoder
lands elsewhere, e.g. for inputs not divisible by 32) and upsample each decoder map to the
size of the skip it meets, which equals the reference's x2 whenever the input is divisible
by 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import ConvNormAct, NormConfig
from ..network import init_weights
from ..rounding import make_divisible
from .encoders import (EXTRA_ENCODERS, backbone_option_names, check_not_head_chosen,
                       create_encoder)
from .registry import HeadEntry, register_head


@torch.fx.wrap
def _match_size(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` resized bilinearly to ``x``'s height and width, when they differ (one node
    under FX tracing, which cannot branch on shapes; the cost model traces with FX)."""
    if y.shape[-2:] == x.shape[-2:]:
        return y
    return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FastDepth(nn.Module):
    """FastDepth's encoder-decoder on ``backbone`` (a ``features_only`` model returning the
    /2, /4, /8 and /32 maps). See the module docstring."""

    task = "depth"
    depth_kind = "metric"

    def __init__(self, backbone: nn.Module, decoder_channels: Sequence[int],
                 norm: NormConfig = NormConfig(), config: dict | None = None,
                 preprocess: dict | None = None):
        super().__init__()
        self.backbone = backbone
        skip2, skip4, skip8, deep = backbone.feature_info.channels()
        chans = [deep, *decoder_channels]
        self.decoder = nn.Sequential(*[
            nn.Sequential(ConvNormAct(c_in, c_in, 5, groups=c_in, norm=norm),
                          ConvNormAct(c_in, c_out, 1, norm=norm))
            for c_in, c_out in zip(chans, chans[1:])])
        # the skips join after stages 2, 3 and 4 (indices 1-3): the /8, /4 and /2 maps
        self.skip_proj = nn.ModuleList(
            nn.Identity() if c_skip == c_dec else ConvNormAct(c_skip, c_dec, 1, act=None,
                                                              norm=norm)
            for c_skip, c_dec in zip((skip8, skip4, skip2), decoder_channels[1:4]))
        self.final = ConvNormAct(decoder_channels[4], 1, 1, norm=norm)
        for part in (self.decoder, self.skip_proj, self.final):
            init_weights(part)
        self.config = dict(config or {})
        self.preprocess = dict(preprocess or {})

    @torch.no_grad()
    def init_output(self, depth: float) -> None:
        """Start the predictions at ``depth`` metres (e.g. the training set's mean): the
        output BatchNorm's bias, which carries the depth scale (its input is normalised),
        is set to it. Without this the bias climbs from 0 by about one learning rate per
        step (docs/depth.md, Limits)."""
        self.final.bn.bias.fill_(float(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2, x4, x8, y = self.backbone(x)
        skips = (x8, x4, x2)
        for i, stage in enumerate(self.decoder):
            y = stage(y)
            if 1 <= i <= 3:
                skip = skips[i - 1]
                y = (F.interpolate(y, size=skip.shape[-2:], mode="nearest")
                     + self.skip_proj[i - 1](skip))
            else:
                y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return _match_size(self.final(y), x)


class ResidualConvUnit(nn.Module):
    """MiDaS's ``ResidualConvUnit_custom`` without BN: x + conv(relu(conv(relu(x))))."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.act = nn.ReLU()       # not in place: x is read again by the residual add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class FeatureFusionBlock(nn.Module):
    """MiDaS's ``FeatureFusionBlock_custom``: ``x (+ RCU1(skip))`` -> RCU2 -> bilinear
    upsampling (align_corners) -> 1x1 conv with bias to ``features // 2`` when ``expand``.
    ``has_skip=False`` (the deepest block) builds no RCU1."""

    def __init__(self, features: int, expand: bool, has_skip: bool = True,
                 align_corners: bool = True):
        super().__init__()
        self.align_corners = align_corners
        self.out_conv = nn.Conv2d(features, features // 2 if expand else features, 1, bias=True)
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: torch.Size | None = None) -> torch.Tensor:
        """``size``: where to upsample to (the next skip's size); None doubles."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, size=size, scale_factor=None if size is not None else 2.0,
                          mode="bilinear", align_corners=self.align_corners)
        return self.out_conv(x)


class MidasSmall(nn.Module):
    """MiDaS v2.1 small's decoder on ``backbone`` (a ``features_only`` model returning the
    /4, /8, /16 and /32 maps). Output: relative inverse depth (disparity up to scale and
    shift), non-negative when ``non_negative``. See the module docstring."""

    task = "depth"
    depth_kind = "inverse_relative"

    def __init__(self, backbone: nn.Module, features: int = 64, non_negative: bool = True,
                 config: dict | None = None, preprocess: dict | None = None):
        super().__init__()
        self.backbone = backbone
        widths = (features, 2 * features, 4 * features, 8 * features)
        self.scratch = nn.Module()
        for k, (c_in, c_out) in enumerate(zip(backbone.feature_info.channels(), widths), 1):
            setattr(self.scratch, f"layer{k}_rn", nn.Conv2d(c_in, c_out, 3, padding=1,
                                                            bias=False))
        self.scratch.refinenet4 = FeatureFusionBlock(widths[3], expand=True, has_skip=False)
        self.scratch.refinenet3 = FeatureFusionBlock(widths[2], expand=True)
        self.scratch.refinenet2 = FeatureFusionBlock(widths[1], expand=True)
        self.scratch.refinenet1 = FeatureFusionBlock(widths[0], expand=False)
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU() if non_negative else nn.Identity())
        if non_negative:
            # PyTorch's default init (the reference's) leaves the last conv's output negative
            # at every pixel for some seeds, so the final ReLU passes no gradient and training
            # from scratch never starts; non-negative weights and bias on non-negative inputs
            # keep every output pixel alive at the start
            last = self.scratch.output_conv[4]
            with torch.no_grad():
                last.weight.abs_()
                last.bias.abs_()
        self.config = dict(config or {})
        self.preprocess = dict(preprocess or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scratch
        l1, l2, l3, l4 = self.backbone(x)
        l1, l2, l3, l4 = s.layer1_rn(l1), s.layer2_rn(l2), s.layer3_rn(l3), s.layer4_rn(l4)
        y = s.refinenet4(l4, size=l3.shape[-2:])
        y = s.refinenet3(y, l3, size=l2.shape[-2:])
        y = s.refinenet2(y, l2, size=l1.shape[-2:])
        y = s.refinenet1(y, l1)
        return _match_size(s.output_conv(y), x)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _split_options(head: str, backbone: str, options: dict, own: tuple[str, ...]):
    """(head options, backbone options), with a clear error for any other name."""
    check_not_head_chosen(options)
    allowed = backbone_option_names(backbone)
    unknown = sorted(set(options) - set(own) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for {head} on {backbone}; it "
                        f"takes {', '.join(own)} (the head) and "
                        f"{', '.join(k for k in allowed if k not in own)} (the "
                        f"backbone)")
    return ({k: v for k, v in options.items() if k in own},
            {k: v for k, v in options.items() if k not in own})


def _encoder(cls, head: str, backbone: str, out_indices: tuple[int, ...], resolution: int,
             backbone_options: dict) -> tuple[nn.Module, dict, dict]:
    """The encoder, the model's config (its ``options`` still to fill) and preprocessing.

    The input size defaults to the head's reference resolution (``resolution``) rather than
    the backbone's classification one. Preprocessing is the backbone's (mean, std,
    interpolation) without the classifiers' centre-crop margin: a dense target is resized
    with its image, pixel for pixel."""
    encoder = create_encoder(backbone, out_indices,
                             {"resolution": resolution, **backbone_options})
    res = encoder.preprocess["resolution"]
    preprocess = dict(encoder.preprocess, resolution=res, resize=res, crop_pct=1.0)
    config = {"name": f"{head}_{backbone}", "head": head, "backbone": backbone,
              "task": cls.task, "depth_kind": cls.depth_kind, "resolution": res,
              "in_chans": encoder.config.get("in_chans", 3),
              "backbone_config": dict(encoder.config)}
    return encoder, config, preprocess


FASTDEPTH_OPTIONS = ("decoder_channels",)


def build_fastdepth(backbone: str, **options) -> FastDepth:
    """``fastdepth`` on ``backbone``. Options: ``decoder_channels`` (the five stage widths;
    default: the deepest tap's channels halved at each stage, rounded to a multiple of 8 as
    MobileNetV2 rounds widths: 512, 256, 128, 64, 32 on MobileNetV1 1.0) and the backbone's
    (``width_mult``, ``bn_momentum``, ``resolution`` ...; ``bn_eps`` and ``bn_momentum`` set
    the decoder's BatchNorm too; its eps defaults to PyTorch's 1e-5, as the reference's)."""
    own, bb = _split_options("fastdepth", backbone, options, FASTDEPTH_OPTIONS)
    channels = own.get("decoder_channels")
    if channels is not None and (
            isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence)
            or len(channels) != 5 or not all(_is_int(c) and c > 0 for c in channels)):
        raise ValueError(f"decoder_channels={channels!r} is not allowed: give five positive "
                         f"integers, one per decoder stage (e.g. the reference's "
                         f"[512, 256, 128, 64, 32])")
    encoder, config, preprocess = _encoder(FastDepth, "fastdepth", backbone, (0, 1, 2, 4), 224,
                                           bb)
    if channels is None:
        deep = encoder.feature_info[-1].channels
        channels = [make_divisible(deep / 2 ** k) for k in range(1, 6)]
    channels = list(channels)
    config["options"] = dict(options, decoder_channels=channels)
    norm = NormConfig(eps=bb.get("bn_eps", 1e-5), momentum=bb.get("bn_momentum", 0.1))
    return FastDepth(encoder, channels, norm, config, preprocess)


MIDAS_OPTIONS = ("features", "non_negative")


def build_midas_small(backbone: str, **options) -> MidasSmall:
    """``midas_small`` on ``backbone``. Options: ``features`` (64: the decoder's widths are
    ``features`` x (1, 2, 4, 8) from /4 to /32), ``non_negative`` (True: a final ReLU) and the
    backbone's. The default input size is MiDaS small's 256."""
    own, bb = _split_options("midas_small", backbone, options, MIDAS_OPTIONS)
    features = own.get("features", 64)
    if not _is_int(features) or features < 2:
        raise ValueError(f"features={features!r} is not allowed: features must be an integer "
                         f">= 2 (MiDaS small: 64)")
    non_negative = own.get("non_negative", True)
    if not isinstance(non_negative, bool):
        raise ValueError(f"non_negative={non_negative!r} is not allowed: use True or False")
    encoder, config, preprocess = _encoder(MidasSmall, "midas_small", backbone, (1, 2, 3, 4),
                                           256, bb)
    config["options"] = dict(options, features=features, non_negative=non_negative)
    return MidasSmall(encoder, features, non_negative, config, preprocess)


register_head(HeadEntry("fastdepth", "depth", build_fastdepth, "mobilenet_v1_100", listed=(),
                        extra_backbones=EXTRA_ENCODERS))
register_head(HeadEntry("midas_small", "depth", build_midas_small, "efficientnet_lite3",
                        listed=(), extra_backbones=EXTRA_ENCODERS))

__all__ = ["FastDepth", "FeatureFusionBlock", "MidasSmall", "ResidualConvUnit",
           "build_fastdepth", "build_midas_small"]
