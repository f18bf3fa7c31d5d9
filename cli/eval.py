"""`pft-eval`: evaluate a potential's phonons and thermal conductivity, convert and inspect models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from cli.common import EXIT_USAGE, console, err_console, fail, reported, VersionOption

app = typer.Typer(
    name="pft-eval",
    help="Evaluate machine-learned interatomic potentials on phonons (phonopy) and thermal "
    "conductivity (phono3py) against DFT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


from cli.data import app as data_app  # noqa: E402

app.add_typer(data_app, name="data", help="List, describe and validate phonon datasets.")


@app.callback()
def _main(
    version: VersionOption = False,
) -> None:
    pass


ModelArg = Annotated[Path, typer.Argument(help="Model file: a .ckpt checkpoint or a public Nequix .nqx file.")]
EvalModelArg = Annotated[Optional[Path], typer.Argument(
    help="Model file: a .ckpt checkpoint or a public Nequix .nqx file (or give --calculator instead).", show_default=False)]
CalculatorOption = Annotated[Optional[str], typer.Option(
    help="Evaluate an ASE calculator instead of a model file: MODULE:FACTORY, e.g. ase.calculators.emt:EMT, "
    "sevenn.calculator:SevenNetCalculator, chgnet.model.dynamics:CHGNetCalculator. Force constants then come "
    "from finite displacements.", show_default=False)]
CalculatorKwargsOption = Annotated[Optional[str], typer.Option(
    help='Keyword arguments of the calculator factory as a JSON object, e.g. \'{"model": "7net-l3i5"}\'.', show_default=False)]
DeviceOption = Annotated[Optional[str], typer.Option(
    help="Device for the calculator (cpu, cuda), passed to the factory as its device= (SevenNet) or use_device= "
    "(CHGNet) keyword; refused for a factory with neither.", show_default=False)]
DtypeOption = Annotated[Optional[str], typer.Option(
    help="Precision of a JAX model: float32 or float64 (default: as stored, float32).", show_default=False)]


def _provider(model: Path | None, calculator: str | None, kwargs: str | None, device: str | None, dtype: str | None):
    """The model to evaluate: a model file or an ASE calculator spec, exactly one."""
    import json

    from phonon_eval.checkpoint import CheckpointError
    from phonon_eval.provider import AseCalculator, ProviderError, as_provider

    if (model is None) == (calculator is None):
        fail("give a model file or --calculator MODULE:FACTORY, exactly one of them", EXIT_USAGE)
    if calculator is None:
        if kwargs is not None or device is not None:
            fail("--calculator-kwargs and --device go with --calculator", EXIT_USAGE)
        with reported(CheckpointError, ProviderError, OSError):
            return as_provider(model, dtype=dtype)
    if dtype is not None:
        fail("--dtype applies to model files (JAX); set a calculator's precision in --calculator-kwargs", EXIT_USAGE)
    try:
        parsed = {} if kwargs is None else json.loads(kwargs)
    except ValueError as err:
        fail(f"--calculator-kwargs {kwargs!r} is not JSON: {err}", EXIT_USAGE)
    if not isinstance(parsed, dict):
        fail(f"--calculator-kwargs {kwargs!r} must be a JSON object of keyword arguments", EXIT_USAGE)
    with reported(ProviderError):
        return AseCalculator(spec=calculator, kwargs=parsed, device=device)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Input model (.nqx or .ckpt).")],
    dest: Annotated[Path, typer.Argument(help="Output checkpoint (.ckpt), written atomically.")],
) -> None:
    """Convert a public Nequix .nqx file (or a .ckpt) into the project's model.ckpt format."""
    from phonon_eval.checkpoint import CheckpointError, convert as _convert

    with reported(CheckpointError, OSError):
        potential = _convert(source, dest)
    console.print(
        f"wrote {dest} ({len(potential.atomic_numbers)} elements, cutoff {potential.cutoff} Å)"
    )


