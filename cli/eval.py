"""`pft-eval`: evaluate a potential's phonons and thermal conductivity, convert and inspect models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from cli.common import (
    EXIT_FAILED, EXIT_HELP, EXIT_USAGE, CompileCacheOption, VersionOption, console, err_console, exit_for_results, fail, interrupted, reported,
    use_compile_cache,
)

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


def _option_names(message: str) -> str:
    """A settings error in the words of the command line: the option, not the internal field."""
    for field, option in (("fc_method", "--fc"), ("fc_symmetrization", "--fc-symmetrization"), ("relax_steps", "--relax-steps")):
        message = message.replace(field, option)
    return message


def _table_limit(table: str) -> int | None:
    """The rows `Summary.table` shows for --table (a usage error for anything else)."""
    from phonon_eval.tables import WORST

    if table not in ("worst", "full"):
        fail(f"--table {table}: worst or full", EXIT_USAGE)
    return None if table == "full" else WORST


def _cluster(workers: int, scheduler: str | None, scheduler_file: Path | None, compile_cache: str | None):
    """Where the materials run; JAX's compilation cache is set up before anything compiles."""
    from phonon_eval.fanout import Cluster

    use_compile_cache(compile_cache)
    try:
        cluster = Cluster(workers, scheduler, scheduler_file)
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    if not cluster.in_process:
        err_console.print(f"running on a {cluster.describe()}")
    return cluster


def _ids(known, materials: str | None, where: str) -> list[str]:
    """The comma-separated --materials, each known (else a usage error naming the closest ids)."""
    from phonon_eval.names import not_found

    ids = [i.strip() for i in materials.split(",") if i.strip()]
    for i in ids:
        if i not in known:
            fail(f"--materials: {not_found('material', i, sorted(known), where)}", EXIT_USAGE)
    return ids


