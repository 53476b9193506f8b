"""Score-matching objectives. Each returns a scalar (batch mean) differentiable in theta,
with exactly the 1/2 factors of conventions.md:

    =========  ==================================================================
    esm        1/2 E||s_theta(x) - s*(x)||^2
    esm_kde    the same with s* = grad log q_h, q_h a Gaussian KDE of a reference set
    ism        E[tr(grad_x s_theta) + 1/2 ||s_theta||^2]                 (Hyvarinen 2005)
    ssm        E_v[v^T (grad_x s_theta) v + 1/2 (v^T s_theta)^2], or SSM-VR (Song et al. 2019)
    dsm        1/2 E||s_theta(x + sigma z) + z/sigma||^2                  (Vincent 2011)
    ncsn       multi-scale DSM with lambda(sigma) = sigma^2              (Song & Ermon 2019)
    sde_dsm    continuous-time DSM of a score SDE                         (Song et al. 2021)
    edm        1/2 E[lambda(sigma)||D_theta(x + n; sigma) - x||^2], ln sigma ~ N(P_mean, P_std^2)
                                                                          (Karras et al. 2022)
    =========  ==================================================================

``dsm``, ``ncsn``, ``sde_dsm`` and ``edm`` take ``labels=`` for class-conditional models;
``drop_labels`` is the label dropout of classifier-free guidance.

What each objective is (its name, the model it trains, the settings it reads, its schedule and
loss in a run) is written once, in ``scorematch.objectives.catalogue``; the names here are
imported on first use, so that reading the catalogue (the command line's help) imports no torch.
"""

from __future__ import annotations

from scorematch._lazy import lazy_package
from scorematch.objectives import catalogue

#: the helpers beside the catalogue's functions, by import path
_HELPERS = ("labels:drop_labels", "edm:edm_per_sample", "edm:edm_sigmas", "edm:edm_weight", "esm:kde_score",
            "dsm:ncsn_per_sample", "catalogue:LossData")
_WHERE = {name: module for module, _, name in (h.partition(":") for h in _HELPERS)}
for _e in catalogue.entries():
    _module, _, _name = _e.function.path.partition(":")
    _WHERE[_name] = _module.rsplit(".", 1)[1]
lazy_package(__name__, _WHERE)
