"""Training examples and fixed-shape batches.

Phonon examples come from records (the supercell at its reference geometry, its DFT force
constants in phonopy's compact form, and a column sampler); upstream examples from frames with
energy, forces and (optionally) stress, in memory or streamed from disk (`finetune.frames`).
Structures are grouped by padded graph size, and every batch of a group is padded to the group's
shape and batch size, so the step function compiles once per group. The grouping needs only each
structure's atom and edge counts; the graphs themselves are built per batch, when it is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, NoReturn, Protocol, Sequence

import ase
import ase.db
import ase.io
import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from finetune.array_cache import ArrayCache, content_digest
from finetune.force_constants import CompactForceConstants, compact_force_constants, hessian_column
from finetune.loss import Batch
from finetune.probes import PROBES, draw_probe, force_constant_product
from finetune.samplers import ColumnSampler, SamplerKind, make_sampler
from phonon_eval.datasets import Dataset
from phonon_eval.graph import bucket, count_edges
from phonon_eval.potential import Potential
from phonon_eval.records import SYMPREC, Record
from phonon_eval.symmetry import ColumnSet, SupercellSymmetry

__all__ = ["Example", "ExampleSource", "phonon_examples", "phonon_example", "dataset_examples", "upstream_example", "upstream_examples", "read_frames", "Batcher", "Columns"]

Probe = tuple[int, int, float] | np.ndarray
Columns = list[Probe | list[Probe]]
"""What each structure of a batch supervises: (atom, direction, weight) of a Hessian column, or
a projection probe v (N, 3) (`finetune.probes`); a list of K of them with K probes per structure."""


@dataclasses.dataclass
class Example:
    """One structure with its targets. `force_constants` and `sampler` only for phonon data.

    `force_constants` is compact (what `phonon_examples` makes) or full (N, N, 3, 3), eV/Å².
    """

    id: str
    atoms: ase.Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    force_constants: CompactForceConstants | np.ndarray | None = None
    sampler: ColumnSampler | None = None
    classes: ColumnSet | None = None

    def digest(self) -> str:
        """A short content hash of the structure and its targets (to recognise the training data)."""
        h = hashlib.sha256(self.id.encode())
        fc = self.force_constants
        arrays = [self.atoms.numbers, self.atoms.positions, self.atoms.cell.array, self.energy, self.forces, self.stress]
        arrays += [fc.fc] if isinstance(fc, CompactForceConstants) else [fc]
        for a in arrays:
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


class ExampleSource(Protocol):
    """Examples read on demand (`finetune.frames.FrameSource`): indexable, with the sizes that
    group them known without reading them."""

    has_columns: bool

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Example: ...

    def sizes(self, cutoff: float) -> tuple[np.ndarray, np.ndarray]: ...


def phonon_examples(
    records: Iterable[Record], sampler: SamplerKind = "uniform", *, need_energy: bool = False, dtype: np.dtype | type = np.float32
) -> list[Example]:
    """Phonon examples: supercell at the reference geometry, zero forces and stress (DFT equilibrium).

    The energy target is the record's stored energy per atom times N when it has one; it is
    only used if λE > 0, and then (`need_energy`) a record without one is refused by name.
    Records are used one at a time (pass a generator such as `Dataset.records(split)` to hold
    only the compact force constants, never every record's full ones).

    Args:
        records: the records.
        sampler: column sampler kind.
        need_energy: refuse a record without an energy.
        dtype: of the stored force constants: the potential's (the loss is computed in it).
    """
    return [phonon_example(record, sampler, need_energy=need_energy, dtype=dtype) for record in records]


def phonon_example(
    record: Record, sampler: SamplerKind = "uniform", *, need_energy: bool = False, dtype: np.dtype | type = np.float32
) -> Example:
    """One record's phonon example (`phonon_examples`)."""
    atoms = record.supercell()
    n = len(atoms)
    classes = SupercellSymmetry.from_atoms(atoms).column_orbits()
    ref = record.reference
    if need_energy and "energy" not in ref:
        _no_energy(record.source, record.id)
    energy = float(ref["energy"]) / float(ref.get("nsites", len(record.unitcell))) * n if "energy" in ref else 0.0
    return _phonon_example(record.id, atoms, energy, compact_force_constants(record, dtype), classes, sampler)


def dataset_examples(
    dataset: Dataset,
    ids: Iterable[str],
    sampler: SamplerKind = "uniform",
    *,
    need_energy: bool = False,
    dtype: np.dtype | type = np.float32,
    cache: ArrayCache | None = None,
) -> list[Example]:
    """`phonon_examples` of the records `ids` of `dataset`, each loaded from `cache` when a file
    of the same bytes was made into an example before (then the record is not even read).

    A hit is the example made afresh, array for array (tests/test_finetune_scale.py): the key
    holds the file's bytes, the dtype, the symmetry tolerance and `CACHE_FORMAT`.
    """
    out = []
    for material_id in ids:
        path = dataset.path(material_id)
        key = content_digest(path, CACHE_FORMAT, np.dtype(dtype).name, SYMPREC) if cache is not None else ""
        arrays = cache.get(key) if cache is not None else None
        if arrays is None:
            record = dataset[material_id]
            ex = phonon_example(record, sampler, need_energy=need_energy, dtype=dtype)
            if cache is not None:
                cache.put(key, _example_arrays(ex, has_energy="energy" in record.reference))
        else:
            if need_energy and not arrays["has_energy"]:
                _no_energy(path, material_id)
            ex = _example_from_arrays(material_id, arrays, sampler)
        out.append(ex)
    return out


CACHE_FORMAT = 1
"""Version of what a cached phonon example holds and how it is made: raise it with any change
to `phonon_example`, `compact_force_constants` or the column classes, so old entries go unused."""


def _no_energy(source: object, material_id: str) -> NoReturn:
    raise ValueError(
        f"{source}: material {material_id!r}, field 'energy': missing or NaN, "
        "but energy_weight > 0 trains on it (set energy_weight = 0, or leave this record out)"
    )


def _phonon_example(
    material_id: str, atoms: ase.Atoms, energy: float, fc: CompactForceConstants, classes: ColumnSet, sampler: SamplerKind
) -> Example:
    n = len(atoms)
    return Example(
        id=material_id,
        atoms=atoms,
        energy=energy,
        forces=np.zeros((n, 3)),
        stress=np.zeros((3, 3)),
        force_constants=fc,
        sampler=make_sampler(sampler, n, classes),
        classes=classes,
    )


def _example_arrays(ex: Example, has_energy: bool) -> dict[str, np.ndarray]:
    fc, classes, atoms = ex.force_constants, ex.classes, ex.atoms
    return {
        "numbers": atoms.numbers, "positions": atoms.positions, "cell": atoms.cell.array, "pbc": atoms.pbc,
        "masses": atoms.get_masses(), "energy": np.array(ex.energy), "has_energy": np.array(has_energy),
        "fc": fc.fc, "primitive": fc.primitive, "translation": fc.translation, "permutations": fc.permutations,
        "class_atoms": classes.atoms, "class_directions": classes.directions,
        "class_multiplicity": classes.multiplicity,
    } | ({} if classes.labels is None else {"class_labels": classes.labels})


def _example_from_arrays(material_id: str, z: dict[str, np.ndarray], sampler: SamplerKind) -> Example:
    atoms = ase.Atoms(numbers=z["numbers"], positions=z["positions"], cell=z["cell"], pbc=z["pbc"], masses=z["masses"])
    fc = CompactForceConstants(fc=z["fc"], primitive=z["primitive"], translation=z["translation"], permutations=z["permutations"])
    classes = ColumnSet(z["class_atoms"], z["class_directions"], z["class_multiplicity"], z.get("class_labels"))
    return _phonon_example(material_id, atoms, float(z["energy"]), fc, classes, sampler)


def read_frames(path: str | Path) -> list[ase.Atoms]:
    """Frames with energy and forces (stress optional) from extxyz or an ASE database."""
    path = Path(path)
    if path.suffix == ".db":
        with ase.db.connect(path) as db:
            return [row.toatoms(add_additional_information=True) for row in db.select()]
    return ase.io.read(path, ":")


def upstream_example(atoms: ase.Atoms, source: str, i: int, *, as_read: bool = False) -> Example:
    """Frame `i` of `source` as an energy/force/stress example; no energy or forces is refused by name.

    `as_read`: the frame was just read from a file, so its stored results are taken as they are
    (ASE's getters first compare the atoms with the calculator's copy of them, which is half the
    time of streaming a frame).
    """
    results = getattr(atoms.calc, "results", None) or {}
    if as_read and isinstance(atoms.calc, SinglePointCalculator) and "energy" in results and "forces" in results:
        energy, forces, stress = results["energy"], np.array(results["forces"]), results.get("stress")
        if stress is not None:
            stress = np.array(stress).reshape(3, 3) if np.size(stress) == 9 else voigt_6_to_full_3x3_stress(stress)
        return Example(id=f"{source}#{i}", atoms=atoms.copy(), energy=float(energy), forces=forces, stress=stress)
    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    except Exception as err:
        raise ValueError(f"{source}: frame {i} has no energy or forces ({err})") from None
    try:
        stress = atoms.get_stress(voigt=False)
    except Exception:
        stress = None
    return Example(id=f"{source}#{i}", atoms=atoms.copy(), energy=float(energy), forces=forces, stress=stress)


def upstream_examples(frames: Sequence[ase.Atoms], source: str = "") -> list[Example]:
    """Energy/force/stress examples of frames in memory; a frame without energy or forces is refused by name."""
    return [upstream_example(atoms, source, i) for i, atoms in enumerate(frames)]


class Batcher:
    """Fixed-shape batches of examples, grouped by padded size.

    Args:
        potential: gives species and cutoff for the graphs (built per batch).
        examples: the examples, in memory or read on demand (an `ExampleSource`).
        batch_size: structures per batch (short batches are padded with masked copies).
        probe: what each phonon structure's HVP is taken along (`finetune.probes.PROBES`): a
            column drawn by its sampler, or a projection probe drawn here.
        max_padding: a size bucket joins the next larger one (same atom count) when padding its
            edges that far costs at most this factor. Every group is one compilation of the step,
            which on CPU takes far longer than the padded work it saves on a small dataset.
        probes: K, the probes per phonon structure per step (drawn independently; `finetune.loss`
            pushes them through one linearisation).
    """

    def __init__(
        self, potential: Potential, examples: Sequence[Example] | ExampleSource, batch_size: int, max_padding: float = 1.5,
        probe: str = "column", probes: int = 1,
    ):
        if not len(examples):
            raise ValueError("no examples to batch")
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r} ({', '.join(PROBES)})")
        if probes < 1:
            raise ValueError(f"probes per structure must be at least 1, got {probes}")
        self.probe = probe
        self.probes = probes
        self.examples = examples
        self.batch_size = batch_size
        self.potential = potential
        self.dtype = potential.dtype
        if isinstance(examples, Sequence):
            self.has_columns = any(e.force_constants is not None for e in examples)
            n_atoms = np.array([len(e.atoms) for e in examples])
            n_edges = np.array([count_edges(e.atoms.positions, e.atoms.cell.array, potential.cutoff, pbc=e.atoms.pbc) for e in examples])
        else:
            self.has_columns = examples.has_columns
            n_atoms, n_edges = examples.sizes(potential.cutoff)
        # the sizes `build_graph` pads a lone structure to: the keys of the groups
        nodes = np.array([bucket(n + 1) for n in n_atoms])
        edges = np.array([bucket(e) for e in n_edges])
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (n, e) in enumerate(zip(nodes.tolist(), edges.tolist())):
            buckets[(n, bucket(e, per_octave=4))].append(i)
        groups: dict[tuple[int, int], list[int]] = {}
        for n_nodes, n_e in sorted(buckets, reverse=True):  # largest first: it absorbs the smaller
            target = next((k for k in groups if k[0] == n_nodes and k[1] <= max_padding * n_e), None)
            groups.setdefault(target or (n_nodes, n_e), []).extend(buckets[(n_nodes, n_e)])
        # members as arrays: 1.6 million Python ints would cost more than the frames' index
        self.groups = {key: np.sort(np.asarray(m, dtype=np.int64)) for key, m in groups.items()}
        self._shape = np.zeros((len(examples), 2), dtype=np.int64)  # (n_nodes, n_edges) of its group
        for (n_nodes, _), members in self.groups.items():
            self._shape[members] = (n_nodes, edges[members].max())

    def batches(self) -> Iterator[list[int]]:
        """Index lists covering every example once, in a fixed order (for evaluation)."""
        for members in self.groups.values():
            for k in range(0, len(members), self.batch_size):
                yield members[k : k + self.batch_size].tolist()

    def epoch(self, rng: np.random.Generator) -> Iterator[list[int]]:
        """Index lists of one shuffled epoch, one group per batch."""
        orders = [rng.permutation(members) for members in self.groups.values()]
        starts = [(g, k) for g, order in enumerate(orders) for k in range(0, len(order), self.batch_size)]
        for b in rng.permutation(len(starts)):
            g, k = starts[b]
            yield orders[g][k : k + self.batch_size].tolist()

    def draw(self, indices: Sequence[int], rng: np.random.Generator) -> Columns | None:
        """What each structure of `indices` supervises: a column from its sampler, or a
        projection probe (None: no phonon data)."""
        if not self.has_columns:
            return None
        out: Columns = []
        for i in indices:
            ex = self.examples[i]
            if ex.force_constants is None or (self.probe == "column" and ex.sampler is None):
                drawn = [(0, 0, 0.0)] * self.probes
            elif self.probe == "column":
                drawn = [ex.sampler.draw(rng) for _ in range(self.probes)]
            else:
                drawn = [draw_probe(self.probe, len(ex.atoms), ex.classes, rng) for _ in range(self.probes)]
            out.append(drawn[0] if self.probes == 1 else drawn)
        return out

    def make(
        self, indices: Sequence[int], rng: np.random.Generator | None = None, columns: Sequence[tuple] | None = None
    ) -> Batch:
        """The batch of `indices`; columns drawn from each sampler, or given per structure as
        (atom, direction) (weight 1), (atom, direction, weight) or a probe vector, or a list of K."""
        indices = [int(i) for i in indices]
        if columns is None and self.has_columns:
            columns = self.draw(indices, rng)
        examples = [self.examples[i] for i in indices]
        n_real = len(examples)
        examples += [examples[-1]] * (self.batch_size - n_real)  # masked copies
        mask = np.array([1.0] * n_real + [0.0] * (self.batch_size - n_real))
        n_nodes, n_edges = (int(x) for x in self._shape[indices[0]])
        dt = self.dtype
        pos = np.zeros((len(examples), n_nodes, 3), dt)
        forces = np.zeros_like(pos)
        vector = np.zeros((len(examples), self.probes, n_nodes, 3), dt)
        column = np.zeros_like(vector)
        weight = np.zeros((len(examples), self.probes), dt)
        stress = np.zeros((len(examples), 3, 3), dt)
        has_stress, energy, n_atoms, cell, graphs = [], [], [], [], []
        for k, ex in enumerate(examples):
            n = len(ex.atoms)
            pos[k, :n] = ex.atoms.positions
            forces[k, :n] = ex.forces
            if ex.stress is not None:
                stress[k] = ex.stress
            has_stress.append(float(ex.stress is not None))
            energy.append(ex.energy)
            n_atoms.append(n)
            cell.append(ex.atoms.cell.array)
            # a masked copy repeats the last structure: its graph too, not a second neighbour search
            graphs.append(self.potential.graph(ex.atoms, n_nodes=n_nodes, n_edges=n_edges) if k < n_real else graphs[-1])
            if ex.force_constants is None or columns is None:
                continue
            given = columns[min(k, n_real - 1)]  # a masked copy repeats the last
            given = given if isinstance(given, list) else [given]
            if len(given) != self.probes:
                raise ValueError(f"{ex.id}: {len(given)} probes given, the batcher makes {self.probes} per structure")
            for j, probe in enumerate(given):
                if isinstance(probe, np.ndarray):
                    weight[k, j] = 1.0
                    vector[k, j, :n] = probe
                    column[k, j, :n] = force_constant_product(ex.force_constants, probe)
                else:
                    atom, direction, *rest = probe
                    weight[k, j] = float(rest[0]) if rest else 1.0
                    vector[k, j, atom, direction] = 1.0
                    column[k, j, :n] = hessian_column(ex.force_constants, atom, direction)
        graph = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *graphs)  # one transfer per leaf
        return Batch(
            graph=graph,
            positions=jnp.asarray(pos),
            cell=jnp.asarray(np.asarray(cell), dt),
            n_atoms=jnp.asarray(n_atoms, dt),
            energy=jnp.asarray(energy, dt),
            forces=jnp.asarray(forces),
            stress=jnp.asarray(stress),
            has_stress=jnp.asarray(has_stress, dt),
            vector=jnp.asarray(vector),
            column=jnp.asarray(column),
            column_weight=jnp.asarray(weight),
            mask=jnp.asarray(mask, dt),
        )
