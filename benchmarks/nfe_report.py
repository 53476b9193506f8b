"""The tables, the default-sampler decision and the targets of ``benchmarks.nfe_quality``.

Every function takes the payload that benchmark writes as JSON ({"meta", "baselines",
"digits_reference", "subjects", "rows"}), so the report can be rebuilt from
benchmarks/results/nfe_quality.json without sampling again (``python -m benchmarks.nfe_report``).

Definitions used throughout:

* the quality at a budget B of a sampler = its run with the most evaluations not above B (the
  fixed-step samplers have one run per budget; the adaptive ODE is placed by its counted NFE);
* a sampler *reaches* the bar at the fewest evaluations of a run that meets it, when its next run
  (more evaluations) meets it too;
* the default of a model kind: among the samplers ``scorematch sample`` accepts for it, the one
  whose worst case over the two toys (the larger of its reach counts) is smallest; ties go to the
  lower mean MMD^2 at the budget below (the faster to converge), then at the reach; its default
  steps: those of that worst case, raised where the digits model of that kind needs more to come
  within ``DIGITS_SLACK`` of the sampler's own best min(precision, recall) there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

OLD = ("annealed", "annealed_eps5", "euler_maruyama", "reverse_diffusion", "pc", "ode")
NEW = ("heun", "euler", "euler_ancestral", "ddim", "dpm_solver", "dpm_solver_3m", "continuous_langevin",
       "dpmpp_2m_sde", "dpmpp_3m_sde", "dpm_adaptive", "restart")
LEVELS = ("euler_levels", "heun_levels", "euler_ancestral_levels", "dpm_solver_levels")
ORDER = (*OLD, *NEW, "heun_ncsn", "dpm_solver_ncsn", *LEVELS)
#: the samplers run at a ladder of tolerances (their setting), not of budgets; the adaptive DPM-Solver's ladder of
#: rtol on the toys and on the digits (atol at its default, 0.0078)
TOLERANCED = ("ode", "dpm_adaptive")
ADAPTIVE_RTOLS = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005)
DIGITS_ADAPTIVE_RTOLS = (0.1, 0.05, 0.01)
DETERMINISTIC = ("ode", "heun", "euler", "dpm_solver", "dpm_solver_3m", "dpm_adaptive")
STOCHASTIC = ("annealed", "annealed_eps5", "euler_maruyama", "reverse_diffusion", "pc", "euler_ancestral",
              "dpmpp_2m_sde", "dpmpp_3m_sde", "restart")
#: the samplers ``scorematch sample`` offers a model of each conditioning
CANDIDATES = {
    "sigma": ("annealed", "euler_maruyama", "reverse_diffusion", "pc", "ode", *NEW),
    "time": ("euler_maruyama", "reverse_diffusion", "pc", "ode", *NEW),
}
KIND_CONDITIONING = {"ncsn": "sigma", "edm": "sigma", "ve": "time", "vp": "time", "subvp": "time"}


def new_samplers(model: str) -> tuple[str, ...]:
    """The denoising samplers as ``scorematch sample`` runs them on a model: on an NCSN model
    without --n-steps they step through its own levels (the ``_levels`` runs), or over Karras levels."""
    return (*NEW, *LEVELS) if model == "ncsn" else NEW


def candidates(kind: str) -> tuple[str, ...]:
    """The samplers ``scorematch sample`` offers a model of ``kind``, as it runs them."""
    return (*CANDIDATES[KIND_CONDITIONING[kind]], *(LEVELS if kind == "ncsn" else ()))
KIND_NAMES = {"ncsn": "NCSN (noise-conditional)", "ve": "VE SDE", "vp": "VP SDE", "subvp": "sub-VP SDE",
              "edm": "EDM (preconditioned)"}
TOYS = ("gmm2d", "imbalanced")
#: a digits run within this of its sampler's best min(precision, recall) counts as converged
DIGITS_SLACK = 0.05
#: the new sampler is "no worse" at a budget when its MMD^2 is at most the old one's plus this
#: many standard deviations of the sample-vs-sample MMD^2
NOISE_SDS = 3.0

Row = dict[str, Any]


def runs_of(rows: list[Row], data: str, model: str, kind: str) -> list[Row]:
    return sorted((r for r in rows if (r["data"], r["model"], r["sampler"]) == (data, model, kind)),
                  key=lambda r: r["nfe"])


def at_budget(rows: list[Row], data: str, model: str, kind: str, budget: int) -> Row | None:
    """The run of ``kind`` with the most evaluations not above ``budget`` (None: every run costs more)."""
    fit = [r for r in runs_of(rows, data, model, kind) if r["nfe"] <= budget]
    return fit[-1] if fit else None


def reach(rows: list[Row], data: str, model: str, kind: str) -> Row | None:
    """The cheapest run of ``kind`` that meets the bar and whose next run (more evaluations) meets it too,
    or is the last: one run can meet it by chance between runs that do not."""
    runs = runs_of(rows, data, model, kind)
    for i, r in enumerate(runs):
        if r.get("good") and (i + 1 == len(runs) or runs[i + 1].get("good")):
            return r
    return None


def _mmd(r: Row | None) -> float:
    return math.inf if r is None or not math.isfinite(r["mmd2"]) else r["mmd2"]


def subjects_of(rows: list[Row], toy_only: bool = True) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in rows:
        key = (r["data"], r["model"])
        if key not in seen and (not toy_only or "mmd2" in r):
            seen.append(key)
    return seen


def kinds_of(rows: list[Row], data: str, model: str) -> list[str]:
    present = {r["sampler"] for r in rows if (r["data"], r["model"]) == (data, model)}
    return [k for k in ORDER if k in present]


def fastest(rows: list[Row], data: str, model: str, kinds: tuple[str, ...]) -> tuple[str, Row | None]:
    """The sampler of ``kinds`` that reaches the bar with the fewest evaluations (ties: the lower MMD^2
    there; none reaches: the lowest MMD^2 at the largest budget)."""
    present = [k for k in kinds if runs_of(rows, data, model, k)]

    def key(k: str) -> tuple[float, float]:
        r = reach(rows, data, model, k)
        if r is not None:
            return r["nfe"], r["mmd2"]
        return math.inf, _mmd(runs_of(rows, data, model, k)[-1])

    best = min(present, key=key)
    return best, reach(rows, data, model, best)


# --------------------------------------------------------------------------- decision


def digits_q(r: Row) -> float:
    """The digits quality of a run: min(precision, recall), high only when samples are both realistic
    and cover the held-out digits (noise-like samples score recall 1 and precision 0)."""
    return min(r["precision"], r["recall"]) if math.isfinite(r["precision"]) else -math.inf


def digits_check(rows: list[Row], kind: str, sampler: str) -> dict[str, Any] | None:
    """On the digits model of ``kind``: the cheapest run of ``sampler`` within DIGITS_SLACK of its own
    best min(precision, recall), and the best sampler at that budget (None: no such model)."""
    own = runs_of(rows, "digits", kind, sampler)
    if not own:
        return None
    top = max(digits_q(r) for r in own)
    first = next(r for r in own if digits_q(r) >= top - DIGITS_SLACK)
    rivals = [(k, at_budget(rows, "digits", kind, k, first["budget"])) for k in candidates(kind)]
    rivals = [(k, r) for k, r in rivals if r is not None]
    best_k, best_r = max(rivals, key=lambda kr: digits_q(kr[1]))
    return {"row": first, "own_best": top, "rival": best_k, "rival_precision": best_r["precision"],
            "rival_recall": best_r["recall"], "rival_nfe": best_r["nfe"]}


def _below(rows: list[Row], data: str, model: str, kind: str, nfe: float) -> int | None:
    """The largest budget of ``kind``'s ladder below ``nfe``."""
    lower = [r["budget"] for r in runs_of(rows, data, model, kind) if r["budget"] < nfe]
    return max(lower) if lower else None


