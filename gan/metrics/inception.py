"""The FID Inception-v3: the network behind published FID, KID and IS figures, from a local weights file.

Its modules and parameters carry the names of pytorch-fid's `fid_inception_v3()` (torchvision's Inception3
with aux_logits=False and 1008 classes, its blocks patched as FIDInceptionA/C/E_1/E_2), so pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` (a plain state dict, ported from TensorFlow's 2015-12-05 graph)
loads with `load_state_dict(strict=True)`. Nothing is downloaded. It differs from torchvision's Inception in
the pooling branches, as TensorFlow's graph does: the average pools leave the zero padding out of the mean,
and the last block (Mixed_7c) max-pools.

Preprocessing follows pytorch-fid: images in [0, 1], greyscale repeated to three channels, resized to
299 x 299 by `F.interpolate(mode="bilinear", align_corners=False)`, then scaled to [-1, 1]. clean-fid resizes
with PIL's bicubic filter and torch-fidelity with its own TensorFlow-1-style bilinear, so FIDs are comparable
only within one protocol (which is why the extractor's key names it: PREPROCESSING).
"""

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gan.metrics.classifier import to_float
from gan.saved import load_tensors

FEATURE_DIM = 2048  # pool3, the features FID and KID read
NUM_CLASSES = 1008  # the 2015 graph's softmax: 1000 ImageNet classes and 8 unused ones
INPUT_SIZE = 299
PREPROCESSING = "bilinear299"  # pytorch-fid's resize; part of the extractor's key


class WeightsError(ValueError):
    """The weights file is not the FID Inception's state dict."""


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (TensorFlow's eps 0.001) and ReLU: torchvision's BasicConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], **conv: object):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def chain(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    """x through the layers in turn."""
    for layer in layers:
        x = layer(x)
    return x


def tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, whose border means leave out the zero padding, as TensorFlow's do."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def tf_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 max pool, stride 1: the FID graph's last block pools so (pytorch-fid's FIDInceptionE_2)."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            chain(x, self.branch5x5_1, self.branch5x5_2),
            chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(tf_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3 and max-pool branches -> 480 + in_channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1) -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5),
            self.branch_pool(tf_avg_pool(x)),
        ], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3, 7x7-then-strided-3x3 and max-pool branches -> 512 + in_channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            chain(x, self.branch3x3_1, self.branch3x3_2),
            chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionE(nn.Module):
    """8x8 block whose 3x3 branches split into parallel 1x3 and 3x1 convolutions -> 2048 channels.
    `pool` is the pooled branch's pool: tf_avg_pool in Mixed_7b, tf_max_pool in Mixed_7c."""

    def __init__(self, in_channels: int, pool: Callable[[torch.Tensor], torch.Tensor] = tf_avg_pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3dbl = chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl),
            self.branch_pool(self.pool(x)),
        ], 1)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] (or uint8), C = 1 or 3 -> [N, 3, 299, 299] in [-1, 1], as pytorch-fid feeds its network."""
    x = to_float(images)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # greyscale as RGB, as PIL's convert("RGB") does
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


class FIDInceptionV3(nn.Module):
    """`features` gives the 2048-d pool3 features FID reads; `head` the logits IS reads; `forward` fc's logits."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool=tf_avg_pool)
        self.Mixed_7c = InceptionE(2048, pool=tf_max_pool)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] in [0, 1] -> pool3 [N, 2048]
        x = preprocess(images)  # [N, 3, 299, 299]
        x = chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)  # [N, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 64, 73, 73]
        x = chain(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)  # [N, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 192, 35, 35]
        x = chain(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d)  # [N, 288, 35, 35]
        x = chain(x, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e)  # [N, 768, 17, 17]
        x = chain(x, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)  # [N, 2048, 8, 8]
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def head(self, feats: torch.Tensor) -> torch.Tensor:  # [N, 2048] -> [N, 1008]
        """The logits the Inception Score reads: fc without its bias, as Salimans et al.'s IS code (and torch-fidelity's
        `logits_unbiased`, which torchmetrics uses) take them from the 2015 graph."""
        return feats @ self.fc.weight.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # -> fc's logits [N, 1008]
        return self.fc(self.features(images))


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """The network with the weights at `path` (a plain state dict; nothing but tensors is unpickled), in eval mode."""
    network = FIDInceptionV3()
    state = load_tensors(path, "", "the FID Inception's state dict", WeightsError)  # the caller names the file and its setting
    try:
        network.load_state_dict(state)  # strict: every name and shape must match
    except (RuntimeError, TypeError) as err:
        # torch gives a line per kind of mismatch, each listing every key: the start of the first three lines.
        lines = [line.strip() for line in str(err).splitlines()[1:4] or [str(err)]]
        raise WeightsError(f"not the FID Inception's state dict: {'; '.join(ln[:160] + '...' * (len(ln) > 160) for ln in lines)}") from None
    return network.eval()
