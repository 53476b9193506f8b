"""Tables with scikit-learn's interface: a generator (``TableDiffusion``) and an imputer (``TableImputer``).

Both learn an EDM denoiser (Karras et al. 2022; ``scorematch.models.EDMPrecond`` over a
``TimeMLP``) on the table encoded by its schema (``scorematch.data.columns``: one-hot categories,
dequantised integers, log / logit transforms, every coordinate standardised, so sigma_data = 1):

- missing cells (NaN, or blank / None in text columns) are allowed: the loss is taken on the
  observed cells only (``scorematch.objectives.masked.edm_masked``), the missing ones filled with
  0, the column mean in standardised units;
- ``TableDiffusion.sample(n)`` draws with Heun's method on ``n_levels`` Karras noise levels and
  decodes, so every value is one its column can take; with labels ``y`` at ``fit`` the model is
  class-conditional and ``sample(n, label=K)`` draws class K (labels of ``sample(n)`` follow the
  training frequencies);
- ``score_samples(X)`` is log p(x) through the probability-flow ODE (``scorematch.likelihood``,
  exact trace, fixed-step RK4 so that each row's value does not depend on the others), plus the
  log-Jacobian of the continuous columns' transforms: a density in data units for continuous
  columns, per encoded point for discrete ones;
- ``TableImputer`` learns, beside that generator, a conditional denoiser of some cells given the
  others (``scorematch.models.MaskedDenoiser``: a Gaussian of the rows fitted by EM with the network
  learning the residual from its conditional mean, trained by self-supervised masking of the observed
  cells, ``scorematch.objectives.masked.edm_conditional``, for ceil(``impute_epochs`` n /
  ``batch_size``) steps on n rows, ``steps_for_epochs``); ``transform(X)`` draws each row's missing
  cells given its present ones with Heun's method on ``impute_levels`` Karras levels, ``draws``
  times per row from starts in antithetic pairs, and returns their mean (numeric columns, rounded for
  integers) or most frequent value (binary, categorical); ``impute_draws(X)`` returns
  ``draws`` completions from independent starts (multiple imputation).

Data in and out: a NumPy array (returned as float64 arrays), a pandas DataFrame (returned as
DataFrames with the same columns) or a ``scorematch.data.Table``. The training loop is a plain
Adam loop with an EMA of the weights held in memory: no run folder is written (``scorematch train``
writes one and reads CSV tables as well).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from scorematch.data.columns import Schema, decode, dequantization, encode, infer_schema, log_jacobian
from scorematch.data.tables import Table, as_table, input_kind, like_input
from scorematch.errors import ConfigError, DataError
from scorematch.models import EDMPrecond, MaskedDenoiser
from scorematch.models.gaussian import gaussian_em
from scorematch.noise import karras_sigmas
from scorematch.objectives.masked import edm_conditional, edm_masked
from scorematch.samplers import guided, heun

__all__ = ["TableDiffusion", "TableImputer", "aggregate_draws", "fit_imputer_model", "fit_table_model",
           "fold_priors", "impute_encoded", "keep_observed", "sample_encoded", "steps_for_epochs"]

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
#: the ridge added to the imputer's Gaussian prior covariance (standardised units), and the folds of
#: its out-of-fold priors in training
PRIOR_RIDGE, PRIOR_FOLDS = 1e-3, 5


def _int(name: str, v: Any, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


def _float(name: str, v: Any, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.number) or not low <= float(v) <= high:
        raise ConfigError(f"{name} must be a number in [{low}, {high}], got {v!r}")
    return float(v)


def _seed(random_state: Any) -> int:
    if random_state is None:
        return int(np.random.default_rng().integers(2**31))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31))
    return _int("random_state", random_state, 0)


def fit_table_model(z: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 0,
                    dequant: np.ndarray | None = None, hidden: int = 128, depth: int = 3, steps: int = 1000,
                    batch_size: int = 256, lr: float = 1e-3, ema: float = 0.999, label_dropout: float = 0.1,
                    seed: int = 0) -> EDMPrecond:
    """An EDM denoiser trained on the standardised encodings ``z`` (n, D; NaN = missing) with the
    masked loss, Adam at ``lr`` for ``steps`` batches of ``batch_size`` rows (with replacement),
    integer coordinates dequantised by U(-w, w) with ``dequant`` = w per coordinate, and labels
    (int64 (n,), ``n_classes`` classes) dropped with probability ``label_dropout`` for classifier-free
    guidance. Returns the EMA of the weights (decay ``ema``, warmed up as min(ema, (1+k)/(10+k)))."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the network's initial weights
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    model = EDMPrecond("TimeMLP", {"dim": z.shape[1], "hidden": hidden, "depth": depth, "n_classes": n_classes},
                       sigma_data=1.0)

    def loss(xb: torch.Tensor, mb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        yb = None
        if y is not None:
            yb = y[idx].clone()
            yb[torch.rand(len(idx), generator=g) < label_dropout] = model.null_label
        return edm_masked(model, xb, mb, generator=g, labels=yb)

    return _train(model, loss, z, dequant, steps, batch_size, lr, ema, g)


def _train(model: torch.nn.Module, loss: Any, z: np.ndarray, dequant: np.ndarray | None, steps: int,
           batch_size: int, lr: float, ema: float, g: torch.Generator) -> Any:
    """Adam at ``lr`` on ``loss(x_batch, mask_batch, rows)`` for ``steps`` batches of ``batch_size``
    rows of ``z`` (NaN = missing; drawn with replacement), integer coordinates dequantised by
    U(-w, w) with ``dequant`` = w; the EMA of the weights (decay min(ema, (1+k)/(10+k)))."""
    n, d = z.shape
    mask = torch.from_numpy(~np.isnan(z))
    x = torch.from_numpy(np.nan_to_num(z, nan=0.0)).float()
    w = torch.from_numpy(np.zeros(d) if dequant is None else dequant).float()
    avg = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for k in range(steps):
        idx = torch.randint(0, n, (min(batch_size, max(n, 2)),), generator=g)
        xb, mb = x[idx], mask[idx]
        if bool((w > 0).any()):
            xb = xb + (torch.rand(xb.shape, generator=g) * 2 - 1) * w * mb
        value = loss(xb, mb, idx)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        _ema_step(avg, model, min(ema, (1 + k) / (10 + k)))
    return avg.eval()


def _ema_step(avg: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pa, pm in zip(avg.parameters(), model.parameters(), strict=True):
            pa.lerp_(pm, 1 - decay)


def steps_for_epochs(n_rows: int, epochs: int, batch_size: int) -> int:
    """Training steps for ``epochs`` passes over ``n_rows`` rows in batches of ``batch_size``:
    ceil(epochs n / batch_size), at least 1 (a table smaller than a batch, whose batches are all its
    rows, trains for fewer passes: the steps grow with the rows either way)."""
    return max(1, math.ceil(epochs * n_rows / batch_size))


def fit_imputer_model(z: np.ndarray, dequant: np.ndarray | None = None, hidden: int = 128, depth: int = 3,
                      steps: int = 1000, batch_size: int = 256, lr: float = 1e-3, ema: float = 0.999,
                      seed: int = 0, ridge: float = PRIOR_RIDGE, folds: int = PRIOR_FOLDS) -> MaskedDenoiser:
    """A conditional denoiser (``MaskedDenoiser``) of the standardised encodings ``z`` (n, D; NaN =
    missing): its Gaussian prior fitted to z by EM (``gaussian_em`` with ``ridge``), then the network
    trained with ``edm_conditional`` on the residuals of each row from the Gaussian fitted without
    that row's fold (``folds`` folds, ``fold_priors``): Adam at ``lr`` for ``steps`` batches of
    ``batch_size`` rows (with replacement), integer coordinates dequantised as in ``fit_table_model``.
    Returns the EMA of the weights (decay ``ema``, warmed up as min(ema, (1+k)/(10+k)))."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MaskedDenoiser(z.shape[1], hidden, depth, sigma_data=1.0)
    full = gaussian_em(z, ridge)
    model.set_prior(*(v.float() for v in full))
    fold, means, covs = fold_priors(z, folds, ridge, seed, full)

    def loss(xb: torch.Tensor, mb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return edm_conditional(model, xb, mb, generator=g, prior=(means[fold[idx]], covs[fold[idx]]))

    return _train(model, loss, z, dequant, steps, batch_size, lr, ema, g)


def fold_priors(z: np.ndarray, folds: int, ridge: float, seed: int,
                full: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """(fold of each row (n,) int64, means (K, D), covs (K, D, D)) float32: the rows of ``z`` dealt at
    random (``seed``) into K = min(``folds``, n) folds and, for each fold, the Gaussian fitted by EM to
    the other rows; ``full`` (the Gaussian of all rows, fitted here if not given) where those leave a
    coordinate unobserved or K < 2."""
    k = min(folds, len(z))
    fold = np.random.default_rng(seed).permutation(len(z)) % k
    full = gaussian_em(z, ridge) if full is None else full
    fits = []
    for j in range(k):
        rest = z[fold != j]
        ok = k >= 2 and len(rest) >= 2 and bool((~np.isnan(rest)).any(0).all())
        fits.append(gaussian_em(rest, ridge) if ok else full)
    means = torch.stack([m for m, _ in fits]).float()
    covs = torch.stack([c for _, c in fits]).float()
    return torch.from_numpy(fold.astype(np.int64)), means, covs


def _score(model: EDMPrecond, labels: torch.Tensor | None, guidance: float) -> Any:
    if labels is None:
        return model.score if not model.n_classes else guided(model, model.null_label, 0.0)
    return guided(model, labels, guidance)


def sample_encoded(model: EDMPrecond, n: int, n_levels: int = 32, seed: int = 0, labels: torch.Tensor | None = None,
                   guidance: float = 0.0) -> torch.Tensor:
    """n standardised encodings drawn with Heun's method on ``n_levels`` Karras levels (2 n_levels - 1
    evaluations); ``labels`` (int64 (n,)) for a class-conditional model, with ``guidance`` w."""
    g = torch.Generator().manual_seed(seed)
    sigmas = karras_sigmas(n_levels, SIGMA_MIN, SIGMA_MAX)
    start = torch.randn(n, model.dim, generator=g) * SIGMA_MAX
    return heun(_score(model, labels, guidance), start, sigmas, generator=g)


def impute_encoded(model: MaskedDenoiser, z: np.ndarray, draws: int = 10, n_levels: int = 32,
                   seed: int = 0, antithetic: bool = False) -> np.ndarray:
    """float64 (draws, n, D): ``draws`` completions of the standardised encodings ``z`` (NaN = missing),
    each row's missing coordinates drawn given its present ones by Heun's method on the probability-flow
    ODE of the conditional denoiser over ``n_levels`` Karras levels (in the model's residual state,
    mapped to values by ``MaskedDenoiser.complete``), every draw from its own start sigma_max z;
    observed coordinates are returned exactly. With ``antithetic`` the starts come in pairs z, -z
    (draws k and k + draws // 2): each draw is still one of p(x_t | x_c), and the mean of a pair
    cancels the part of the draw that is odd in z (all of it for a Gaussian residual), so their mean
    estimates E[x_t | x_c] with less Monte Carlo noise; the draws are then not independent (use
    independent ones for multiple imputation)."""
    g = torch.Generator().manual_seed(seed)
    n, d = z.shape
    out = np.repeat(z[None], draws, axis=0)
    rows = np.flatnonzero(np.isnan(z).any(axis=1))
    if rows.size == 0:
        return out
    known = torch.from_numpy(np.nan_to_num(z[rows], nan=0.0)).float().repeat(draws, 1)
    cond = torch.from_numpy(~np.isnan(z[rows])).repeat(draws, 1)
    target = ~cond
    sigmas = karras_sigmas(n_levels, SIGMA_MIN, SIGMA_MAX)
    start = torch.randn(known.shape, generator=g) * SIGMA_MAX * target
    if antithetic:
        half = draws // 2 * rows.size
        start[half:2 * half] = -start[:half]
    with torch.no_grad():
        r = heun(lambda x, sigma: model.score(x, sigma, known, cond, target), start, sigmas, generator=g)
        filled = model.complete(r, known, cond, target)
    out[:, rows] = np.where(np.isnan(z[rows])[None], filled.double().numpy().reshape(draws, rows.size, d), z[rows])
    return out


def _table_in(X: Any) -> Table:
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError("sparse input is not supported; pass a dense array (X.toarray())")
    t = as_table(X)
    if t.n_rows == 0:
        raise DataError("the table has 0 samples; at least 2 rows are needed")
    return t


class TableDiffusion(BaseEstimator):
    """A score-based generative model of a table (see the module docstring).

    ``columns`` overrides the inferred column types (``"NAME=KIND,..."`` or a dict, whose entries may
    be ``{"kind": ..., "low": ..., "high": ..., "atoms": [...]}``; array columns are named x0, x1,
    ...); ``hidden``/``depth`` size the network; ``epochs`` (passes over the rows:
    ceil(epochs n / batch_size) steps on n rows, ``steps_for_epochs``) or a fixed number of ``steps``,
    and ``batch_size``, ``lr``, ``ema`` the training; ``n_levels`` the sampler's noise levels;
    ``label_dropout`` and ``guidance`` the classifier-free guidance of a model fitted with labels;
    ``ode_steps`` the RK4 steps of ``score_samples``; ``random_state`` seeds everything.
    """

    def __init__(self, columns: Any = None, hidden: int = 128, depth: int = 3, steps: int | None = None,
                 epochs: int = 1000, batch_size: int = 256, lr: float = 1e-3, ema: float = 0.999, n_levels: int = 32,
                 label_dropout: float = 0.1, guidance: float = 0.0, ode_steps: int = 50,
                 random_state: Any = 0) -> None:
        self.columns = columns
        self.hidden = hidden
        self.depth = depth
        self.steps = steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.ema = ema
        self.n_levels = n_levels
        self.label_dropout = label_dropout
        self.guidance = guidance
        self.ode_steps = ode_steps
        self.random_state = random_state

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags

    def _check_params(self) -> None:
        for name in ("hidden", "depth", "epochs", "batch_size", "n_levels", "ode_steps"):
            _int(name, getattr(self, name))
        if self.steps is not None:
            _int("steps", self.steps)
        _float("lr", self.lr, 1e-12, 10.0)
        _float("ema", self.ema, 0.0, 1.0)
        _float("label_dropout", self.label_dropout, 0.0, 1.0)
        _float("guidance", self.guidance, 0.0, 1e6)

    def _encode_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_params()
        t = _table_in(X)
        if t.n_rows < 2:
            raise DataError(f"a table model needs at least 2 rows, got {t.n_rows} sample; n_samples = 1")
        self.output_kind_ = input_kind(X)
        self.n_features_in_ = len(t.names)
        if self.output_kind_ == "frame":
            self.feature_names_in_ = np.array(t.names, dtype=object)
            self.dtypes_ = X.dtypes
        self.schema_: Schema = infer_schema(t, self.columns)
        z = encode(self.schema_, t)
        labels = None
        if y is not None:
            y = np.asarray(y)
            if y.ndim != 1 or len(y) != t.n_rows:
                raise DataError(f"y must have one label per row ({t.n_rows}), got shape {y.shape}")
            if y.dtype.kind == "f" and not np.isfinite(y).all():
                raise DataError("y holds NaN or inf; every row needs a label")
            self.classes_, labels = np.unique(y, return_inverse=True)
            counts = np.bincount(labels, minlength=len(self.classes_))
            self.class_prior_ = counts / counts.sum()
        return z, labels

    def training_steps(self, n_rows: int) -> int:
        """The generator's training steps on ``n_rows`` rows: ``steps`` if given, else
        ceil(epochs n / batch_size); ConfigError for an invalid setting."""
        self._check_params()
        return self.steps if self.steps is not None else steps_for_epochs(n_rows, self.epochs, self.batch_size)

    def fit(self, X: Any, y: Any = None) -> TableDiffusion:
        """Learn the table X (rows x columns; NaN / blank cells missing); ``y``: optional class labels
        for a class-conditional model. Returns self."""
        z, labels = self._encode_fit(X, y)
        self.steps_ = self.training_steps(len(z))
        self.model_ = fit_table_model(z, labels, 0 if labels is None else len(self.classes_),
                                      dequantization(self.schema_), self.hidden, self.depth, self.steps_,
                                      self.batch_size, self.lr, self.ema, self.label_dropout,
                                      _seed(self.random_state))
        return self

    def _table(self, X: Any) -> Table:
        check_is_fitted(self, "model_")
        t = _table_in(X)
        if len(t.names) != self.n_features_in_:
            raise DataError(f"X has {len(t.names)} features, but {type(self).__name__} is expecting "
                            f"{self.n_features_in_} features as input")
        if self.output_kind_ != "frame" or input_kind(X) != "frame":
            t = Table(self.schema_.names, t.columns)
        return t

    def _labels(self, label: Any, n: int, g: np.random.Generator) -> tuple[torch.Tensor | None, np.ndarray | None]:
        if not hasattr(self, "classes_"):
            if label is not None:
                raise ConfigError("label applies to a model fitted with labels y; this one was fitted without")
            return None, None
        if label is None:
            idx = g.choice(len(self.classes_), size=n, p=self.class_prior_)
        else:
            hits = np.flatnonzero(self.classes_ == label)
            if hits.size == 0:
                raise ConfigError(f"unknown label {label!r}; the classes are "
                                  f"{', '.join(map(str, self.classes_[:20]))}")
            idx = np.full(n, hits[0])
        return torch.from_numpy(idx.astype(np.int64)), self.classes_[idx]

    def sample(self, n_samples: int = 1, random_state: Any = None, label: Any = None) -> Any:
        """``n_samples`` new rows in the type of the fitted X (see the module docstring); ``(X, y)`` for a
        model fitted with labels (``label`` fixes the class)."""
        check_is_fitted(self, "model_")
        n = _int("n_samples", n_samples)
        seed = _seed(self.random_state if random_state is None else random_state)
        idx, y = self._labels(label, n, np.random.default_rng(seed))
        z = sample_encoded(self.model_, n, self.n_levels, seed, idx, self.guidance)
        if not bool(torch.isfinite(z).all()):
            raise DataError("the sampler diverged (NaN or inf); train longer or use more n_levels")
        X = like_input(decode(self.schema_, z), self.output_kind_, getattr(self, "dtypes_", None))
        return X if y is None else (X, y)

    def score_samples(self, X: Any) -> np.ndarray:
        """float64 (n,): log p(x) of each row by the probability-flow ODE (see the module docstring); rows
        must be complete."""
        from scorematch.likelihood import log_prob
        from scorematch.sde import VESDE, sigma_conditioned

        t = self._table(X)
        z = encode(self.schema_, t)
        if np.isnan(z).any():
            raise DataError("score_samples needs complete rows; impute the missing cells first (TableImputer)")
        sde = VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
        net = copy.deepcopy(self.model_).double()  # float64: each row's value independent of the batch
        fn = net if not net.n_classes else _score(net, None, 0.0)
        lp = log_prob(sigma_conditioned(fn, sde), sde, torch.from_numpy(z), exact_trace=True,
                      method="rk4", options={"step_size": 1.0 / self.ode_steps})
        return lp.double().numpy() + log_jacobian(self.schema_, t)


def aggregate_draws(schema: Schema, tables: list[Table]) -> Table:
    """One table from several draws: the mean (rounded for integers) of numeric columns, the most
    frequent value of binary, categorical and constant ones."""
    cols = []
    for c, *vals in zip(schema.columns, *(t.columns for t in tables), strict=True):
        stack = np.stack(vals)
        if c.kind in ("continuous", "nonnegative", "bounded"):
            cols.append(stack.mean(0))
        elif c.kind == "integer":
            cols.append(np.clip(np.round(stack.mean(0)), c.low, c.high))
        else:
            out = stack[0].copy()
            for i in range(stack.shape[1]):
                values, counts = np.unique(stack[:, i].astype(str), return_counts=True)
                best = values[np.argmax(counts)]
                out[i] = next(v for v in stack[:, i] if str(v) == best)
            cols.append(out)
    return Table(schema.names, tuple(cols))


class TableImputer(TransformerMixin, TableDiffusion):
    """Fills missing cells (NaN, blank) with a conditional score model of the table; usable in a
    ``sklearn.pipeline.Pipeline`` in place of ``IterativeImputer``. ``draws`` completions per row,
    averaged by ``transform`` (see the module docstring); ``impute_epochs`` sets the training length of
    the conditional denoiser (``steps_for_epochs``; same width, depth, batch, lr and EMA as the generator),
    ``impute_levels`` its sampler. The other parameters are ``TableDiffusion``'s."""

    def __init__(self, columns: Any = None, hidden: int = 128, depth: int = 3, steps: int | None = None,
                 epochs: int = 1000, batch_size: int = 256, lr: float = 1e-3, ema: float = 0.999, n_levels: int = 32,
                 label_dropout: float = 0.1, guidance: float = 0.0, ode_steps: int = 50, random_state: Any = 0,
                 draws: int = 10, impute_epochs: int = 1000, impute_levels: int = 32) -> None:
        super().__init__(columns, hidden, depth, steps, epochs, batch_size, lr, ema, n_levels, label_dropout,
                         guidance, ode_steps, random_state)
        self.draws = draws
        self.impute_epochs = impute_epochs
        self.impute_levels = impute_levels

    def fit(self, X: Any, y: Any = None) -> TableImputer:
        """Learn the table X (the generator with its missing cells left out of the loss, and the
        conditional denoiser); ``y`` is ignored."""
        for name in ("draws", "impute_epochs", "impute_levels"):
            _int(name, getattr(self, name))
        super().fit(X, None)
        return self.fit_imputer(X)

    def imputer_training_steps(self, n_rows: int) -> int:
        """The conditional denoiser's training steps on ``n_rows`` rows: ceil(impute_epochs n /
        batch_size); ConfigError for an invalid setting."""
        self._check_params()
        return steps_for_epochs(n_rows, _int("impute_epochs", self.impute_epochs), self.batch_size)

    def fit_imputer(self, X: Any) -> TableImputer:
        """Train only the conditional denoiser on X (the columns of the fitted generator). Returns self."""
        t = self._table(X)
        z = encode(self.schema_, t)
        steps = self.imputer_training_steps(t.n_rows)
        self.imputer_ = fit_imputer_model(z, dequantization(self.schema_), self.hidden, self.depth, steps,
                                          self.batch_size, self.lr, self.ema, _seed(self.random_state))
        return self

    def _completions(self, t: Table, draws: int | None, random_state: Any, antithetic: bool = False) -> list[Table]:
        check_is_fitted(self, "imputer_")
        m = _int("draws", self.draws if draws is None else draws)
        seed = _seed(self.random_state if random_state is None else random_state)
        zs = impute_encoded(self.imputer_, encode(self.schema_, t), m, self.impute_levels, seed, antithetic)
        return [keep_observed(t, decode(self.schema_, z)) for z in zs]

    def fill(self, X: Any, draws: int | None = None, random_state: Any = None) -> Any:
        """X with every missing cell filled by the aggregate of ``draws`` (default: the parameter)
        completions drawn in antithetic pairs (``impute_encoded``), in X's type."""
        t = self._table(X)
        return _like(X, keep_observed(t, aggregate_draws(self.schema_, self._completions(t, draws, random_state,
                                                                                          True))))

    def impute_draws(self, X: Any, draws: int | None = None, random_state: Any = None) -> list[Any]:
        """``draws`` (default: the parameter) completions of X, each in X's type: multiple imputation."""
        return [_like(X, o) for o in self._completions(self._table(X), draws, random_state)]

    def transform(self, X: Any) -> Any:
        """X with every missing cell filled (the aggregate of ``draws`` completions in antithetic pairs:
        ``fill``), in X's type."""
        return self.fill(X)


def _like(X: Any, t: Table) -> Any:
    """``t`` in the type of the input ``X`` (``like_input``, with X's dtypes for a DataFrame)."""
    return like_input(t, input_kind(X), getattr(X, "dtypes", None))


def keep_observed(t: Table, filled: Table) -> Table:
    """``t`` with its missing cells taken from ``filled``."""
    miss = t.missing()
    cols = []
    for j, (a, b) in enumerate(zip(t.columns, filled.columns, strict=True)):
        if a.dtype == object or b.dtype == object:
            c = np.empty(t.n_rows, dtype=object)
            c[:] = [b[i] if miss[i, j] else a[i] for i in range(t.n_rows)]
            cols.append(c)
        else:
            cols.append(np.where(miss[:, j], b, a))
    return Table(t.names, tuple(cols))