def _mean_mmd(rows: list[Row], toys: list[str], kind: str, sampler: str, budget: float | None) -> float:
    if budget is None or not math.isfinite(budget):
        return math.inf
    return sum(_mmd(at_budget(rows, t, kind, sampler, budget)) for t in toys) / len(toys)


def decide(rows: list[Row], kind: str) -> dict[str, Any] | None:
    """The default sampler and steps of model kind ``kind`` (see the module docstring)."""
    toys = [t for t in TOYS if any((r["data"], r["model"]) == (t, kind) for r in rows)]
    if not toys:
        return None
    scores = []
    for s in candidates(kind):
        if not all(runs_of(rows, t, kind, s) for t in toys):
            continue
        reached = [reach(rows, t, kind, s) for t in toys]
        worst = max(math.inf if r is None else r["nfe"] for r in reached)
        if math.isfinite(worst):
            below = max((b for b in (_below(rows, t, kind, s, worst) for t in toys) if b is not None), default=None)
            key = (worst, _mean_mmd(rows, toys, kind, s, below), _mean_mmd(rows, toys, kind, s, worst))
        else:  # reaches nowhere: its best mean MMD^2 over the budgets
            budgets = {r["budget"] for t in toys for r in runs_of(rows, t, kind, s)}
            key = (worst, min(_mean_mmd(rows, toys, kind, s, b) for b in budgets), 0.0)
        scores.append((key, s, reached))
    scores.sort(key=lambda v: v[0])
    (worst, *_), sampler, reached = scores[0]

    def nfes(reached: list[Row | None]) -> dict[str, int | None]:
        return dict(zip(toys, [None if r is None else r["nfe"] for r in reached], strict=True))

    deciding = max((r for r in reached if r is not None), key=lambda r: r["nfe"], default=None)
    out: dict[str, Any] = {"kind": kind, "sampler": sampler, "toy_reach": nfes(reached),
                           "reached": math.isfinite(worst),
                           "runner_up": (None if len(scores) < 2
                                         else {"sampler": scores[1][1], "toy_reach": nfes(scores[1][2])}),
                           "steps": None, "nfe": None, "from": None, "label": None}
    # a tolerance sampler's setting is its tolerance (steps None): it is ranked by its evaluations
    toleranced = sampler in TOLERANCED

    def take(r: Row, data: str) -> None:
        out.update(steps=None if toleranced else int(r["setting"]), setting=r["setting"], nfe=r["nfe"],
                   label=r["label"], **{"from": data})

    if deciding is not None:
        take(deciding, deciding["data"])
    dig = digits_check(rows, kind, sampler)
    if dig is not None:
        first = dig.pop("row")
        out["digits"] = {"steps": None if toleranced else int(first["setting"]), "setting": first["setting"],
                         "nfe": first["nfe"], "label": first["label"], "precision": first["precision"],
                         "recall": first["recall"], **dig}
        if out["nfe"] is None or ((first["nfe"] > out["nfe"]) if toleranced
                                  else int(first["setting"]) > out["steps"]):
            take(first, "digits")
    return out


