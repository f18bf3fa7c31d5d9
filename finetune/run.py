"""A whole fine-tuning run from files: load or initialise, train epoch by epoch, validate, save.

After every epoch the EMA model (`out`), the exact training state (`out.state`) and the metrics
CSV are written atomically, so `resume=True` continues where a crash left off. Phonon records
are read one at a time and kept as compact force constants; upstream frames are streamed from
their files (`finetune.frames`), so memory does not grow with the upstream data.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import tomllib
from pathlib import Path
from typing import Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from finetune.array_cache import ArrayCache
from finetune.data import Example, ExampleSource, dataset_examples
from finetune.frames import FrameSource
from finetune.trainer import TrainConfig, Trainer, check_devices
from finetune.validation import PROPERTY_METRICS, RATIO, property_errors, property_ratio
from phonon_eval.atomic import atomic_write
from phonon_eval.checkpoint import load_potential
from phonon_eval.datasets import Dataset
from phonon_eval.graph import build_graph
from phonon_eval.nequix import Nequix, NequixConfig
from phonon_eval.potential import Potential

__all__ = ["RunSpec", "ResumeError", "run", "init_potential", "state_path"]


class ResumeError(ValueError):
    """`resume=True` without a training state to continue from."""


def state_path(out: Path) -> Path:
    """Where a run writing `out` keeps its exact training state (`<out>.state`)."""
    return out.with_name(out.name + ".state")

Paths = Union[Path, Sequence[Path], None]
"""One file, several, or glob patterns of them (`finetune.frames.expand_paths`)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    out: Path
    model: Path | None = None
    init: Path | None = None
    dataset: Path | None = None
    split: str = "train"
    val_split: str | None = "val"
    cotrain: Paths = None
    cotrain_val: Paths = None
    resume: bool = False
    metrics: Path | None = None
    devices: int = 1
    example_cache: Path | None = None  # phonon examples kept between runs (None: made afresh)


def init_potential(arch: dict, frames: Sequence[Example] | ExampleSource, seed: int = 0, sample: int = 10_000) -> Potential:
    """A new Nequix from an architecture dict, with statistics of the training frames.

    Reference energies per element by least squares on the frame energies; `scale` the RMS of
    the forces; `avg_n_neighbors` the mean neighbour count at the cutoff. At most `sample`
    frames, evenly spaced, are used (all of them up to that many): statistics of MPtrj need
    not read its 1.6 million frames.
    """
    if not len(frames):
        raise ValueError("training from scratch needs upstream frames (--cotrain)")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(sample, len(frames))).round().astype(int))
    frames = [frames[int(i)] for i in picks]
    numbers = sorted({int(z) for ex in frames for z in ex.atoms.numbers} | set(arch.get("atomic_numbers", [])))
    cutoff = float(arch.get("cutoff", 5.0))
    counts = np.array([[np.sum(ex.atoms.numbers == z) for z in numbers] for ex in frames], dtype=float)
    energies = np.array([ex.energy for ex in frames])
    atom_e, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    forces = np.concatenate([ex.forces for ex in frames])
    neighbours = [
        float(np.asarray(build_graph(ex.atoms.positions, ex.atoms.cell.array, np.zeros(len(ex.atoms), int), cutoff).edge_mask).sum()) / len(ex.atoms)
        for ex in frames[:50]
    ]
    config = NequixConfig.from_dict(
        {
            **arch,
            "atomic_numbers": numbers,
            "cutoff": cutoff,
            "scale": float(np.sqrt(np.mean(forces**2))) or 1.0,
            "shift": 0.0,
            "avg_n_neighbors": float(np.mean(neighbours)),
        }
    )
    model = Nequix(config, key=jax.random.key(seed))
    model = eqx.tree_at(lambda m: m.atom_energies, model, jnp.asarray(atom_e, jnp.float32))
    return Potential(model=model, atomic_numbers=config.atomic_numbers, cutoff=cutoff, source="init")


def _check_selection(config: TrainConfig) -> None:
    """Refuse a --select-by metric that the run will not measure."""
    if config.val_every < 0:
        raise ValueError(f"val_every must be >= 0 epochs, got {config.val_every}")
    known = ["val_hessian_mae", "val_energy_mae", "val_force_mae", *PROPERTY_METRICS, RATIO]
    if config.select_by and config.select_by not in known:
        raise ValueError(f"unknown select_by metric {config.select_by!r}; known: {', '.join(known)}")
    if config.select_by in (*PROPERTY_METRICS, RATIO) and not config.val_every:
        raise ValueError(f"select_by {config.select_by} is a phonon-property metric: set val_every (--val-every) too")


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, buf.getvalue().encode())


