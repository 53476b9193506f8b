"""The tables of ``benchmarks.nfe_report``: per model and sampler the fewest evaluations to the bar,
the quality at each budget (toys and digits), and the best sampler at each budget."""

from __future__ import annotations

from benchmarks.nfe_report import (
    ORDER,
    TOLERANCED,
    Row,
    _e3,
    _fmt_reach_n,
    _mmd,
    at_budget,
    digits_q,
    kinds_of,
    reach,
    runs_of,
    subjects_of,
)


def fewest_table(rows: list[Row]) -> list[str]:
    """Per (data, score): the fewest evaluations at which each sampler reaches the bar."""
    subjects = subjects_of(rows)
    kinds = [k for k in ORDER if any(r["sampler"] == k and "mmd2" in r for r in rows)]
    lines = ["| data | score | " + " | ".join(kinds) + " |", "|---|---|" + "---:|" * len(kinds)]
    for data, model in subjects:
        cells = []
        for k in kinds:
            ran = bool(runs_of(rows, data, model, k))
            r = reach(rows, data, model, k)
            cells.append(_fmt_reach_n(None if r is None else r["nfe"]) if ran else "")
        lines.append(f"| {data} | {model} | " + " | ".join(cells) + " |")
    return lines


def cell_run(rows: list[Row], data: str, model: str, kind: str, budget: int, top: int) -> Row | None:
    """The run a table shows at ``budget``: the fixed-step run made for it; for the ODE and the adaptive
    DPM-Solver their run with the most evaluations not above it, up to the largest budget every sampler
    ran (``top``)."""
    if kind in TOLERANCED:
        return at_budget(rows, data, model, kind, budget) if budget <= top else None
    return next((r for r in runs_of(rows, data, model, kind) if r["budget"] == budget), None)


def budget_table(rows: list[Row], data: str, model: str, budgets: list[int], top: int) -> list[str]:
    """Sampler x budget: MMD^2 x 1e3 of the run at that budget, in bold where it meets the bar."""
    lines = ["| sampler | " + " | ".join(str(b) for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for k in kinds_of(rows, data, model):
        cells = []
        for b in budgets:
            r = cell_run(rows, data, model, k, b, top)
            text = "" if r is None else _e3(r["mmd2"]) + ("" if r["nfe"] == b or k not in TOLERANCED
                                                           else f" ({r['nfe']})")
            cells.append(f"**{text}**" if r is not None and r["good"] else text)
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def digits_table(rows: list[Row], model: str, budgets: list[int], top: int) -> list[str]:
    """Sampler x budget on a digits model: precision / recall / classifier confidence."""
    lines = ["| sampler | " + " | ".join(str(b) for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for k in kinds_of(rows, "digits", model):
        cells = []
        for b in budgets:
            r = cell_run(rows, "digits", model, k, b, top)
            cells.append("" if r is None else f"{r['precision']:.2f} / {r['recall']:.2f} / {r['confidence']:.2f}"
                         + ("" if r["nfe"] == b or k not in TOLERANCED else f" ({r['nfe']})"))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def winner(rows: list[Row], data: str, model: str, budget: int) -> tuple[Row, Row | None] | None:
    """The best run and the runner-up (another sampler) at ``budget`` on one model: the lowest MMD^2 on
    a toy, the highest min(precision, recall) on the digits, over every sampler's run at that budget."""
    runs = [r for r in (at_budget(rows, data, model, k, budget) for k in kinds_of(rows, data, model)) if r is not None]
    if not runs:
        return None
    runs.sort(key=(lambda r: -digits_q(r)) if data == "digits" else _mmd)
    return runs[0], (runs[1] if len(runs) > 1 else None)


def winners_table(rows: list[Row], budgets: list[int], digits: bool = False) -> list[str]:
    """Model x budget: the best sampler at that budget and its quality (MMD^2 x 1e3, or min(precision,
    recall) on the digits), the runner-up in brackets."""
    subjects = [s for s in subjects_of(rows, toy_only=not digits) if (s[0] == "digits") == digits]

    def value(r: Row) -> str:
        return f"{digits_q(r):.2f}" if digits else _e3(r["mmd2"])

    lines = ["| data | score | " + " | ".join(str(b) for b in budgets) + " |", "|---|---|" + "---|" * len(budgets)]
    for data, model in subjects:
        cells = []
        for b in budgets:
            w = winner(rows, data, model, b)
            cells.append("" if w is None else f"{w[0]['sampler']} {value(w[0])}"
                         + ("" if w[1] is None else f" ({w[1]['sampler']} {value(w[1])})"))
        lines.append(f"| {data} | {model} | " + " | ".join(cells) + " |")
    return lines
