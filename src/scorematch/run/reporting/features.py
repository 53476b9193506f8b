"""The feature network of a labelled image data set, cached by the data's fingerprint, and the
image metrics of a run's samples in its feature space (``scorematch.metrics.images``).

The network is trained once per training set and settings and kept as
``CACHE/features/<key>.safetensors``, where ``key`` is the SHA-256 of the training images'
bytes, their labels and the training settings, and CACHE is ``$SCOREMATCH_CACHE``, else
``$XDG_CACHE_HOME/scorematch``, else ``~/.cache/scorematch``. Every run on the same data then
shares one feature space, so its metrics compare across runs. A cached file is used only when
its recorded key, architecture and tensors match; otherwise it is trained again (and the cache
rewritten). When the cache cannot be written the network is trained and used without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from scorematch.errors import CheckpointError
from scorematch.files import OutputError, atomic_write
from scorematch.metrics.images import FeatureNet, accuracy, features_and_probs, image_metrics, train_feature_net
from scorematch.run.folder.checkpoint import check_fits
from scorematch.run.folder.validate import note, read_file

#: how the feature network is trained (part of the cache key)
SETTINGS = {"seed": 0, "epochs": 8, "batch_size": 64, "lr": 2e-3, "width": 16, "feature_dim": 128, "format": 1}


def cache_dir() -> Path:
    """Where feature networks are cached (see the module docstring)."""
    if os.environ.get("SCOREMATCH_CACHE"):
        return Path(os.environ["SCOREMATCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "scorematch"


def data_key(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of the images (float32 bytes and shape), the labels (int64) and SETTINGS."""
    h = hashlib.sha256()
    x = images.detach().to("cpu", torch.float32).contiguous()
    h.update(repr(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    h.update(labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    return h.hexdigest()


def _load_cached(path: Path, key: str, expected_spec: dict[str, Any]) -> FeatureNet | None:
    """The cached network at ``path`` when it is intact and was trained on this data; else None."""
    if not path.is_file():
        return None
    try:
        data = read_file(path, "feature network", max_bytes=64 << 20)
        meta = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__", {})
        spec = json.loads(meta.get("spec", "null"))
        if meta.get("key") != key or spec != expected_spec:
            return None
        net = FeatureNet(**{**spec, "image_size": tuple(spec["image_size"])})
        tensors = st_load(data)
        check_fits(tensors, {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}, str(path))
        net.load_state_dict(tensors)
        return net.eval()
    except (CheckpointError, SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        note(f"{path}: not a usable feature network ({str(err)[:120]}); training it again")
        return None


def feature_net(train_x: torch.Tensor, train_labels: torch.Tensor) -> tuple[FeatureNet, dict[str, Any]]:
    """The feature network of a training set (from the cache, else trained and cached) and what
    to report about it: its cache file (or None), key, whether it was cached, training seconds."""
    key = data_key(train_x, train_labels)
    spec = {"channels": int(train_x.shape[1]), "image_size": [int(s) for s in train_x.shape[2:]],
            "n_classes": max(int(train_labels.max()) + 1, 2), "width": SETTINGS["width"],
            "feature_dim": SETTINGS["feature_dim"]}
    path = cache_dir() / "features" / f"{key[:32]}.safetensors"
    info: dict[str, Any] = {"key": key, "file": str(path), "settings": dict(SETTINGS)}
    net = _load_cached(path, key, spec)
    if net is not None:
        return net, {**info, "cached": True}
    t0 = time.perf_counter()
    kw = {k: v for k, v in SETTINGS.items() if k != "format"}
    net = train_feature_net(train_x.cpu(), train_labels.cpu(), **kw)
    info.update(cached=False, train_seconds=time.perf_counter() - t0)
    data = st_save({k: v.contiguous() for k, v in net.state_dict().items()},
                   metadata={"key": key, "spec": json.dumps(net.spec, sort_keys=True)})
    try:
        atomic_write(path, data)
    except OutputError as err:
        note(f"the feature network could not be cached ({err}); it is used without caching")
        info["file"] = None
    return net, info


def run_image_metrics(samples: torch.Tensor, train_x: torch.Tensor, train_labels: torch.Tensor,
                      test_x: torch.Tensor, test_labels: torch.Tensor | None,
                      g: torch.Generator, inception_weights: str | Path | None = None) -> dict[str, Any]:
    """FD, KID, precision/recall and confident rate of ``samples`` against the held-out images,
    each with its real-vs-real baseline and standard error (``scorematch.metrics.images``); the
    feature network's held-out accuracy and where it is cached; with ``inception_weights`` also
    the Inception FID (``scorematch.metrics.inception``). All images (n, C, H, W) in [0, 1]."""
    net, info = feature_net(train_x, train_labels)
    m = min(len(samples), len(train_x))
    out = image_metrics(net, train_x.cpu(), test_x.cpu(), samples[:m].cpu(), g)
    if test_labels is not None:
        info["heldout_accuracy"] = accuracy(features_and_probs(net, test_x.cpu())[1], test_labels)
    out["feature_net"] = info
    if inception_weights is not None:
        out["inception_fd"] = inception_metric(inception_weights, train_x.cpu(), test_x.cpu(), samples[:m].cpu(), g)
    return out


def inception_metric(weights: str | Path, train_x: torch.Tensor, test_x: torch.Tensor, samples: torch.Tensor,
                     g: torch.Generator) -> dict[str, Any]:
    """Inception FID of the samples against the held-out images, and its real-vs-real baseline
    (as many training images as samples), each with a bootstrap standard error."""
    from scorematch.metrics.inception import inception_fd, load_inception

    net = load_inception(weights)
    value, se = inception_fd(net, test_x, samples, g)
    pick = torch.randperm(len(train_x), generator=g)[: len(samples)]
    baseline, baseline_se = inception_fd(net, test_x, train_x[pick], g)
    return {"value": value, "se": se, "baseline": baseline, "baseline_se": baseline_se, "weights": str(weights)}


#: the rows of ``image_metric_lines``: result key, row name, what it measures
ROWS = (
    ("fd", "feature_fd", "Frechet distance of Gaussians fitted to the features (lower is better)"),
    ("kid", "feature_kid", "KID: unbiased MMD^2 of the features, cubic polynomial kernel (0 for a perfect sampler)"),
    ("precision", "feature_precision", "fraction of samples inside the k=3 manifold of held-out features"),
    ("recall", "feature_recall", "fraction of held-out features inside the k=3 manifold of the samples"),
    ("confident", "confident_rate", "fraction of samples the classifier gives a probability above 0.9"),
    ("inception_fd", "inception_fid", "Frechet distance in the pool features of the FID Inception network "
                                      "(the weights file given; not at the literature's 50,000 samples)"),
)


def image_metric_lines(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, value with standard error and real-vs-real baseline, meaning) for each image metric."""
    if "skipped" in metrics:
        return [("image_metrics", f"skipped: {metrics['skipped']}", "")]
    rows = []
    for key, name, meaning in ROWS:
        if key not in metrics:
            continue
        d = metrics[key]
        rows.append((name, f"{d['value']:.4g} +/- {d['se']:.2g} (real vs real: {d['baseline']:.4g} "
                           f"+/- {d['baseline_se']:.2g})", meaning))
    net = metrics["feature_net"]
    acc = net.get("heldout_accuracy")
    rows.append(("feature_net", f"{'from the cache' if net['cached'] else 'trained now'}"
                                f"{'' if acc is None else f', held-out accuracy {acc:.3f}'}: {net['file']}",
                 "the classifier whose penultimate layer gives the features"))
    return rows