def run(spec: RunSpec, config: TrainConfig, *, progress: bool = True, console: Console | None = None) -> str:
    """Train; returns a one-paragraph summary."""
    console = console or Console(stderr=True)
    state = state_path(spec.out)
    if spec.resume and not state.is_file():
        raise ResumeError(f"--resume: no training state {state} to continue from (it is written after each epoch); run without --resume to start afresh")
    # a bad device count or metric is refused before the (slow) data loading
    check_devices(spec.devices, config, spec.dataset is not None, bool(spec.cotrain))
    _check_selection(config)
    arch = tomllib.loads(spec.init.read_text()) if spec.init is not None else None
    potential = None if arch is not None else load_potential(spec.model)
    cutoff = float(arch.get("cutoff", 5.0)) if arch is not None else potential.cutoff
    cotrain = FrameSource(spec.cotrain, cutoff) if spec.cotrain else []
    cotrain_val = FrameSource(spec.cotrain_val, cutoff) if spec.cotrain_val else []
    if potential is None:
        potential = init_potential(arch, cotrain, config.seed)

    train: list[Example] = []
    val: list[Example] = []
    val_records: list = []
    data: dict[str, str | None] = {}
    if spec.dataset is not None:
        dataset = Dataset(spec.dataset)
        cache = ArrayCache(spec.example_cache) if spec.example_cache is not None else None
        train = _examples(dataset, spec.split, config.sampler, console, progress, cache,
                          need_energy=config.energy_weight > 0, dtype=potential.dtype)
        if spec.val_split:
            val = _examples(dataset, spec.val_split, "uniform", console, progress, cache, dtype=potential.dtype)
            if config.val_every:  # the property evaluator needs the records themselves (few)
                val_records = list(dataset.records(spec.val_split))
        data = {"split": spec.split, "val_split": spec.val_split}
    # name an unknown element before any compilation
    for ex in train + val:
        potential.species(ex.atoms.numbers)
    for source in (cotrain, cotrain_val):
        for name, numbers in (source.atomic_numbers().items() if source else ()):
            try:
                potential.species(np.asarray(numbers))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None

    trainer = Trainer(potential, config, train, val, cotrain, cotrain_val, devices=spec.devices, data=data)
    batchers = {"phonon": trainer.train, "upstream": trainer.cotrain}
    sizes = [
        f"{name} {b.batch_size // spec.devices} / {b.batch_size}" for name, b in batchers.items() if b is not None
    ]
    plural = "s" if spec.devices > 1 else ""
    console.print(f"batch per device / global: {', '.join(sizes)} ({spec.devices} device{plural})")
    if spec.resume:
        trainer.load_state(state)
        console.print(f"resumed from {state} at epoch {trainer.epoch}, step {trainer.step}")
    best = spec.out.with_name(f"{spec.out.stem}.best{spec.out.suffix}")

    def validate() -> dict[str, float]:
        metrics = trainer.validate()
        if val_records and trainer.epoch % config.val_every == 0:
            metrics.update(property_errors(trainer.local_ema(), val_records))
            start = trainer.history[0] if trainer.history else metrics
            metrics[RATIO] = property_ratio(metrics, start)
            console.print(f"epoch {trainer.epoch}: " + ", ".join(
                f"{name[4:-4]} {metrics[name]:.3f} {unit}" for name, (_, unit) in PROPERTY_METRICS.items()
            ) + f" (MAE on {len(val_records)} validation records; worst / start {metrics[RATIO]:.2f})", highlight=False)
        return metrics

    def keep_best(metrics: dict[str, float]) -> None:
        if not config.select_by or not np.isfinite(metrics.get(config.select_by, np.nan)):
            return
        earlier = [row[config.select_by] for row in trainer.history[:-1] if np.isfinite(row.get(config.select_by, np.nan))]
        if not earlier or metrics[config.select_by] < min(earlier):
            trainer.save_model(best, {"source_model": str(spec.model or spec.init), "selected_by": config.select_by})

    if trainer.epoch == 0 and not trainer.history:
        trainer.history.append({"epoch": 0, "step": 0, **validate()})
        keep_best(trainer.history[-1])

    with Progress(*_bar_columns(), console=console, disable=not progress) as bar:
        task = bar.add_task("pft", total=trainer.total_steps, completed=trainer.step)
        while trainer.epoch < config.epochs:
            bar.update(task, description=f"pft epoch {trainer.epoch + 1}/{config.epochs}")
            stats = trainer.train_epoch(on_step=lambda s: bar.advance(task))
            trainer.epoch += 1
            trainer.history.append({"epoch": trainer.epoch, "step": trainer.step, **stats, **validate()})
            trainer.save_model(spec.out, {"source_model": str(spec.model or spec.init)})
            keep_best(trainer.history[-1])
            trainer.save_state(state)
            if spec.metrics:
                _write_metrics(spec.metrics, trainer.history)
    return _summary(spec.out, trainer.step, trainer.history[0], trainer.history[-1])


def _bar_columns() -> list:
    """Description, bar, done/total, elapsed, remaining (new objects per bar: they keep its timing)."""
    return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]


def _examples(dataset: Dataset, split: str, sampler: str, console: Console, progress: bool, cache: ArrayCache | None, **kwargs) -> list[Example]:
    """The phonon examples of one split, with a progress bar (10,000 records take minutes unless cached)."""
    ids = dataset.split(split)
    with Progress(*_bar_columns(), console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{split} records", total=len(ids))
        examples = dataset_examples(dataset, bar.track(ids, task_id=task), sampler, cache=cache, **kwargs)
    if cache is not None:
        if progress:
            console.print(f"{split}: {len(examples)} phonon examples ({cache.hits} from {cache.folder}, {cache.misses} made)", highlight=False)
        cache.hits = cache.misses = 0
    return examples


def _summary(out: Path, steps: int, first: dict[str, float], last: dict[str, float]) -> str:
    """'wrote ... after N steps; validation Hessian MAE a -> b eV/Å², ...', naming only what was
    measured (no phonon validation split or no --cotrain-val: no NaN printed for it)."""
    said = [
        f"{label} {first[key]:.4f} -> {last[key]:.4f} {unit}"
        for key, label, unit in (
            ("val_hessian_mae", "Hessian MAE", "eV/Å²"),
            ("val_energy_mae", "energy MAE", "eV/atom"),
            ("val_force_mae", "force MAE", "eV/Å"),
        )
        if np.isfinite(first.get(key, np.nan)) or np.isfinite(last.get(key, np.nan))
    ]
    return f"wrote {out} after {steps} steps" + (f"; validation {', '.join(said)}" if said else "; nothing validated")
