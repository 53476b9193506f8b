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
"""

from scorematch.objectives.dsm import dsm, ncsn, ncsn_per_sample
from scorematch.objectives.edm import edm, edm_per_sample, edm_sigmas, edm_weight
from scorematch.objectives.esm import esm, esm_kde, kde_score
from scorematch.objectives.ism import ism
from scorematch.objectives.labels import drop_labels
from scorematch.objectives.sde import sde_dsm
from scorematch.objectives.ssm import ssm

#: names accepted by ``scorematch train --objective``
OBJECTIVE_NAMES = ("esm", "esm_kde", "ism", "ssm", "ssm_vr", "dsm", "ncsn", "sde", "edm")

__all__ = [
    "OBJECTIVE_NAMES", "drop_labels", "dsm", "edm", "edm_per_sample", "edm_sigmas", "edm_weight", "esm",
    "esm_kde", "ism", "kde_score", "ncsn", "ncsn_per_sample", "sde_dsm", "ssm",
]
