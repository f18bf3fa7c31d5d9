"""Validation on what users judge a potential by: ω_max, S, F and C_V of the validation records.

The Hessian MAE does not weight the soft modes that the entropy depends on (fine-tuning
nequix-mp-1 on Si mp-149 lowers it while S gets worse), so training also runs the phonon
evaluator on the validation records: the `exact` protocol (analytic force constants from HVPs,
symfc-symmetrised) at the records' own geometry, no relaxation, against their DFT force
constants with the same phonopy settings; errors at 300 K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phonon_eval.phonons import PhononSettings, evaluate_material
from phonon_eval.potential import Potential
from phonon_eval.records import Record

__all__ = ["PROPERTY_METRICS", "RATIO", "property_errors", "property_ratio"]

PROPERTY_METRICS = {
    "val_omega_max_mae": ("omega_max", "THz"),
    "val_entropy_mae": ("entropy", "J/K/mol"),
    "val_free_energy_mae": ("free_energy", "kJ/mol"),
    "val_heat_capacity_mae": ("heat_capacity", "J/K/mol"),
}
"""Metric name -> (result row field, unit); MAE over the validation records at 300 K."""

RATIO = "val_property_ratio"
"""The largest ratio of a property MAE to the starting model's: at most 1 means no property got
worse (select by it to keep the best checkpoint that makes nothing worse)."""


def property_errors(potential: Potential, records: Sequence[Record], settings: PhononSettings | None = None) -> dict[str, float]:
    """MAE of ω_max (THz), S, C_V (J/K/mol) and F (kJ/mol) at 300 K over `records`."""
    settings = settings or PhononSettings.from_protocol("exact", relax=False)
    t300 = list(settings.temperatures).index(300.0)
    errors: dict[str, list[float]] = {name: [] for name in PROPERTY_METRICS}
    for record in records:
        row = evaluate_material(potential, record, settings)
        for name, (field, _) in PROPERTY_METRICS.items():
            ours, ref = np.atleast_1d(row[field]), np.atleast_1d(row[f"{field}_ref"])
            k = t300 if ours.size > 1 else 0
            errors[name].append(abs(float(ours[k]) - float(ref[k])))
    return {name: float(np.mean(v)) if v else float("nan") for name, v in errors.items()}


def property_ratio(metrics: dict[str, float], start: dict[str, float]) -> float:
    """max over the properties of MAE / MAE of the starting model (NaN if either lacks them)."""
    ratios = [metrics[name] / start[name] for name in PROPERTY_METRICS if name in metrics and name in start and start[name] > 0]
    return float(max(ratios)) if ratios else float("nan")