def decisions(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = payload["rows"]
    return [d for d in (decide(rows, k) for k in KIND_NAMES) if d is not None]


# --------------------------------------------------------------------------- targets


def targets(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Per trained toy model: the best new sampler against annealed Langevin (at most 1/20 of its
    evaluations to the bar) and against the fastest older sampler (no worse at any budget)."""
    rows, out = payload["rows"], []
    for data, model in subjects_of(rows):
        if model == "analytic":
            continue
        sd = payload["baselines"][data]["sd"]
        new, new_reach = fastest(rows, data, model, new_samplers(model))
        ann = [r for r in (reach(rows, data, model, k) for k in ("annealed", "annealed_eps5")) if r is not None]
        ann_reach = min((r["nfe"] for r in ann), default=None)
        ann_max = max((r["nfe"] for k in ("annealed", "annealed_eps5") for r in runs_of(rows, data, model, k)),
                      default=None)
        old, old_reach = fastest(rows, data, model, OLD)
        budgets = sorted({r["budget"] for r in rows if (r["data"], r["model"]) == (data, model)
                          and r["sampler"] in new_samplers(model)})
        per_budget, worse = [], []
        for b in budgets:
            rn, ro = at_budget(rows, data, model, new, b), at_budget(rows, data, model, old, b)
            per_budget.append({"budget": b, "new_mmd2": None if rn is None else rn["mmd2"],
                               "old_mmd2": None if ro is None else ro["mmd2"],
                               "old_nfe": None if ro is None else ro["nfe"],
                               "both_good": bool(rn and ro and rn["good"] and ro["good"])})
            if rn is not None and ro is not None and _mmd(rn) > _mmd(ro) + NOISE_SDS * sd:
                worse.append(b)
        if new_reach is None:
            ratio_met = False
        elif ann_reach is not None:
            ratio_met = 20 * new_reach["nfe"] <= ann_reach
        else:
            ratio_met = ann_max is not None and 20 * new_reach["nfe"] <= ann_max
        out.append({"data": data, "model": model, "best_new": new,
                    "best_new_reach": None if new_reach is None else new_reach["nfe"],
                    "annealed_reach": ann_reach, "annealed_max_nfe": ann_max, "ratio_met": ratio_met,
                    "fastest_old": old, "fastest_old_reach": None if old_reach is None else old_reach["nfe"],
                    "tolerance": NOISE_SDS * sd, "per_budget": per_budget, "worse_at": worse,
                    "budget_met": not worse})
    return out


# --------------------------------------------------------------------------- markdown


def _e3(v: float | None) -> str:
    return "" if v is None else ("nan" if not math.isfinite(v) else f"{1e3 * v:.2f}")


def _reach_text(reached: dict[str, int | None]) -> str:
    return ", ".join(f"{t} {'not reached' if v is None else v}" for t, v in reached.items())


def decision_table(payload: dict[str, Any]) -> list[str]:
    lines = ["| model kind | default sampler | steps | score evaluations | toys: evaluations to the bar "
             "(next best) | digits: precision / recall there (best sampler at that budget) |",
             "|---|---|---|---:|---|---|"]
    for d in payload["decisions"]:
        runner = d["runner_up"]
        toys = _reach_text(d["toy_reach"])
        if runner is not None:
            toys += f" ({runner['sampler']}: {_reach_text(runner['toy_reach'])})"
        if not d["reached"]:
            toys += "; no sampler reaches the bar on both toys: the lowest MMD^2 decides"
        dig = d.get("digits")
        digits = "not measured"
        if dig is not None:
            digits = (f"{dig['precision']:.2f} / {dig['recall']:.2f} at {dig['nfe']} ({dig['label']}; its best "
                      f"min(P, R) {dig['own_best']:.2f}); {dig['rival']} {dig['rival_precision']:.2f} / "
                      f"{dig['rival_recall']:.2f}")
        steps = "" if d["steps"] is None else f"{d['label']} ({d['from']})"
        nfe = "" if d["nfe"] is None else str(d["nfe"])
        lines.append(f"| {KIND_NAMES[d['kind']]} | {d['sampler']} | {steps} | {nfe} | {toys} | {digits} |")
    lines.append("| unconditional (DSM, SSM, ISM, ESM) | langevin (unchanged) | | | no noise levels: not measured "
                 "here | |")
    return lines


def target_lines(payload: dict[str, Any]) -> list[str]:
    out = []
    for t in payload["targets"]:
        new = (f"{t['best_new']} reaches the bar at {t['best_new_reach']}" if t["best_new_reach"] is not None
               else f"no new sampler reaches the bar (closest: {t['best_new']})")
        if t["annealed_reach"] is not None:
            ann = f"annealed Langevin at {t['annealed_reach']}"
        else:
            ann = f"annealed Langevin not within {t['annealed_max_nfe']}"
        ratio = "met" if t["ratio_met"] else "missed"
        if t["worse_at"]:
            bad = [p for p in t["per_budget"] if p["budget"] in t["worse_at"]]
            detail = ", ".join(f"{p['budget']}: {_e3(p['new_mmd2'])} against {_e3(p['old_mmd2'])}"
                               + (" (both meet the bar)" if p["both_good"] else "") for p in bad)
            budget = f"missed at {detail}"
        else:
            budget = "met at every budget"
        out.append(f"- {t['data']}, {t['model']}: {new}, {ann} (1/20: {ratio}); against {t['fastest_old']} "
                   f"(the fastest older sampler, {_fmt_reach_n(t['fastest_old_reach'])}): {budget} "
                   f"(MMD^2 x 1e3, tolerance {_e3(t['tolerance'])})")
    return out


def notes(payload: dict[str, Any]) -> list[str]:
    """What holds across the tables, with this run's numbers."""
    rows, out = payload["rows"], []
    for data in TOYS:
        pairs = [(r, at_budget(rows, data, "analytic", "euler", r["budget"]))
                 for r in runs_of(rows, data, "analytic", "ddim")]
        diffs = [abs(a["mmd2"] - b["mmd2"]) for a, b in pairs if b is not None and b["nfe"] == a["nfe"]]
        if diffs:
            out.append(f"- {data}, exact score: ddim (eta = 0) and euler agree at every budget (largest MMD^2 "
                       f"difference {max(diffs):.1e}); in the VE view they are the same update, so the trained "
                       "models run euler only.")
    trained = [s for s in subjects_of(rows) if s[1] != "analytic"]
    kinds = [k for k in ORDER if any(runs_of(rows, d, m, k) for d, m in trained)]
    never = [k for k in kinds if all(reach(rows, d, m, k) is None for d, m in trained)]
    if never:
        out.append(f"- Reached the bar on no trained model: {', '.join(never)}.")
    stuck = [f"{d}, {m}" for d, m in subjects_of(rows) if not any(reach(rows, d, m, k) for k in kinds_of(rows, d, m))]
    if stuck:
        out.append(f"- No sampler reached the bar on: {'; '.join(stuck)}.")
    for data in TOYS:
        levels = {k: runs_of(rows, data, "ncsn", k) for k in LEVELS}
        karras = runs_of(rows, data, "ncsn", "euler")
        if all(levels.values()) and karras:
            cells = ", ".join(f"{k.removesuffix('_levels')} {_e3(v[0]['mmd2'])} (mode error {v[0]['mode_error']:.3f})"
                              for k, v in levels.items())
            last = karras[-1]
            out.append(f"- {data}, NCSN: the denoising samplers over exactly the model's "
                       f"{levels['euler_levels'][0]['setting']} training levels (then 0): MMD^2 x 1e3 {cells}; euler "
                       f"over {last['setting']} Karras levels {_e3(last['mmd2'])} (mode error "
                       f"{last['mode_error']:.3f}): between its levels the noise-conditional network was never "
                       "trained.")
    for model in dict.fromkeys(r["model"] for r in rows if r["data"] == "digits"):
        det, sto = (max((r for k in kinds for r in runs_of(rows, "digits", model, k)), key=digits_q, default=None)
                    for kinds in (DETERMINISTIC, STOCHASTIC))
        if det is not None and sto is not None:
            out.append(f"- digits, {model}: best precision / recall of a deterministic sampler "
                       f"{det['precision']:.2f} / {det['recall']:.2f} ({det['sampler']}, {det['nfe']} evaluations), "
                       f"of a stochastic one {sto['precision']:.2f} / {sto['recall']:.2f} ({sto['sampler']}, "
                       f"{sto['nfe']}).")
    return out


def _fmt_reach_n(v: int | None) -> str:
    return "not reached" if v is None else str(v)


def summary(payload: dict[str, Any]) -> str:
    """The block of docs/benchmarks.md: the decision, the fewest-evaluations table, the targets."""
    from benchmarks import nfe_tables

    meta = payload["meta"]
    n_trained = sum(1 for s in payload["subjects"] if s["model"] != "analytic" and s["data"] != "digits")
    head = (f"Measured {meta['date']} (torch {meta['torch']}, CPU, {meta['threads']} thread(s), "
            f"{meta['cpu_seconds'] / 60:.0f} min of CPU time for the whole benchmark). n = {meta['n']} samples per "
            f"run; the bar: MMD^2 < {meta['mmd_good']:g} (RBF, bandwidth {meta['mmd_bandwidth']:g}) to fresh "
            f"mixture samples and every mode weight within {meta['mode_good']} of the truth. {n_trained} trained "
            f"2-D models ({meta['train_steps']} steps each, scorematch's defaults) and the exact scores.")
    merged = meta.get("merged")
    if merged:
        gaps = ", ".join(f"{k} {v:.1e}" for k, v in merged["largest_difference"].items())
        head += (f" Rerun of {', '.join(merged['rerun'])} on {meta['date']} "
                 f"({merged['rerun_cpu_seconds'] / 60:.0f} min of CPU time, models retrained from the same seeds); "
                 f"the other samplers' rows are those of {merged['older_rows_from']}"
                 + (f": the {merged['compared_runs']} runs measured on both dates agree (largest difference: {gaps})."
                    if merged["compared_runs"] else "."))
    out = [head, "", "**Default sampler of each model kind** (best quality at equal score evaluations):", "",
           *decision_table(payload), "", "**Fewest score evaluations that reach the bar** (budgets "
           f"{', '.join(str(b) for b in meta['budgets'])}"
           + "".join(f"; {k} also {', '.join(str(b) for b in v)}" for k, v in meta["long_budgets"].items())
           + "; the ODE at tolerances 1e-1 to 1e-5; dpm_adaptive at rtol "
           + ", ".join(f"{v:g}" for v in meta.get("adaptive_rtols", ADAPTIVE_RTOLS)) + "):", "",
           *nfe_tables.fewest_table(payload["rows"]), "",
           "**Best sampler at each budget** (its MMD^2 x 1e3, the runner-up in brackets; every sampler's run with the "
           "most evaluations not above the budget):", "",
           *nfe_tables.winners_table(payload["rows"], meta["budgets"]), "",
           *([] if not meta.get("digits_budgets") else [
               "**Best sampler at each budget on the digits** (min(precision, recall), the runner-up in brackets):", "",
               *nfe_tables.winners_table(payload["rows"], meta["digits_budgets"], digits=True), ""]),
           "**Targets** (on each trained model: the best new sampler needs at most 1/20 of annealed Langevin's "
           "evaluations, and is no worse than the fastest older sampler at every budget):", "",
           *target_lines(payload), "", *notes(payload), ""]
    return "\n".join(out)


def markdown(payload: dict[str, Any]) -> str:
    """benchmarks/results/nfe_quality.md: the summary, then every model's sampler x budget table."""
    from benchmarks import nfe_tables

    meta, rows = payload["meta"], payload["rows"]
    out = ["# Sample quality per score evaluation (NFE)", "",
           f"Generated by `benchmarks/nfe_quality.py` ({meta['date']}, torch {meta['torch']}, CPU, "
           f"{meta['threads']} thread(s), {meta['seconds']:.0f} s wall, {meta['cpu_seconds']:.0f} s CPU"
           + (", quick smoke run" if meta["quick"] else "") + ").", "", summary(payload), "## Models", "",
           "| data | score | how | sigma range sampled | NCSN levels (annealed Langevin) | training CPU s |",
           "|---|---|---|---|---|---:|"]
    for s in payload["subjects"]:
        out.append(f"| {s['data']} | {s['model']} | {s['note']} | {s['sigma_min']:.3g} .. {s['sigma_max']:.3g} "
                   f"(start std {s['prior_std']:.3g}) | L = {s['ncsn_levels']}, {s['ncsn_sigma_1']:.3g} .. "
                   f"{s['ncsn_sigma_L']:.3g} | {s['train_seconds']:.0f} |")
    out += ["", "## Quality at each budget", "",
            "MMD^2 x 1e3 of each sampler's run with the most score evaluations not above the budget (bold: meets "
            "the bar; the ODE's and dpm_adaptive's own count in brackets where it differs). Sample-vs-sample "
            "MMD^2 x 1e3: "
            + ", ".join(f"{d} {_e3(b['mean'])} (sd {_e3(b['sd'])})" for d, b in payload["baselines"].items()) + ".",
            ""]
    refused = payload.get("refused") or []
    if refused:
        by: dict[tuple[str, str, str], list[str]] = {}
        for f in refused:
            by.setdefault((f["data"], f["model"], f["sampler"]), []).append(str(f["budget"]))
        out += ["Blank cells below the first run: budgets whose step count the sampler refuses ("
                + "; ".join(f"{d}, {m}, {k} at {', '.join(b)}" for (d, m, k), b in by.items())
                + f"; e.g. \"{refused[0]['error']}\").", ""]
    for data, model in subjects_of(rows):
        budgets = sorted({r["budget"] for r in rows
                          if (r["data"], r["model"]) == (data, model) and r["sampler"] not in TOLERANCED})
        top = max(meta["budgets"])
        out += [f"### {data}, {model}", "", *nfe_tables.budget_table(rows, data, model, budgets, top), ""]
    ref = payload.get("digits_reference")
    if ref:
        out += ["## Digits", "",
                f"Precision / recall (k = 3) against {ref['n']} held-out digits and the mean confidence of a "
                f"logistic-regression classifier fitted on the {ref['n_train']} training digits, for {ref['n']} "
                f"samples per run. Real training digits: {ref['real']['precision']:.2f} / "
                f"{ref['real']['recall']:.2f} / {ref['real']['confidence']:.2f}; uniform noise: "
                f"{ref['noise']['precision']:.2f} / {ref['noise']['recall']:.2f} / "
                f"{ref['noise']['confidence']:.2f}.", ""]
        budgets = meta["digits_budgets"]
        top = max(b for b in budgets if not any(b in v for v in meta["digits_long_budgets"].values()))
        for model in dict.fromkeys(r["model"] for r in rows if r["data"] == "digits"):
            out += [f"### digits, {model}", "", *nfe_tables.digits_table(rows, model, budgets, top), ""]
    return "\n".join(out)


def main() -> None:
    results = Path(__file__).resolve().parent / "results"
    payload = json.loads((results / "nfe_quality.json").read_text())
    payload["decisions"], payload["targets"] = decisions(payload), targets(payload)
    (results / "nfe_quality.json").write_text(json.dumps(payload, indent=1) + "\n")
    (results / "nfe_quality.md").write_text(markdown(payload))
    (results / "nfe_quality_summary.md").write_text(summary(payload))


if __name__ == "__main__":
    main()
