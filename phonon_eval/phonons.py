"""The phonon evaluator: one record in, model and DFT phonon properties side by side out.

Per material (MDR benchmark protocol, Loew et al. 2025): relax the unit cell with the model,
build phonopy with the record's supercell and primitive matrices, get force constants from the
model, and compute with phonopy exactly what is computed for the DFT force constants with
identical settings: ω_max over the commensurate q-points (and over the mesh), S, F and C_V on a
mesh over a temperature grid, the band structure along one q-path shared by both sides, the
total DOS on one frequency grid, and the lowest frequency.

The model is anything `provider.as_provider` takes (a checkpoint, a `Potential`, an ASE
calculator, a `ForceProvider`): force constants are exact from HVPs where the model has them and
phonopy's finite displacements otherwise. `evaluate_material` is a plain function of (model,
record, settings), so that it runs the same serially or on any worker.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import phonopy
from phonopy.harmonic.dynmat_to_fc import get_commensurate_points
from phonopy.phonon.band_structure import get_band_qpoints_by_seekpath

from phonon_eval.force_constants import METHODS, force_constants, resolve_method
from phonon_eval.provenance import settings_attrs
from phonon_eval.provider import ForceProvider, ModelLike, as_provider
from phonon_eval.records import Record, phonopy_from_ase
from phonon_eval.relax import relax
from phonon_eval.units import THZ_TO_K

__all__ = ["PhononSettings", "THZ_TO_K", "band_path", "compare", "evaluate_material", "model_phonopy", "phonon_properties"]


@dataclasses.dataclass(frozen=True)
class PhononSettings:
    """Everything that decides the numbers; recorded in the results' attributes.

    Attributes:
        relax: relax the unit cell with the model first.
        relax_cell: relax the cell as well as the positions.
        fmax: force threshold of the relaxation, eV/Å.
        relax_steps: step budget of the relaxation.
        fc_method: "analytic" (symmetry-reduced HVPs), "finite" (phonopy displacements), or
            "auto": analytic where the model has HVPs (JAX models), finite otherwise.
        displacement: finite-displacement amplitude, Å.
        symmetrize_fc: enforce the acoustic sum rule on the model's force constants.
        mesh: q-point mesh for thermal properties, ω_max over the mesh and the DOS.
        temperatures: temperature grid, K (300 K is where the metrics are taken).
        band_points: q-points per band-path segment (phonopy's const-interval sampling).
        dos_pitch: frequency step of the DOS grid, THz.
        stability_tolerance: a lowest mesh frequency below -tolerance (THz) marks an instability.
    """

    relax: bool = True
    relax_cell: bool = True
    fmax: float = 0.005
    relax_steps: int = 500
    fc_method: str = "auto"
    displacement: float = 0.01
    symmetrize_fc: bool = False
    mesh: tuple[int, int, int] = (20, 20, 20)
    temperatures: tuple[float, ...] = tuple(float(t) for t in range(0, 1001, 50))
    band_points: int = 51
    dos_pitch: float = 0.1
    stability_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.fc_method not in METHODS:
            raise ValueError(f"fc_method must be one of {', '.join(METHODS)}, got {self.fc_method!r}")
        if 300.0 not in self.temperatures:
            raise ValueError("temperatures must include 300 K, where the metrics are taken")
        if len(self.mesh) != 3 or min(self.mesh) < 1:
            raise ValueError(f"mesh must be three positive integers, got {self.mesh}")

    def as_attrs(self) -> dict[str, Any]:
        """Flat netCDF-friendly attributes, prefixed `setting_`."""
        return settings_attrs(self)

    def for_model(self, provider: ForceProvider) -> PhononSettings:
        """These settings with `fc_method` resolved for `provider` ("auto" becomes what is used).

        Raises:
            ProviderError: "analytic" for a model without Hessian-vector products.
        """
        return dataclasses.replace(self, fc_method=resolve_method(provider, self.fc_method))


def band_path(phonon: phonopy.Phonopy, points: int) -> tuple[list[np.ndarray], list[str], list[bool]]:
    """Standard q-path of the primitive cell (seekpath through phonopy), in reduced coordinates."""
    return get_band_qpoints_by_seekpath(phonon.primitive, points, is_const_interval=True)


def _commensurate_points(phonon: phonopy.Phonopy) -> np.ndarray:
    smat = np.linalg.inv(phonon.primitive_matrix) @ phonon.supercell_matrix
    return get_commensurate_points(np.rint(smat).astype(int))


def phonon_properties(
    phonon: phonopy.Phonopy,
    settings: PhononSettings,
    path: tuple[list[np.ndarray], list[str], list[bool]],
) -> dict[str, Any]:
    """Everything phonopy gives for force constants already set on `phonon`.

    Returns:
        dict of omega_max (commensurate, THz), omega_max_mesh, min_frequency (THz),
        temperature-resolved entropy (J/K/mol), free_energy (kJ/mol), heat_capacity (J/K/mol),
        band distances (1/Å) and frequencies (P, n_bands) in THz, and the mesh frequencies.
    """
    phonon.run_qpoints(_commensurate_points(phonon))
    commensurate = phonon.qpoints.frequencies
    _run_mesh(phonon, settings)
    mesh = phonon.mesh
    phonon.run_thermal_properties(temperatures=np.asarray(settings.temperatures))
    tp = phonon.thermal_properties
    qpoints, labels, connections = path
    phonon.run_band_structure(qpoints, path_connections=connections, labels=labels)
    bands = phonon.band_structure
    return {
        "omega_max": float(commensurate.max()),
        "omega_max_mesh": float(mesh.frequencies.max()),
        "min_frequency": float(mesh.frequencies.min()),
        "entropy": np.asarray(tp.entropy, dtype=float),
        "free_energy": np.asarray(tp.free_energy, dtype=float),
        "heat_capacity": np.asarray(tp.heat_capacity, dtype=float),
        "band_distance": np.concatenate(bands.distances),
        "band_frequency": np.concatenate(bands.frequencies),
        "mesh_frequencies": np.asarray(mesh.frequencies),
        "mesh_weights": np.asarray(mesh.weights),
    }


def _run_mesh(phonon: phonopy.Phonopy, settings: PhononSettings) -> None:
    with warnings.catch_warnings():
        # phonopy's default shifted even mesh drops point-group reduction and says so; the
        # numbers are the same, only slower, and MDR's reference values use this mesh
        warnings.simplefilter("ignore", category=RuntimeWarning)
        phonon.run_mesh(list(settings.mesh), with_eigenvectors=False, is_mesh_symmetry=True)


def _dos(phonon: phonopy.Phonopy, grid: np.ndarray, settings: PhononSettings) -> np.ndarray:
    _run_mesh(phonon, settings)
    phonon.run_total_dos(freq_min=grid[0], freq_max=grid[-1], freq_pitch=settings.dos_pitch)
    dos = phonon.total_dos
    return np.interp(grid, dos.frequency_points, dos.dos)


def _path_labels(path: tuple[list[np.ndarray], list[str], list[bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Per path point: its segment index and its high-symmetry label ('' between the ends)."""
    qpoints, labels, connections = path
    segment = np.concatenate([np.full(len(q), i) for i, q in enumerate(qpoints)])
    names = [""] * len(segment)
    start, k = 0, 0
    for i, q in enumerate(qpoints):
        names[start] = labels[k]
        names[start + len(q) - 1] = labels[k + 1]
        # connected segments share their end label with the next start; a break starts a new pair
        k += 1 if connections[i] else 2
        start += len(q)
    return segment, np.asarray(names, dtype=object)


def model_phonopy(
    provider: ForceProvider, record: Record, settings: PhononSettings = PhononSettings()
) -> tuple[phonopy.Phonopy, dict[str, Any]]:
    """Relax the record's unit cell with the model and set the model's force constants.

    Returns:
        phonopy with the record's supercell and primitive matrices (and its NAC parameters, so that
        both sides share every setting), and facts about how it was made.
    """
    t0 = time.perf_counter()
    provider.check_elements(record.unitcell.numbers)  # fail early, naming the unknown element
    unitcell, steps = record.unitcell, 0
    if settings.relax:
        relaxed = relax(
            provider, unitcell, fmax=settings.fmax, steps=settings.relax_steps, relax_cell=settings.relax_cell
        )
        if not relaxed.converged:
            raise RuntimeError(
                f"relaxation not converged: fmax {relaxed.fmax:.4f} eV/Å after {relaxed.steps} steps"
            )
        unitcell, steps = relaxed.atoms, relaxed.steps
    t1 = time.perf_counter()
    model = phonopy.Phonopy(
        phonopy_from_ase(unitcell),
        supercell_matrix=record.supercell_matrix,
        primitive_matrix=record.phonopy_primitive_matrix,
    )
    model.nac_params = record.nac_params
    method, n = force_constants(
        provider, model, settings.fc_method, distance=settings.displacement, symmetrize=settings.symmetrize_fc
    )
    info = {
        "fc_method": method,
        "volume": float(unitcell.get_volume()),
        "relax_steps": steps,
        "n_fc_evaluations": n,
        "time_relax": t1 - t0,
        "time_fc": time.perf_counter() - t1,
    }
    return model, info


def compare(
    model: phonopy.Phonopy, reference: phonopy.Phonopy, record: Record, settings: PhononSettings = PhononSettings()
) -> dict[str, Any]:
    """Phonon properties of two phonopy objects with force constants, side by side, as a result row.

    The band path is the reference primitive cell's, used in reduced coordinates for both.
    """
    t0 = time.perf_counter()
    path = band_path(reference, settings.band_points)
    ours = phonon_properties(model, settings, path)
    ref = phonon_properties(reference, settings, path)
    top = max(ours["omega_max_mesh"], ref["omega_max_mesh"])
    bottom = min(ours["min_frequency"], ref["min_frequency"], 0.0)
    grid = np.arange(np.floor(bottom) - 1.0, top * 1.05 + 1.0, settings.dos_pitch)
    segment, labels = _path_labels(path)
    row: dict[str, Any] = {
        "material": record.id,
        "status": "ok",
        "error": "",
        "formula": record.formula,
        "n_primitive_atoms": record.n_primitive_atoms,
        "n_supercell_atoms": record.n_supercell_atoms,
        "volume": float(model.unitcell.volume),
        "volume_ref": float(record.unitcell.get_volume()),
        "band_segment": segment,
        "band_label": labels,
        "band_distance": ref["band_distance"],
        "dos_frequency": grid,
        "dos": _dos(model, grid, settings),
        "dos_ref": _dos(reference, grid, settings),
    }
    for key in ("omega_max", "omega_max_mesh", "min_frequency", "entropy", "free_energy", "heat_capacity"):
        row[key] = ours[key]
        row[f"{key}_ref"] = ref[key]
    row["band_frequency"] = ours["band_frequency"]
    row["band_frequency_ref"] = ref["band_frequency"]
    row["band_mae"] = float(np.abs(ours["band_frequency"] - ref["band_frequency"]).mean())
    row["stable"] = bool(ours["min_frequency"] > -settings.stability_tolerance)
    row["stable_ref"] = bool(ref["min_frequency"] > -settings.stability_tolerance)
    row["time_properties"] = time.perf_counter() - t0
    return row


def evaluate_material(
    model: ModelLike, record: Record, settings: PhononSettings = PhononSettings()
) -> dict[str, Any]:
    """Model and DFT phonon properties of one record, with identical phonopy settings.

    Args:
        model: a checkpoint path, `Potential`, ASE calculator or `ForceProvider`.
        record: the material and its reference force constants.
        settings: the protocol.

    Raises whatever goes wrong (unknown element, relaxation not converged, bad record): the
    caller records the failure and goes on with the other materials.

    Returns:
        A result row: scalars, temperature-resolved arrays, the band path and the DOS, model and
        `_ref` side by side (see `results.to_dataset` for names and units).
    """
    phonon, info = model_phonopy(as_provider(model), record, settings)
    row = compare(phonon, record.to_phonopy(), record, settings)
    row.update(info)
    return row
