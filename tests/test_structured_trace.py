"""The structured exact trace (networks with linear ends) against the per-dimension autograd loop.

Value and every parameter gradient of the ISM loss agree with ``method="loop"`` for every model
class, activation, depth 1 to 4, widths below and above D (so both contraction orders run), with
and without conditioning; the protocol on a user's own module (chain and torch.func inner maps),
the fallback where it does not apply, wrappers (partial, energy_to_score, DDP), and the
probability-flow ODE likelihood with the exact structured divergence.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from scorematch.autodiff import Chain, LinearEnds, score_and_trace, trace_method
from scorematch.errors import ConfigError, ModelError
from scorematch.likelihood import log_prob
from scorematch.models import EnergyMLP, NoiseConditionalMLP, ScoreMLP, energy_to_score
from scorematch.models.mlp import ACTIVATIONS
from scorematch.models.time import TimeMLP
from scorematch.objectives import ism
from scorematch.sde import VESDE, VPSDE, SubVPSDE, sigma_conditioned

F64 = torch.float64
D = 5


def _ism_and_grads(score_fn, x, params, method, conditioning=(), **kw):
    s, tr = score_and_trace(score_fn, x, method, conditioning=conditioning, **kw)
    loss = (tr + 0.5 * s.pow(2).sum(1)).mean()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return s, tr, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def assert_matches_loop(score_fn, x, params, conditioning=(), method="structured", **kw) -> None:
    s_ref, tr_ref, g_ref = _ism_and_grads(score_fn, x, params, "loop", conditioning)
    s, tr, g = _ism_and_grads(score_fn, x, params, method, conditioning, **kw)
    torch.testing.assert_close(s, s_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(tr, tr_ref, rtol=1e-8, atol=1e-10 * float(tr_ref.detach().abs().max()))
    assert sum(float(a.abs().sum()) for a in g_ref) > 0
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * (1 + float(b.detach().abs().max())))


def _model(cls: type, hidden: int, depth: int, activation: str) -> nn.Module:
    torch.manual_seed(hidden + 10 * depth)
    return cls(D, hidden=hidden, depth=depth, activation=activation).double()


# widths 3 < D (M = W_in W_out of rank 3; 7 rows >= 3: the folded h^3 contraction) and 9 > D (7 rows < 9:
# the per-row h x h tangent carried through the layers)
WIDTHS = (3, 9)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("cls", [ScoreMLP, EnergyMLP, NoiseConditionalMLP, TimeMLP])
def test_structured_trace_equals_the_loop(cls: type, activation: str, depth: int, gen: torch.Generator) -> None:
    if cls is TimeMLP and activation == "leaky_relu":
        pytest.skip("TimeMLP offers no leaky_relu")
    x = torch.randn(7, D, generator=gen, dtype=F64)
    for hidden in WIDTHS:
        model = _model(cls, hidden, depth, activation)
        params = list(model.parameters())
        if cls is NoiseConditionalMLP:  # one sigma per row, and one float for all
            for sigma in (torch.rand(7, generator=gen, dtype=F64) + 0.1, 0.7):
                assert_matches_loop(model.score, x, params, (sigma,))
        elif cls is TimeMLP:
            assert_matches_loop(model, x, params, (torch.rand(7, generator=gen, dtype=F64),))
        else:
            assert_matches_loop(model.score, x, params)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("cls", [NoiseConditionalMLP, TimeMLP])
def test_class_conditional_models_take_the_label_through_the_trace(cls: type, depth: int,
                                                                   gen: torch.Generator) -> None:
    """The label embedding enters where sigma's (t's) does, as one more x-independent bias per
    layer: the structured trace equals the loop for labelled rows, the null label (None) included."""
    torch.manual_seed(depth)
    model = cls(D, hidden=9, depth=depth, n_classes=3).double()
    x = torch.randn(7, D, generator=gen, dtype=F64)
    cond = torch.rand(7, generator=gen, dtype=F64) + 0.1
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    for y in (labels, None):
        assert trace_method(model.score, x, conditioning=(cond, y)) == "structured"
        assert_matches_loop(model.score, x, list(model.parameters()), (cond, y))
    _, tr_a = score_and_trace(model.score, x, "structured", conditioning=(cond, labels))
    _, tr_b = score_and_trace(model.score, x, "structured", conditioning=(cond, None))
    assert float((tr_a - tr_b).detach().abs().max()) > 1e-6  # the label changes the field, hence its trace


@pytest.mark.parametrize("cls", [ScoreMLP, EnergyMLP])
def test_low_memory_blocks_give_the_same_trace_and_gradients(cls: type, gen: torch.Generator) -> None:
    """Width 128: blocks of 2^20 / 128^2 = 64 rows, so 100 rows run as 64 + 36, recomputed in the backward."""
    torch.manual_seed(0)
    model = cls(70, hidden=128, depth=3).double()
    x = torch.randn(100, 70, generator=gen, dtype=F64)
    params = list(model.parameters())
    s, tr, g = _ism_and_grads(model.score, x, params, "structured")
    s_low, tr_low, g_low = _ism_and_grads(model.score, x, params, "structured", low_memory=True)
    torch.testing.assert_close(tr_low, tr, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_low, g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and the unblocked value against the generic reverse mode
    torch.testing.assert_close(tr, score_and_trace(model.score, x, "vjp")[1], rtol=1e-9, atol=1e-9)


def test_auto_takes_the_structured_trace_where_it_is_faster(gen: torch.Generator) -> None:
    x2, x64 = torch.randn(8, 2, generator=gen), torch.randn(8, 64, generator=gen)
    assert trace_method(ScoreMLP(2, hidden=128, depth=2).score, x2) == "structured"  # one hidden-to-hidden layer
    assert trace_method(EnergyMLP(2, hidden=128, depth=1), x2) == "vjp"  # a module called: its energy, no score
    assert trace_method(EnergyMLP(2, hidden=128, depth=1).score, x2) == "structured"
    assert trace_method(ScoreMLP(2, hidden=128, depth=3), x2) == "vjp"  # O(n h^3) at D = 2: generic
    assert trace_method(ScoreMLP(64, hidden=128, depth=3), x64) == "structured"  # D >= h / 2
    assert trace_method(EnergyMLP(2, hidden=128, depth=2).score, x2) == "vjp"
    assert trace_method(ScoreMLP(2, hidden=128, depth=3), x2, "structured") == "structured"
    assert trace_method(ScoreMLP(2, hidden=128, depth=3), x2, "loop") == "loop"
    # ism runs it: the same loss as the loop, through the module (energy model: its score)
    model = EnergyMLP(6, hidden=4, depth=2).double()
    x = torch.randn(9, 6, generator=gen, dtype=F64)
    assert trace_method(model.score, x) == "structured"
    torch.testing.assert_close(ism(model, x), ism(model, x, method="loop"))


class UserScore(nn.Module):
    """A user's score network: s = c(y) * (W_out g(W_in x + e(y)) + b_out) with a class embedding e(y)
    added to the input layer and an inner map that is a chain of sin activations, or (chain=False) any
    row-wise map (here a residual block), for torch.func."""

    def __init__(self, d: int, h: int, chain: bool = True) -> None:
        super().__init__()
        self.inp, self.hidden, self.out = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, d)
        self.label = nn.Embedding(3, h)
        self.label_scale = nn.Parameter(torch.tensor([0.5, 1.0, 2.0]))
        self.chain = chain

    def inner(self, u: torch.Tensor) -> torch.Tensor:
        if self.chain:
            return torch.sin(self.hidden(torch.sin(u)))
        return torch.tanh(u) + torch.sin(self.hidden(torch.tanh(u)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.label_scale[y, None] * self.out(self.inner(self.inp(x) + self.label(y)))

    def linear_ends(self, x: torch.Tensor, y: torch.Tensor) -> LinearEnds:
        inner = Chain(torch.sin, [self.hidden]) if self.chain else self.inner
        return LinearEnds(self.inp, self.out, inner, input_bias=self.label(y), scale=self.label_scale[y])


class UserEnergy(nn.Module):
    """E = w^T g(W_in x + b) + b', g any row-wise map (torch.func computes its Hessian terms)."""

    kind = "energy"

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.inp, self.hidden, self.out = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, 1)

    def inner(self, u: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(u) * torch.tanh(self.hidden(torch.sin(u)))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inner(self.inp(x))).squeeze(-1)

    forward = energy

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return energy_to_score(self.energy)(x)

    def linear_ends(self, x: torch.Tensor) -> LinearEnds:
        return LinearEnds(self.inp, self.out, self.inner, energy=True)