@app.command()
def info(model: ModelArg) -> None:
    """Show a model's architecture, elements, cutoff, parameter count and provenance."""
    import equinox as eqx
    import jax
    from ase.data import chemical_symbols
    from rich.table import Table

    from phonon_eval.checkpoint import CheckpointError, load_potential, read_header

    with reported(CheckpointError, OSError):
        potential = load_potential(model)
        header = read_header(model)
    config = potential.model.config
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(potential.model, eqx.is_array)))
    table = Table(title=str(model), show_header=False)
    table.add_row("format", header.get("format", "nequix .nqx"))
    table.add_row("parameters", f"{n_params:,}")
    table.add_row("sha256", potential.sha256)
    for key, value in config.to_dict().items():
        if key == "atomic_numbers":
            value = " ".join(chemical_symbols[z] for z in value)
        table.add_row(key, str(value))
    for key, value in (header.get("provenance") or {}).items():
        if key != "training_config":
            table.add_row(f"provenance.{key}", str(value))
    console.print(table)


BUILTIN_DATASET = Path(__file__).resolve().parents[1] / "data" / "emt"


def _parse_mesh(text: str, lengths: bool = False) -> tuple[int, int, int] | float:
    """'20', '20 20 20' or '20x20x20'; with `lengths`, '100.0' is a length in Å (phonopy's float mesh)."""
    if lengths and "." in text and len(text.split()) == 1:
        try:
            return float(text)
        except ValueError:
            raise typer.BadParameter(f"mesh length must be a number, got {text!r}") from None
    try:
        parts = [int(p) for p in text.replace(",", " ").replace("x", " ").split()]
    except ValueError:
        raise typer.BadParameter(f"mesh must be one or three positive integers, got {text!r}") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 1:
        raise typer.BadParameter(f"mesh must be one or three positive integers, got {text!r}")
    return tuple(parts)


def _parse_temperatures(text: str) -> tuple[float, ...]:
    """'0:1000:50' (start:stop:step, inclusive) or a comma list '100,300,500'."""
    if ":" in text:
        start, stop, step = (float(x) for x in text.split(":"))
        values = np.arange(start, stop + step / 2, step)
    else:
        values = np.asarray([float(x) for x in text.split(",")])
    return tuple(float(v) for v in values)


WorkersOption = Annotated[int, typer.Option(
    help="Run materials on a local Dask cluster of this many process workers (threads split "
    "so the cores are not oversubscribed); 1: in this process.")]
SchedulerOption = Annotated[Optional[str], typer.Option(
    help="Address of a running Dask scheduler (e.g. one started by dask-jobqueue on Slurm) to run the materials on.")]
SchedulerFileOption = Annotated[Optional[Path], typer.Option(
    help="Scheduler file of a running Dask cluster (`dask scheduler --scheduler-file FILE`).")]


OUT_HELP = "Results netCDF: each material is saved to <out>.parts/ as it finishes, and all are merged into <out> (atomically) at the end."
ResumeOption = Annotated[bool, typer.Option("--resume", help=(
    "Keep the materials already in --out (or its .parts folder, after a crash) and do the rest; "
    "refused if they were made with another model or other settings."))]
RetryFailedOption = Annotated[bool, typer.Option("--retry-failed", help="With --resume, evaluate the failed materials again (implies --resume).")]
TableOption = Annotated[str, typer.Option(help="Rows of the printed table: worst (the 20 worst and 20 failed, when there are more than 40 materials) or full.")]


def _table_limit(table: str) -> int | None:
    """The rows `Summary.table` shows for --table (a usage error for anything else)."""
    from phonon_eval.tables import WORST

    if table not in ("worst", "full"):
        fail(f"--table {table}: worst or full", EXIT_USAGE)
    return None if table == "full" else WORST


