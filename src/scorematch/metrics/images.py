"""Image metrics that need no download: a small classifier trained on the labelled training images
gives the feature space, in which generated images are compared with held-out real ones.

    FeatureNet / train_feature_net   a small CNN classifier (its penultimate layer: the features)
    features_and_probs               features (float64) and softmax probabilities of images
    bootstrap_se                     a metric's standard error by the bootstrap
    frechet_distance                 closed-form Frechet distance between two Gaussians
    feature_frechet                  the Frechet distance of Gaussians fitted to two feature sets
    kid                              Kernel Inception Distance: unbiased MMD^2, cubic polynomial kernel
    confident_rate                   fraction of images whose top softmax probability exceeds 0.9
    image_metrics                    all of them against held-out real images, each with the
                                     real-vs-real baseline and a standard error

The features are those of a network trained here, on the user's data, so the numbers compare runs
on the same data and feature network with each other and with the real-vs-real baseline; they are
not comparable with the Inception-v3 FID of the literature, which uses another network trained on
another data set (ImageNet).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scorematch._checks import batch, positive, positive_int
from scorematch.errors import DataError, ModelError
from scorematch.metrics import precision_recall, subset_estimates

CONFIDENCE = 0.9


class FeatureNet(nn.Module):
    """A small CNN classifier for images (n, C, H, W) in [0, 1]:

    [conv3x3 -> ReLU] x 2 -> maxpool 2 -> [conv3x3 -> ReLU] x 2 -> maxpool 2 -> flatten ->
    linear -> ReLU (the ``feature_dim`` features) -> linear (``n_classes`` logits).

    Inputs are clamped to [0, 1] and mapped to [-1, 1] first. No batch statistics: the output for
    row i depends on row i only. ``spec`` holds the constructor's arguments (enough to rebuild it).
    """

    def __init__(self, channels: int, image_size: tuple[int, int], n_classes: int,
                 width: int = 16, feature_dim: int = 128) -> None:
        super().__init__()
        h, w = (int(s) for s in image_size)
        if h < 4 or w < 4:
            raise ModelError(f"FeatureNet needs images of at least 4x4 pixels, got {h}x{w}")
        channels, n_classes = positive_int("channels", channels), positive_int("n_classes", n_classes, minimum=2)
        width, feature_dim = positive_int("width", width), positive_int("feature_dim", feature_dim)
        self.spec = {"channels": channels, "image_size": [h, w], "n_classes": n_classes,
                     "width": width, "feature_dim": feature_dim}
        self.convs = nn.ModuleList([
            nn.Conv2d(channels, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        ])
        self.hidden = nn.Linear(2 * width * (h // 4) * (w // 4), feature_dim)
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations, shape (n, feature_dim)."""
        h = x.clamp(0.0, 1.0) * 2.0 - 1.0
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            if i % 2 == 1:
                h = F.max_pool2d(h, 2)
        return F.relu(self.hidden(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def init_feature_net(net: FeatureNet, generator: torch.Generator) -> FeatureNet:
    """Draw every weight from ``generator``: U(-b, b) with b = sqrt(6 / fan_in) (He-uniform, for
    ReLU), biases 0. Returns ``net``."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                bound = math.sqrt(6.0 / m.weight[0].numel())
                m.weight.uniform_(-bound, bound, generator=generator)
                m.bias.zero_()
    return net


def _labelled(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch("images", images, min_dims=4)
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dim() != 1:
        raise DataError("labels must be a 1-D integer tensor")
    if len(labels) != len(x):
        raise DataError(f"{len(x)} images but {len(labels)} labels")
    if len(x) < 2 or labels.min() < 0:
        raise DataError("the feature network needs at least two images and labels >= 0")
    return x, labels.long()


def train_feature_net(images: torch.Tensor, labels: torch.Tensor, seed: int = 0, epochs: int = 8,
                      batch_size: int = 64, lr: float = 2e-3, width: int = 16,
                      feature_dim: int = 128) -> FeatureNet:
    """Train a FeatureNet on labelled images (n, C, H, W) in [0, 1] by cross-entropy, Adam with
    learning rate ``lr`` decayed by a cosine to 0 over ``epochs`` passes of shuffled batches.

    The result depends only on the data, the arguments and ``seed`` (initial weights and shuffling
    both come from ``torch.Generator().manual_seed(seed)``), for a given device and thread count.
    Returned in eval mode, on the images' device.
    """
    x, y = _labelled(images, labels)
    epochs, batch_size = positive_int("epochs", epochs), positive_int("batch_size", batch_size)
    lr = positive("lr", lr)
    gen = torch.Generator().manual_seed(int(seed))
    net = init_feature_net(FeatureNet(x.shape[1], tuple(x.shape[2:]), max(int(y.max()) + 1, 2),
                                      width, feature_dim), gen).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total, step = epochs * steps_per_epoch, 0
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return net.eval()


@torch.no_grad()
def features_and_probs(net: FeatureNet, images: torch.Tensor,
                       chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, feature_dim) in float64 and softmax probabilities (n, n_classes) of ``images``."""
    x = batch("images", images, min_dims=4)
    p = next(net.parameters())
    want = (net.spec["channels"], *net.spec["image_size"])
    if tuple(x.shape[1:]) != tuple(want):
        raise DataError(f"the feature network takes images of shape {tuple(want)}, got {tuple(x.shape[1:])}")
    feats, probs = [], []
    for i in range(0, len(x), positive_int("chunk", chunk)):
        f = net.features(x[i:i + chunk].to(device=p.device, dtype=p.dtype))
        feats.append(f.double())
        probs.append(torch.softmax(net.head(f).double(), dim=1))
    return torch.cat(feats), torch.cat(probs)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose most probable class is the label."""
    return float((probs.argmax(1).cpu() == labels.cpu()).double().mean())


def _psd_sqrt(c: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix, by eigh (float64);
    eigenvalues below 0 (round-off) count as 0."""
    c = 0.5 * (c + c.T)
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2):

    ||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^{1/2} cov2 cov1^{1/2})^{1/2}),

    in float64; the matrix square roots by symmetric eigendecompositions, so that round-off cannot
    make the result complex (the trace term is the sum of square roots of the eigenvalues,
    clamped at 0, of the symmetric PSD matrix cov1^{1/2} cov2 cov1^{1/2}).
    """
    mu1, mu2, cov1, cov2 = (torch.as_tensor(t).double().cpu() for t in (mu1, mu2, cov1, cov2))
    d = mu1.numel()
    if mu2.numel() != d or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise DataError(f"means of dimension {d} need covariances ({d}, {d}); got {tuple(mu2.shape)}, "
                        f"{tuple(cov1.shape)}, {tuple(cov2.shape)}")
    s1 = _psd_sqrt(cov1)
    m = s1 @ (0.5 * (cov2 + cov2.T)) @ s1
    cross = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2.0 * cross
    return float(value.clamp_min(0.0))


def moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64) of features (n, d), n >= 2."""
    f = batch("features", features).flatten(1).double()
    if len(f) < 2:
        raise DataError("a covariance needs at least two rows")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def feature_frechet(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """The Frechet distance between the Gaussians fitted (mean, unbiased covariance) to two feature
    sets. With fewer rows than dimensions (n1 + n2 < d) both covariances live in the span of the
    centred rows: they are restricted to an orthonormal basis of it (exact, and an r x r instead of
    a d x d eigendecomposition, r <= n1 + n2)."""
    mu1, c1 = moments(f1)
    mu2, c2 = moments(f2)
    if len(f1) + len(f2) >= mu1.numel():
        return frechet_distance(mu1, c1, mu2, c2)
    centred = torch.cat([f1.flatten(1).double() - mu1, f2.flatten(1).double().to(mu1.device) - mu2])
    q, _ = torch.linalg.qr(centred.T)
    zero = torch.zeros(q.shape[1], dtype=torch.float64)
    spread = frechet_distance(zero, q.T @ c1 @ q, zero, q.T @ c2 @ q)
    return float((mu1 - mu2).pow(2).sum()) + spread


def kid(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018) of two feature sets (m, d) and (n, d):
    the unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3,

    sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1)) - 2 sum_{i,j} k(x_i, y_j) / (m n),

    whose expectation is 0 exactly when both sets come from one distribution (it can be negative).
    """
    x, y = batch("f1", f1).flatten(1).double(), batch("f2", f2).flatten(1).double().to(f1.device)
    if x.shape[1] != y.shape[1]:
        raise DataError(f"feature sets of dimensions {x.shape[1]} and {y.shape[1]}")
    m, n, d = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise DataError("kid needs at least two rows on each side")
    kxx, kyy, kxy = ((a @ b.T / d + 1.0).pow(3) for a, b in ((x, x), (y, y), (x, y)))
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def confident_rate(probs: torch.Tensor, threshold: float = CONFIDENCE) -> tuple[float, float]:
    """Fraction of rows whose largest class probability exceeds ``threshold``, and its binomial
    standard error sqrt(r (1 - r) / n)."""
    p = batch("probs", probs)
    r = float((p.max(1).values > threshold).double().mean())
    return r, math.sqrt(r * (1.0 - r) / len(p))


def bootstrap_se(metric: Callable[[torch.Tensor, torch.Tensor], float], x: torch.Tensor, y: torch.Tensor,
                 reps: int, gen: torch.Generator) -> float:
    """Standard deviation of ``metric`` over ``reps`` bootstrap resamples (rows with replacement) of both sets."""
    vals = []
    for _ in range(reps):
        ix = torch.randint(0, len(x), (len(x),), generator=gen).to(x.device)
        iy = torch.randint(0, len(y), (len(y),), generator=gen).to(y.device)
        vals.append(metric(x[ix], y[iy]))
    mean = sum(vals) / reps
    return math.sqrt(sum((v - mean) ** 2 for v in vals) / (reps - 1))


def compare_features(reference: torch.Tensor, other: torch.Tensor, generator: torch.Generator,
                     k: int = 3, n_subsets: int = 5, bootstrap: int = 30) -> dict[str, float]:
    """FD, KID, k-NN precision and recall of ``other`` against ``reference`` features, with
    standard errors: FD's by the bootstrap (``bootstrap`` resamples), KID's and precision/recall's
    from ``n_subsets`` disjoint subsets (``subset_estimates``)."""
    fd = feature_frechet(reference, other)
    fd_se = bootstrap_se(feature_frechet, reference, other, positive_int("bootstrap", bootstrap, 2), generator)
    kid_value = kid(reference, other)
    _, kid_se = subset_estimates(kid, reference, other, n_subsets, generator)
    precision, recall = precision_recall(reference, other, k=k)
    ps, rs = [], []
    px, py = torch.randperm(len(reference), generator=generator), torch.randperm(len(other), generator=generator)
    for i in range(n_subsets):
        p_i, r_i = precision_recall(reference[px[i::n_subsets]], other[py[i::n_subsets]], k=k)
        ps.append(p_i)
        rs.append(r_i)
    return {"fd": fd, "fd_se": fd_se, "kid": kid_value, "kid_se": kid_se,
            "precision": precision, "precision_se": _se_of_mean(ps),
            "recall": recall, "recall_se": _se_of_mean(rs)}


def _se_of_mean(values: list[float]) -> float:
    k = len(values)
    mean = sum(values) / k
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1)) / math.sqrt(k)


def image_metrics(net: FeatureNet, train_real: torch.Tensor, heldout_real: torch.Tensor,
                  generated: torch.Tensor, generator: torch.Generator, k: int = 3,
                  n_subsets: int = 5, bootstrap: int = 30) -> dict[str, Any]:
    """Generated images against held-out real ones in the feature space of ``net``, each metric with
    its real-vs-real baseline (the same estimator with ``len(generated)`` training images, drawn by
    ``generator``, in place of the generated ones) and standard errors.

    Returns {"fd", "kid", "precision", "recall", "confident"}: each a dict with "value", "se",
    "baseline", "baseline_se"; and "n_generated", "n_reference". The confident rate's baseline is
    that of the held-out real images. Images (n, C, H, W) in [0, 1].
    """
    n = len(batch("generated", generated, min_dims=4))
    if len(train_real) < n:
        raise DataError(f"the baseline needs at least {n} training images (as many as generated), "
                        f"got {len(train_real)}; evaluate fewer samples")
    pick = torch.randperm(len(train_real), generator=generator)[:n].to(train_real.device)
    f_ref, p_ref = features_and_probs(net, heldout_real)
    f_gen, p_gen = features_and_probs(net, generated)
    f_base, _ = features_and_probs(net, train_real[pick])
    gen_m = compare_features(f_ref, f_gen, generator, k, n_subsets, bootstrap)
    base_m = compare_features(f_ref, f_base, generator, k, n_subsets, bootstrap)
    out: dict[str, Any] = {
        name: {"value": gen_m[name], "se": gen_m[name + "_se"],
               "baseline": base_m[name], "baseline_se": base_m[name + "_se"]}
        for name in ("fd", "kid", "precision", "recall")
    }
    c, c_se = confident_rate(p_gen)
    cb, cb_se = confident_rate(p_ref)
    out["confident"] = {"value": c, "se": c_se, "baseline": cb, "baseline_se": cb_se}
    out["n_generated"], out["n_reference"] = n, len(f_ref)
    return out