@pytest.mark.parametrize("chain", [True, False])
def test_protocol_on_a_users_module(chain: bool, gen: torch.Generator) -> None:
    torch.manual_seed(1)
    model = UserScore(4, 6, chain).double()
    x = torch.randn(8, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (8,), generator=gen)
    assert trace_method(model, x, "auto", (y,)) == ("structured" if chain else "vjp")  # torch.func: D >= h
    assert_matches_loop(model, x, list(model.parameters()), (y,))
    energy = UserEnergy(4, 6).double()
    assert_matches_loop(energy.score, x, list(energy.parameters()))


def test_fallback_without_linear_ends(gen: torch.Generator) -> None:
    net = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 3)).double()
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    assert trace_method(net, x) == "vjp"
    assert trace_method(lambda y: net(y), x) == "vjp"
    with pytest.raises(ConfigError, match="linear ends"):
        score_and_trace(net, x, "structured")
    torch.testing.assert_close(ism(net, x), ism(net, x, method="loop"))

    class NoEnds(ScoreMLP):
        def linear_ends(self, x: torch.Tensor) -> None:
            return None

    assert trace_method(NoEnds(3, hidden=8), x.float()) == "vjp"
    # images: no linear ends in the flattened sense
    mlp = ScoreMLP(4, hidden=8).double()
    img = torch.randn(2, 1, 2, 2, generator=gen, dtype=F64)
    assert trace_method(lambda v: mlp(v.flatten(1)).view_as(v), img) == "vjp"