def _cluster(workers: int, scheduler: str | None, scheduler_file: Path | None):
    from phonon_eval.fanout import Cluster

    try:
        cluster = Cluster(workers, scheduler, scheduler_file)
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    if not cluster.in_process:
        err_console.print(f"running on a {cluster.describe()}")
    return cluster


@app.command()
def phonons(
    model: EvalModelArg = None,
    calculator: CalculatorOption = None,
    calculator_kwargs: CalculatorKwargsOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    dataset: Annotated[Path, typer.Option(help="Dataset folder: records plus split.json.")] = BUILTIN_DATASET,
    split: Annotated[str, typer.Option(help="Split to evaluate (train, val, test, ...).")] = "test",
    materials: Annotated[Optional[str], typer.Option(help="Comma-separated material ids (instead of a split).")] = None,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("phonons.nc"),
    resume: ResumeOption = False,
    retry_failed: RetryFailedOption = False,
    table: TableOption = "worst",
    protocol: Annotated[str, typer.Option(help="Named protocol of every setting: mdr (the MDR phonon benchmark's workflow) or exact (analytic force constants from HVPs, otherwise mdr). Options given below override it, and the results say which.")] = "mdr",
    relax: Annotated[Optional[bool], typer.Option("--relax/--no-relax", help="Relax the unit cell with the model first (mdr: yes).", show_default=False)] = None,
    fmax: Annotated[Optional[float], typer.Option(help="Relaxation force threshold, eV/Å (mdr: 0.0025, half of MDR's 0.005, as its scripts converge).", show_default=False)] = None,
    relax_steps: Annotated[Optional[int], typer.Option(help="Relaxation step budget (mdr: 7500).", show_default=False)] = None,
    fc: Annotated[Optional[str], typer.Option(help="Force constants: analytic (symmetry-reduced HVPs; JAX models), finite (phonopy displacements) or auto (analytic where the model has HVPs); mdr: finite, exact: auto.", show_default=False)] = None,
    displacement: Annotated[Optional[float], typer.Option(help="Finite-displacement amplitude, Å (mdr: 0.01).", show_default=False)] = None,
    fc_symmetrization: Annotated[Optional[str], typer.Option(help="Symmetrisation of every force-constant set made here, model and reference from forces alike: phonopy (one pass, as the MDR scripts; mdr), symfc (projector, as phonopy.load; exact) or none.", show_default=False)] = None,
    nac: Annotated[Optional[bool], typer.Option("--nac/--no-nac", help="Non-analytic correction with the record's Born charges on both sides (mdr: no).", show_default=False)] = None,
    mesh: Annotated[Optional[str], typer.Option(help="q-point mesh: 20 or '20 20 20', or a length in Å with a decimal point, 100.0 (mdr: 100.0, phonopy's default).", show_default=False)] = None,
    temperatures: Annotated[Optional[str], typer.Option(help="Temperatures in K: start:stop:step or a comma list; must include 300 (mdr: 0,75,150,300,600).", show_default=False)] = None,
    band_points: Annotated[Optional[int], typer.Option(help="q-points per band-path segment (mdr: 51).", show_default=False)] = None,
    workers: WorkersOption = 1,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")] = True,
) -> None:
    """Phonons with phonopy vs the records' reference (DFT, MDR PBE, ...): relax, force constants
    from the model, band structure, DOS, ω_max, S, F, C_V; saved as an xarray Dataset (netCDF) with the metrics printed as a table.

    The model is a model file (MODEL) or any ASE calculator (--calculator)."""
    from phonon_eval.datasets import Dataset, DatasetError
    from phonon_eval.phonons import PhononSettings
    from phonon_eval.provider import ProviderError
    from phonon_eval.results import run_phonons
    from phonon_eval.store import ResumeError

    cluster = _cluster(workers, scheduler, scheduler_file)
    given = {
        "relax": relax, "fmax": fmax, "relax_steps": relax_steps, "fc_method": fc, "displacement": displacement,
        "fc_symmetrization": fc_symmetrization, "nac": nac, "band_points": band_points,
        "mesh": None if mesh is None else _parse_mesh(mesh, lengths=True),
        "temperatures": None if temperatures is None else _parse_temperatures(temperatures),
    }
    try:
        settings = PhononSettings.from_protocol(protocol, **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        fail(str(err).replace("fc_method", "--fc"), EXIT_USAGE)
    provider = _provider(model, calculator, calculator_kwargs, device, dtype)
    try:
        settings.method_for(provider)
    except ProviderError as err:
        fail(str(err), EXIT_USAGE)
    with reported(DatasetError, OSError):
        data = Dataset(dataset)
        ids = materials.split(",") if materials else data.split(split)
        missing = [i for i in ids if i not in data]
        if missing:
            raise DatasetError(f"{dataset}: materials not in the dataset: {', '.join(missing)}")
    limit = _table_limit(table)
    with reported(ResumeError):
        summary = run_phonons(
            provider, data, ids, settings, out, resume=resume or retry_failed, retry_failed=retry_failed,
            cluster=cluster, progress=progress, console=err_console,
            attrs={"dataset": str(dataset), "split": "" if materials else split},
        )
    console.print(summary.table(limit=limit))
    console.print(f"wrote {out}")
    if summary.n_ok == 0:
        fail(f"no material succeeded ({summary.n_failed} failed)")


@app.command()
def kappa(
    model: EvalModelArg = None,
    calculator: CalculatorOption = None,
    calculator_kwargs: CalculatorKwargsOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    structures: Annotated[Optional[Path], typer.Option(help="Matbench Discovery structures (extxyz; info: mp_id, fc2_supercell, fc3_supercell, q_mesh).")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Matbench Discovery DFT κ reference (pandas JSON, may be gzipped); with --structures.")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Dataset folder of phono3py records (DFT fc3 forces) plus split.json.")] = None,
    split: Annotated[str, typer.Option(help="Split of --dataset to evaluate.")] = "test",
    materials: Annotated[Optional[str], typer.Option(help="Comma-separated material ids (instead of a split, or a subset of --structures).")] = None,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("kappa.nc"),
    resume: ResumeOption = False,
    retry_failed: RetryFailedOption = False,
    table: TableOption = "worst",
    protocol: Annotated[str, typer.Option(help="Named protocol of every setting: matbench (the Matbench Discovery κ script), phono3py (force constants by symfc, as phono3py.load) or fast (not Matbench: fc2 and fc3 fitted by symfc to a few random-displacement supercells, about 1/6 of the pair supercells, κ within 1 % of the phono3py route in the convergence study). Options given below override it, and the results say which.")] = "matbench",
    relax: Annotated[Optional[bool], typer.Option("--relax/--no-relax", help="Relax the unit cell with the model first (matbench: yes).", show_default=False)] = None,
    fmax: Annotated[Optional[float], typer.Option(help="Relaxation force threshold, eV/Å (matbench: 1e-4).", show_default=False)] = None,
    relax_steps: Annotated[Optional[int], typer.Option(help="Relaxation step budget (matbench: 300).", show_default=False)] = None,
    displacement: Annotated[Optional[float], typer.Option(help="Finite-displacement amplitude of the fc2 and fc3 supercells, Å (matbench: 0.03, as the published Nequix runs).", show_default=False)] = None,
    mesh: Annotated[Optional[str], typer.Option(help="q-point mesh, e.g. 19 or '19 19 19' (default: each structure's q_mesh; required with --dataset).")] = None,
    temperatures: Annotated[Optional[str], typer.Option(help="Temperatures in K: start:stop:step or a comma list; must include 300 (matbench: 300).", show_default=False)] = None,
    method: Annotated[Optional[str], typer.Option(help="rta, wigner or lbte (matbench: wigner).", show_default=False)] = None,
    isotope: Annotated[Optional[bool], typer.Option("--isotope/--no-isotope", help="Include isotope scattering (matbench: yes).", show_default=False)] = None,
    displacements: Annotated[Optional[str], typer.Option(help="fc3 supercells: pairs (phono3py's one- and two-atom displacements; matbench, phono3py) or random (every atom displaced, fitted by symfc; fast).", show_default=False)] = None,
    random_supercells: Annotated[Optional[int], typer.Option(help="Number of random fc3 supercells (even), instead of --random-factor times the minimum the free fc2 + fc3 parameters need; too few are refused.", show_default=False)] = None,
    random_factor: Annotated[Optional[float], typer.Option(help="Random fc3 supercells as a multiple of that minimum (fast: 4).", show_default=False)] = None,
    random_seed: Annotated[Optional[int], typer.Option(help="Seed of the random displacements (fast: 0).", show_default=False)] = None,
    cutoff: Annotated[Optional[float], typer.Option(help="fc3 pair cutoff, Å: farther pairs get no fc3 (fewer supercells and parameters); default none.", show_default=False)] = None,
    workers: WorkersOption = 1,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")] = True,
) -> None:
    """Thermal conductivity with phono3py vs the reference (the Matbench Discovery κ task, or the
    records' DFT forces): relax, fc2 and fc3 from the model with all displaced supercells
    batched, κ, and SRD, SRE, SRME per material;
    saved as an xarray Dataset (netCDF) with the metrics printed as a table.

    The model is a model file (MODEL) or any ASE calculator (--calculator)."""
    from phonon_eval.datasets import Dataset, DatasetError
    from phonon_eval.kappa import KappaInputError, KappaMaterial, KappaSettings, read_matbench
    from phonon_eval.kappa_results import run_kappa
    from phonon_eval.store import ResumeError

    cluster = _cluster(workers, scheduler, scheduler_file)
    if (structures is None) == (dataset is None) or (structures is None) != (reference is None):
        fail("give either --structures with --reference (Matbench Discovery files), or --dataset", EXIT_USAGE)
    if dataset is not None and mesh is None:
        fail("records carry no q-point mesh: give --mesh with --dataset", EXIT_USAGE)
    try:
        given = {
            "relax": relax, "fmax": fmax, "relax_steps": relax_steps, "displacement": displacement,
            "mesh": None if mesh is None else _parse_mesh(mesh), "method": method, "isotope": isotope,
            "temperatures": None if temperatures is None else _parse_temperatures(temperatures),
            "displacements": displacements, "random_supercells": random_supercells, "random_factor": random_factor,
            "random_seed": random_seed, "cutoff": cutoff,
        }
        settings = KappaSettings.from_protocol(protocol, **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    provider = _provider(model, calculator, calculator_kwargs, device, dtype)
    with reported(KappaInputError, DatasetError, OSError):
        if structures is not None:
            by_id = {m.id: m for m in read_matbench(structures, reference)}
            known, load = by_id, by_id.__getitem__
            ids = materials.split(",") if materials else list(by_id)
            inputs = {"structures": str(structures), "reference": str(reference)}
        else:
            data = Dataset(dataset)
            known, load = data, lambda i: KappaMaterial.from_record(data[i])
            ids = materials.split(",") if materials else data.split(split)
            inputs = {"dataset": str(dataset), "split": "" if materials else split}
        missing = [i for i in ids if i not in known]
        if missing:
            raise DatasetError(f"materials not in the input: {', '.join(missing)}")
    limit = _table_limit(table)
    with reported(ResumeError):
        summary = run_kappa(
            provider, load, ids, settings, out, resume=resume or retry_failed, retry_failed=retry_failed,
            cluster=cluster, progress=progress, console=err_console, attrs=inputs,
        )
    console.print(summary.table(limit=limit))
    console.print(f"wrote {out}")
    if (summary.dataset["status"] == "failed").all():
        fail(f"every material failed ({len(ids)})")


from cli.plot import plot  # noqa: E402

app.command()(plot)


def main() -> None:
    app()
