"""Phonon and thermal-conductivity evaluation of machine-learned interatomic potentials.

The names below are imported on first use (PEP 562), so that `import phonon_eval` and the
commands that only read records (`pft-eval data`) do not pay for starting JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> submodule. `force_constants` (the function) is not here: the submodule of the same
# name would replace it as an attribute of this package whenever it is imported first.
_EXPORTS = {
    "analytic_force_constants": "force_constants",
    "AseCalculator": "provider",
    "as_provider": "provider",
    "EnergyFunction": "provider",
    "ForceError": "provider",
    "ForceProvider": "provider",
    "HarmonicModel": "provider",
    "JaxPotential": "provider",
    "ProviderError": "provider",
    "run_kappa": "kappa_results",
    "run_phonons": "results",
    "batched_forces": "potential",
    "build_graph": "graph",
    "CheckpointError": "checkpoint",
    "ColumnSet": "symmetry",
    "convert": "checkpoint",
    "enable_compile_cache": "compile_cache",
    "Dataset": "datasets",
    "DatasetError": "datasets",
    "energy_forces_stress": "potential",
    "evaluate_material": "phonons",
    "finite_force_constants": "force_constants",
    "Graph": "graph",
    "hessian": "potential",
    "hessian_columns": "potential",
    "hessian_vector_product": "potential",
    "load_potential": "checkpoint",
    "material": "access",
    "MaterialNotFoundError": "access",
    "Nequix": "nequix",
    "NequixConfig": "nequix",
    "PhononSettings": "phonons",
    "Potential": "potential",
    "read_record": "records",
    "Record": "records",
    "RecordError": "records",
    "save_potential": "checkpoint",
    "StructureError": "graph",
    "SupercellSymmetry": "symmetry",
    "symmetrize_translational": "symmetry",
    "SymmetryError": "symmetry",
    "total_energy": "potential",
    "UnknownElementError": "potential",
    "write_record": "records",
}

__all__ = ["__version__", *sorted(_EXPORTS, key=str.lower)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'phonon_eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"phonon_eval.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and editors, which do not run __getattr__
    from phonon_eval.access import MaterialNotFoundError, material
    from phonon_eval.checkpoint import CheckpointError, convert, load_potential, save_potential
    from phonon_eval.compile_cache import enable_compile_cache
    from phonon_eval.datasets import Dataset, DatasetError
    from phonon_eval.force_constants import analytic_force_constants, finite_force_constants
    from phonon_eval.graph import Graph, StructureError, build_graph
    from phonon_eval.kappa_results import run_kappa
    from phonon_eval.nequix import Nequix, NequixConfig
    from phonon_eval.phonons import PhononSettings, evaluate_material
    from phonon_eval.potential import (
        Potential,
        UnknownElementError,
        batched_forces,
        energy_forces_stress,
        hessian,
        hessian_columns,
        hessian_vector_product,
        total_energy,
    )
    from phonon_eval.provider import (
        AseCalculator,
        EnergyFunction,
        ForceError,
        ForceProvider,
        HarmonicModel,
        JaxPotential,
        ProviderError,
        as_provider,
    )
    from phonon_eval.records import Record, RecordError, read_record, write_record
    from phonon_eval.results import run_phonons
    from phonon_eval.symmetry import ColumnSet, SupercellSymmetry, SymmetryError, symmetrize_translational