def test_a_declaration_that_misses_a_bias_is_caught(gen: torch.Generator) -> None:
    class Forgetful(NoiseConditionalMLP):
        def linear_ends(self, x: torch.Tensor, sigma) -> LinearEnds:
            ends = super().linear_ends(x, sigma)
            return LinearEnds(ends.input, ends.output, ends.inner, scale=ends.scale)  # no input_bias

    model = Forgetful(3, hidden=8, depth=2).double()
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    with pytest.raises(ModelError, match="does not reproduce"):
        score_and_trace(model.score, x, conditioning=(0.5,))


def test_a_forgotten_optional_conditioning_is_caught(gen: torch.Generator) -> None:
    """Checked once per pattern of conditioning: a label bias left out of linear_ends passes the
    unconditional call and is caught at the first labelled one."""

    class OptionalLabel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.hid, self.out = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 3)
            self.emb = nn.Embedding(2, 6)

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            u = self.inp(x) if y is None else self.inp(x) + self.emb(y)
            return self.out(torch.tanh(self.hid(torch.tanh(u))))

        def linear_ends(self, x: torch.Tensor, y: torch.Tensor | None = None) -> LinearEnds:
            return LinearEnds(self.inp, self.out, Chain(torch.tanh, [self.hid]))  # the label is missing

    model = OptionalLabel().double()
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    assert_matches_loop(model, x, list(model.parameters())[:6], (None,))
    with pytest.raises(ModelError, match="does not reproduce"):
        score_and_trace(model, x, conditioning=(torch.tensor([0, 1, 1, 0]),))


def test_wrappers_resolve_to_the_network(gen: torch.Generator) -> None:
    x = torch.randn(6, 4, generator=gen, dtype=F64)
    nc = NoiseConditionalMLP(4, hidden=3, depth=2).double()
    bound = functools.partial(nc.score, sigma=0.3)
    assert trace_method(bound, x) == "structured"
    assert_matches_loop(bound, x, list(nc.parameters()))
    energy = EnergyMLP(4, hidden=3, depth=2).double()
    wrapped = energy_to_score(energy)
    assert trace_method(wrapped, x) == "structured"
    assert_matches_loop(wrapped, x, list(energy.parameters()))
    # an energy_to_score of a score network's call is not the network's score: generic
    assert trace_method(energy_to_score(lambda v: energy(v)), x) == "vjp"


