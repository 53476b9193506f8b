"""A table schema as JSON: ``schema_to_dict`` / ``schema_from_dict`` for a run's table.json, and
``read_schema_text`` for the column types a user gives in a JSON file."""

from __future__ import annotations

import json
from typing import Any

from scorematch.data.columns import ATOM_KINDS, KINDS, Column, Schema, parse_columns
from scorematch.errors import ConfigError, DataError

__all__ = ["read_schema_text", "schema_from_dict", "schema_to_dict"]


def schema_to_dict(schema: Schema) -> dict[str, Any]:
    """A JSON-ready dict of ``schema`` (read back by ``schema_from_dict``)."""
    cols = []
    for c in schema.columns:
        d: dict[str, Any] = {"name": c.name, "kind": c.kind}
        if c.levels:
            d["levels"] = list(c.levels)
        for key in ("low", "high"):
            if getattr(c, key) is not None:
                d[key] = getattr(c, key)
        if c.kind == "nonnegative":
            d["shift"] = c.shift
        if c.atoms:
            d["atoms"] = list(c.atoms)
        cols.append(d)
    return {"columns": cols, "mean": list(schema.mean), "std": list(schema.std)}


def schema_from_dict(d: Any) -> Schema:
    """The Schema of ``schema_to_dict``'s dict; DataError naming what is wrong otherwise."""
    try:
        cols = []
        for c in d["columns"]:
            if c["kind"] not in KINDS:
                raise DataError(f"unknown column type {c['kind']!r}")
            levels = tuple(v if isinstance(v, str) else float(v) for v in c.get("levels", ()))
            atoms = tuple(float(a) for a in c.get("atoms", ()))
            if atoms and (c["kind"] not in ATOM_KINDS or list(atoms) != sorted(set(atoms))):
                raise DataError(f"column {c['name']!r}: atoms must be increasing, on a column of kind "
                                + ", ".join(ATOM_KINDS))
            cols.append(Column(str(c["name"]), c["kind"], levels, c.get("low"), c.get("high"),
                               float(c.get("shift", 0.0)), atoms))
        schema = Schema(tuple(cols), tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"the table schema is malformed ({type(err).__name__}: {err})") from None
    if len(schema.mean) != schema.dim or len(schema.std) != schema.dim or min(schema.std, default=1) <= 0:
        raise DataError(f"the table schema's mean and std must have {schema.dim} entries, the std positive")
    return schema


def read_schema_text(text: str, source: str = "the schema") -> dict[str, dict[str, Any]]:
    """Column overrides from a JSON text: {"columns": {name: kind, ...}} or {name: kind, ...}."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source} is not JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(d, dict) and isinstance(d.get("columns"), dict):
        d = d["columns"]
    if isinstance(d, dict) and isinstance(d.get("columns"), list):
        d = {c["name"]: c for c in d["columns"] if isinstance(c, dict) and "name" in c}
    return parse_columns(d)
