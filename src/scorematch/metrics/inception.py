"""Inception FID, from a weights file the user supplies (nothing is downloaded).

The network is the Inception-v3 of Szegedy et al. (2016) in the variant that the FID of Heusel et
al. (2017) uses: its 2048-d pool features, with the pooling of the TensorFlow graph that the
original FID was computed with (average pools that leave the padding out of their count in the
blocks A, C and the first E; a max pool in the last block E). Parameter names and shapes are
those of torchvision's ``Inception3`` without the auxiliary classifier and the last linear layer
(e.g. ``Conv2d_1a_3x3.conv.weight``, ``Mixed_7c.branch_pool.bn.running_var``), the names the
converted FID weights ``pt_inception-2015-12-05`` are published under: save that state dict as
safetensors (``safetensors.torch.save_file(torch.load(path), "inception.safetensors")`` on a
machine you trust with the pickle) and pass the file; tensors of the classifier (``fc.*``) are
ignored, every other tensor must be present with its shape.

Images (n, C, H, W) in [0, 1] with C = 1 or 3 are resized to 299x299 (bilinear), grey images
repeated to three channels, and mapped to [-1, 1] before the network.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from scorematch._checks import batch, positive_int
from scorematch.errors import CheckpointError, DataError

INPUT_SIZE = 299


class Conv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, running statistics), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    def __init__(self, cin: int, pool: int) -> None:
        super().__init__()
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 64, 1), Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(cin, pool, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class BlockB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 64, 1), Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2 = Conv(cin, c7, 1), Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1, self.branch7x7dbl_2 = Conv(cin, c7, 1), Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(d)))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg(x))], 1)


class BlockD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1, self.branch7x7x3_2 = Conv(cin, 192, 1), Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """``max_pool``: the last block of the FID network pools by a max, the one before by an average."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 448, 1), Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


class InceptionFeatures(nn.Module):
    """Inception-v3 up to its 2048-d average pool (module docstring); use it in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool features (n, 2048) of images (n, 1 or 3, H, W) in [0, 1]."""
        x = images.clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean((2, 3))


def load_inception(path: str | Path) -> InceptionFeatures:
    """InceptionFeatures with the weights of the safetensors file ``path`` (module docstring), in
    eval mode; CheckpointError naming the file when it is missing, unreadable or of another network."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Inception weights {p} not found; pass a safetensors file of the FID Inception "
                              "state dict (scorematch never downloads it)")
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{p} is not a readable safetensors file ({err})") from None
    net = InceptionFeatures()
    expected = net.state_dict()
    tensors = {k: v for k, v in tensors.items() if not k.startswith(("fc.", "AuxLogits."))}
    missing = sorted(k for k in set(expected) - set(tensors) if not k.endswith("num_batches_tracked"))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{p} is not the FID Inception state dict: missing {missing[:3]}, unexpected "
                              f"{extra[:3]}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{p}: {k} has shape {tuple(v.shape)}, the FID Inception needs "
                                  f"{tuple(expected[k].shape)}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=False)
    return net.eval()


@torch.no_grad()
def inception_features(net: InceptionFeatures, images: torch.Tensor, chunk: int = 50) -> torch.Tensor:
    """Pool features (n, 2048), float64, of images (n, 1 or 3, H, W) in [0, 1], ``chunk`` at a time."""
    x = batch("images", images, min_dims=4)
    if x.shape[1] not in (1, 3):
        raise DataError(f"Inception FID takes images of 1 or 3 channels, got {x.shape[1]}")
    p = next(net.parameters())
    out = [net(x[i:i + chunk].to(p.device, p.dtype)).double() for i in range(0, len(x), positive_int("chunk", chunk))]
    return torch.cat(out)


def inception_fd(net: InceptionFeatures, reference: torch.Tensor, other: torch.Tensor,
                 generator: torch.Generator, bootstrap: int = 10) -> tuple[float, float]:
    """Inception FID of ``other`` against ``reference`` images (the Frechet distance of Gaussians
    fitted to their pool features) and its bootstrap standard error over ``bootstrap`` resamples."""
    from scorematch.metrics.images import bootstrap_se, feature_frechet

    f_ref, f_other = inception_features(net, reference), inception_features(net, other)
    se = bootstrap_se(feature_frechet, f_ref, f_other, positive_int("bootstrap", bootstrap, 2), generator)
    return feature_frechet(f_ref, f_other), se