def test_through_ddp_the_reducer_sees_the_gradients(tmp_path: Path, gen: torch.Generator) -> None:
    """DDP(ScoreModule(model)) on a one-process gloo group: the structured trace runs as DDP's
    forward, so its communication hook reduces the gradients, which equal the bare model's."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from scorematch.run.system.distributed import ScoreModule

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = ScoreMLP(5, hidden=8, depth=3).double()
        wrapped = DDP(ScoreModule(model))
        reduced = []

        def hook(state, bucket):
            reduced.append(bucket.buffer().numel())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        wrapped.register_comm_hook(None, hook)
        x = torch.randn(6, 5, generator=gen, dtype=F64)
        assert trace_method(wrapped, x) == "structured"
        grads = []
        for fn, method in ((model, "loop"), (wrapped, "structured"), (wrapped, "structured")):
            model.zero_grad()
            ism(fn, x, method=method).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        assert sum(reduced) == 2 * sum(p.numel() for p in model.parameters())  # every gradient, both steps
        for a, b in zip(grads[0], grads[2], strict=True):
            torch.testing.assert_close(a, b)
    finally:
        dist.destroy_process_group()


def _generic_exact(monkeypatch: pytest.MonkeyPatch, *args, **kw) -> torch.Tensor:
    import scorematch.likelihood as lik

    with monkeypatch.context() as m:
        m.setattr(lik, "_structured_velocity", lambda *a: None)
        return log_prob(*args, **kw)


@pytest.mark.parametrize("sde", [VESDE(0.01, 5.0), VPSDE(), SubVPSDE()], ids=["ve", "vp", "subvp"])
def test_exact_log_prob_equals_the_generic_exact_trace(sde, monkeypatch: pytest.MonkeyPatch,
                                                       gen: torch.Generator) -> None:
    from scorematch.likelihood import _structured_velocity

    x = torch.randn(4, 3, generator=gen, dtype=F64)
    kw = {"exact_trace": True, "method": "rk4", "options": {"step_size": 0.1}}
    torch.manual_seed(0)
    models = [TimeMLP(3, hidden=8, depth=1).double(), TimeMLP(3, hidden=6, depth=2).double()]
    if isinstance(sde, VESDE):  # a noise-conditional model through sigma_conditioned
        models.append(sigma_conditioned(NoiseConditionalMLP(3, hidden=8, depth=2).double(), sde))
    for model in models:
        assert _structured_velocity(model, sde, x, 1e-5) is not None
        torch.testing.assert_close(log_prob(model, sde, x, **kw), _generic_exact(monkeypatch, model, sde, x, **kw),
                                   rtol=1e-9, atol=1e-8)
    assert _structured_velocity(TimeMLP(3, hidden=8, depth=2), sde, x.float(), 1e-5) is None  # D < h/2: generic


def test_exact_log_prob_at_image_dimension(monkeypatch: pytest.MonkeyPatch, gen: torch.Generator) -> None:
    """D = 784: the structured divergence equals the D x D Jacobian's trace along the same fixed-step
    solve, and the Hutchinson estimate (64 probes) agrees with it within its standard error."""
    torch.manual_seed(0)
    sde = VPSDE()
    model = TimeMLP(784, hidden=32, depth=2)
    x = torch.randn(2, 784, generator=gen)
    kw = {"method": "rk4", "options": {"step_size": 0.25}}
    exact = log_prob(model, sde, x, exact_trace=True, **kw)
    assert torch.isfinite(exact).all() and (exact < 0).all()
    torch.testing.assert_close(exact, _generic_exact(monkeypatch, model, sde, x, exact_trace=True, **kw),
                               rtol=1e-5, atol=1e-2)
    hutch = log_prob(model, sde, x.repeat(32, 1), exact_trace=False, generator=gen, **kw).view(32, 2)
    se = hutch.std(0) / math.sqrt(32)
    assert ((hutch.mean(0) - exact).abs() < 4 * se + 1e-3).all(), (hutch.mean(0), exact, se)