def _warn_unknown_elements(provider, numbers) -> None:
    """Name up front the materials the model cannot evaluate, for a model that knows its
    elements; they are still run, and recorded as failed with that reason, so the file covers
    every material asked for. `numbers()`: {id: atomic numbers}, read only when needed."""
    from phonon_eval.runner import knows_elements, unevaluable

    if not knows_elements(provider):
        return
    numbers = numbers()
    bad = unevaluable(provider, numbers)
    if bad:
        listed = "; ".join(f"{m}: {why}" for m, why in list(bad.items())[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        err_console.print(
            f"[yellow]warning:[/] {len(bad)} of {len(numbers)} materials hold elements the model does not know "
            f"and will be recorded as failed: {listed}{more}", highlight=False, soft_wrap=True,
        )


def _run(command: str, out: Path, run):
    """Run `run()`; on Ctrl-C say what was saved and how to resume (exit 130)."""
    from phonon_eval.store import ResultsStore, ResumeError

    try:
        with reported(ResumeError):
            return run()
    except KeyboardInterrupt:
        store = ResultsStore(out)
        interrupted(
            f"{len(store.part_files())} finished materials are saved in {store.parts}/",
            f"run the same `pft-eval {command}` command again with --resume to keep them and do the rest",
        )


def _finish(summary, out: Path, limit: int | None, values: bool = False) -> None:
    """Print the table, and exit by the convention of `cli.common` (0, 3 or 1)."""
    console.print(summary.table(limit=limit, values=values))
    console.print(f"wrote {out}")
    code = exit_for_results(summary.n_ok, summary.n_failed)
    if code == 1:
        fail(f"no material succeeded ({summary.n_failed} failed); the reasons are in {out}")
    if code:
        err_console.print(f"[yellow]{summary.n_failed} of {summary.n_ok + summary.n_failed} materials failed[/] (exit {code}); the reasons are in {out}", highlight=False)
    raise typer.Exit(code)


SplitFileOption = Annotated[Optional[Path], typer.Option(
    "--split-file", help="Split JSON {\"train\": [...], \"test\": [...]} (default: DATASET/split.json), e.g. MDR's pbe_mdr_split.json as it is.",
    show_default=False)]
ValuesOption = Annotated[bool, typer.Option("--values", help="Print the long table: per material and quantity (ω_max, S, F, C_V and the unit-cell volume after relaxation) the model and reference values, the difference and the relative error.")]


@app.command(epilog=EXIT_HELP)
def phonons(
    model: EvalModelArg = None,
    calculator: CalculatorOption = None,
    calculator_kwargs: CalculatorKwargsOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    dataset: Annotated[Path, typer.Option(help="Dataset folder: records plus split.json.")] = BUILTIN_DATASET,
    split: Annotated[str, typer.Option(help="Split to evaluate (train, val, test, ...).")] = "test",
    split_file: SplitFileOption = None,
    materials: Annotated[Optional[str], typer.Option(help="Comma-separated material ids (instead of a split).")] = None,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("phonons.nc"),
    resume: ResumeOption = False,
    retry_failed: RetryFailedOption = False,
    table: TableOption = "worst",
    values: ValuesOption = False,
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
    compile_cache: CompileCacheOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")] = True,
) -> None:
    """Phonons with phonopy vs the records' reference (DFT, MDR PBE, ...): relax, force constants
    from the model, band structure, DOS, ω_max, S, F, C_V; saved as an xarray Dataset (netCDF) with the metrics printed as a table.

    The model is a model file (MODEL) or any ASE calculator (--calculator)."""
    from phonon_eval.datasets import Dataset, DatasetError
    from phonon_eval.phonons import PhononSettings
    from phonon_eval.provider import ProviderError
    from phonon_eval.results import run_phonons

    cluster = _cluster(workers, scheduler, scheduler_file, compile_cache)
    given = {
        "relax": relax, "fmax": fmax, "relax_steps": relax_steps, "fc_method": fc, "displacement": displacement,
        "fc_symmetrization": fc_symmetrization, "nac": nac, "band_points": band_points,
        "mesh": None if mesh is None else _parse_mesh(mesh, lengths=True),
        "temperatures": None if temperatures is None else _parse_temperatures(temperatures),
    }
    try:
        settings = PhononSettings.from_protocol(protocol, **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        fail(_option_names(str(err)), EXIT_USAGE)
    provider = _provider(model, calculator, calculator_kwargs, device, dtype)
    try:
        settings.method_for(provider)
    except ProviderError as err:
        fail(str(err), EXIT_USAGE)
    with reported(DatasetError, OSError):
        data = Dataset(dataset, split_file=split_file)
        ids = _ids(data, materials, str(dataset)) if materials else data.split(split)
        _warn_unknown_elements(provider, lambda: data.atomic_numbers(ids))
    limit = _table_limit(table)
    summary = _run("phonons", out, lambda: run_phonons(
        provider, data, ids, settings, out, resume=resume or retry_failed, retry_failed=retry_failed,
        cluster=cluster, progress=progress, console=err_console,
        attrs={"dataset": str(dataset.resolve()), "split": "" if materials else split},
    ))
    _finish(summary, out, limit, values)


@app.command(epilog=EXIT_HELP)
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
    split_file: SplitFileOption = None,
    materials: Annotated[Optional[str], typer.Option(help="Comma-separated material ids (instead of a split, or a subset of --structures).")] = None,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("kappa.nc"),
    resume: ResumeOption = False,
    retry_failed: RetryFailedOption = False,
    table: TableOption = "worst",
    values: Annotated[bool, typer.Option("--values", help="Print the relative error and the relaxed volume's error beside κ and κ_ref.")] = False,
    protocol: Annotated[str, typer.Option(help="Named protocol of every setting: matbench (the Matbench Discovery κ script), phono3py (force constants by symfc, as phono3py.load) or fast (not Matbench: fc2 and fc3 fitted by symfc to a few random-displacement supercells, about a tenth of the pair supercells, κ within 1 % of the phono3py route in the convergence study). Options given below override it, and the results say which.")] = "matbench",
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
    random_factor: Annotated[Optional[float], typer.Option(help="Random fc3 supercells as a multiple of that minimum, at least 2 (fast: 2).", show_default=False)] = None,
    random_seed: Annotated[Optional[int], typer.Option(help="Seed of the random displacements (fast: 0).", show_default=False)] = None,
    cutoff: Annotated[Optional[float], typer.Option(help="fc3 pair cutoff, Å: farther pairs get no fc3 (fewer supercells and parameters); default none.", show_default=False)] = None,
    workers: WorkersOption = 1,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    compile_cache: CompileCacheOption = None,
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

    cluster = _cluster(workers, scheduler, scheduler_file, compile_cache)
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
        fail(_option_names(str(err)), EXIT_USAGE)
    if split_file is not None and dataset is None:
        fail("--split-file goes with --dataset", EXIT_USAGE)
    provider = _provider(model, calculator, calculator_kwargs, device, dtype)
    with reported(KappaInputError, DatasetError, OSError):
        if structures is not None:
            by_id = {m.id: m for m in read_matbench(structures, reference)}
            load = by_id.__getitem__
            ids = _ids(by_id, materials, str(structures)) if materials else list(by_id)
            numbers = lambda: {i: sorted(set(by_id[i].unitcell.numbers.tolist())) for i in ids}  # noqa: E731
            inputs = {"structures": str(structures.resolve()), "reference": str(reference.resolve())}
        else:
            data = Dataset(dataset, split_file=split_file)
            load = lambda i: KappaMaterial.from_record(data[i])  # noqa: E731
            ids = _ids(data, materials, str(dataset)) if materials else data.split(split)
            numbers = lambda: data.atomic_numbers(ids)  # noqa: E731
            inputs = {"dataset": str(dataset.resolve()), "split": "" if materials else split}
        _warn_unknown_elements(provider, numbers)
    limit = _table_limit(table)
    summary = _run("kappa", out, lambda: run_kappa(
        provider, load, ids, settings, out, resume=resume or retry_failed, retry_failed=retry_failed,
        cluster=cluster, progress=progress, console=err_console, attrs=inputs,
    ))
    _finish(summary, out, limit, values)


@app.command(epilog="Exit status: 0 compared; 1 no material common to all files; 2 bad usage (unreadable files, "
             "a mix of phonon and κ files, a temperature a file lacks).")
def compare(
    files: Annotated[list[Path], typer.Argument(help="Results files of pft-eval phonons, or of pft-eval kappa (not a mix).", show_default=False)],
    temperature: Annotated[float, typer.Option(help="Temperature of S, F, C_V (phonons) or κ, K.")] = 300.0,
    format: Annotated[str, typer.Option("--format", help="table, markdown, csv or json.")] = "table",
    out: Annotated[Optional[Path], typer.Option(help="Write the comparison to this file instead of stdout.", show_default=False)] = None,
    per_material: Annotated[bool, typer.Option("--per-material", help="The long form: one row per material and file.")] = False,
) -> None:
    """Models side by side: one row per results file, the MAE of every metric (κ files: the
    κ_SRME, SRE, SRD means) over the materials every file evaluated successfully, and each
    file's failure counts; which materials that common set leaves out is said on stderr
    (and held in the json)."""
    from phonon_eval.compare import FORMATS, CompareError, compare as _compare

    if format not in FORMATS:
        fail(f"--format {format}: one of {', '.join(FORMATS)}", EXIT_USAGE)
    try:
        comparison = _compare(files, temperature)
    except CompareError as err:
        fail(str(err), EXIT_FAILED if "nothing to compare" in str(err) else EXIT_USAGE)
    err_console.print(comparison.summary(), highlight=False, soft_wrap=True)
    if format == "table":
        table = comparison.table(per_material)
        if out is None:
            console.print(table)
            return
        from rich.console import Console

        with reported(OSError), out.open("w") as f:
            Console(file=f, width=200).print(table)
    else:
        text = comparison.text(format, per_material)
        if out is None:
            typer.echo(text, nl=False)
            return
        with reported(OSError):
            out.write_text(text)
    err_console.print(f"wrote {out}")


from cli.plot import plot  # noqa: E402

app.command()(plot)


def main() -> None:
    app()
