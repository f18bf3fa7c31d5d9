"""`pft-eval data`: list, describe and validate phonon reference datasets."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cli.common import EXIT_FAILED, EXIT_USAGE, console, err_console, fail

if TYPE_CHECKING:
    from phonon_eval.datasets import Dataset

app = typer.Typer(
    name="data",
    help="Inspect phonon reference datasets: a folder of records (MDR / phonopy / phono3py "
    "yaml files or folders) plus a split file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DatasetArg = Annotated[
    Path,
    typer.Argument(
        help="Dataset folder: record files or phonopy/phono3py sub-folders, and split.json."
    ),
]
SplitFileOpt = Annotated[
    Optional[Path],
    typer.Option("--split-file", help="Split JSON file (default: DATASET/split.json)."),
]
NoProgressOpt = Annotated[
    bool, typer.Option("--no-progress", help="Do not show progress on stderr.")
]


def _open(folder: Path, split_file: Path | None) -> Dataset:
    # imported here so that `--help` stays fast
    from phonon_eval.datasets import Dataset, DatasetError

    try:
        return Dataset(folder, split_file=split_file)
    except DatasetError as err:
        fail(str(err), EXIT_USAGE)


def _progress(description: str, no_progress: bool) -> Callable[[Iterable[str]], Iterable[str]]:
    from rich.progress import track

    def wrap(ids: Iterable[str]) -> Iterable[str]:
        ids = list(ids)
        return track(
            ids, description=description, console=err_console, disable=no_progress, transient=True
        )

    return wrap


@app.command("list")
def list_(
    dataset: DatasetArg,
    split: Annotated[
        Optional[str], typer.Option("--split", help="Only the ids of this split, e.g. test.")
    ] = None,
    split_file: SplitFileOpt = None,
    cache: Annotated[
        bool, typer.Option("--cache", help="Keep the index in DATASET/index.json for next time.")
    ] = False,
    no_progress: NoProgressOpt = False,
) -> None:
    """List the records: id, split, formula, supercell atoms and space group."""
    from rich.table import Table

    from phonon_eval.datasets import DatasetError
    from phonon_eval.records import RecordError

    ds = _open(dataset, split_file)
    try:
        splits = ds.splits
    except DatasetError as err:
        fail(str(err))
    if split is not None and split not in splits:
        available = ", ".join(splits) or f"none ({ds.split_file} does not exist; give one with --split-file)"
        fail(f"unknown split {split!r}; available splits: {available}", EXIT_USAGE)
    try:
        ids = ds.ids if split is None else ds.split(split)
    except DatasetError as err:  # split ids without a record
        fail(str(err))
    unreadable: dict[str, RecordError] = {}
    progress = _progress("reading records", no_progress)
    rows = ds.index(ids, cache=cache, progress=progress, on_error=unreadable.__setitem__)
    entries = {e.id: e for e in rows}

    title = f"{dataset} ({len(ids)} records{'' if split is None else f', split {split}'})"
    table = Table(title=title)
    for column in ("id", "split", "formula", "atoms", "space group"):
        table.add_column(column, justify="right" if column == "atoms" else "left")
    for i in ids:
        member = ", ".join(name for name, members in splits.items() if i in members) or "-"
        if i in unreadable:
            table.add_row(i, member, "[red]unreadable[/]", "", f"[red]{unreadable[i].field}[/]")
            continue
        e = entries[i]
        group = f"{e.space_group} ({e.space_group_number})"
        table.add_row(e.id, member, e.formula, str(e.n_atoms), group)
    console.print(table)
    if unreadable:
        fail(
            f"{len(unreadable)} record(s) could not be read; "
            f"run `pft-eval data validate {dataset}` for details"
        )


@app.command()
def describe(
    dataset: DatasetArg,
    material_id: Annotated[
        str, typer.Argument(metavar="ID", help="Record id (file stem or folder name).")
    ],
    split_file: SplitFileOpt = None,
) -> None:
    """Show one record: structure, supercell, force constants, dataset, NAC and reference values."""
    import numpy as np
    from rich.table import Table

    from phonon_eval.datasets import DatasetError
    from phonon_eval.records import MDR_REFERENCE_KEYS, RecordError

    ds = _open(dataset, split_file)
    if material_id not in ds:
        from phonon_eval.names import not_found

        fail(f"{not_found('record', material_id, ds.ids, str(dataset))} (all: `pft-eval data list {dataset}`)", EXIT_USAGE)
    try:
        record = ds[material_id]
        member = ", ".join(ds.splits_of(material_id)) or "-"
    except (RecordError, DatasetError) as err:
        fail(str(err))

    def matrix(m: np.ndarray | None) -> str:
        return "identity" if m is None else " ".join(str(row) for row in np.round(m, 6).tolist())

    symbol, number = record.space_group
    lattice = record.unitcell.cell.cellpar().round(4).tolist()
    if record.force_constants is not None:
        fc = f"stored, {record.force_constants.shape} eV/Å²"
    else:
        fc = "produced from the dataset on use"
    nac = record.nac_params
    n_prim, n_sc = record.n_primitive_atoms, record.n_supercell_atoms
    rows = [
        ("source", str(record.source)),
        ("split", member),
        ("formula", record.formula),
        ("space group", f"{symbol} ({number})"),
        ("unit cell", f"{len(record.unitcell)} atoms, lattice {lattice} (Å, °)"),
        ("primitive matrix", f"{matrix(record.primitive_matrix)} ({n_prim} atoms)"),
        ("supercell matrix", f"{matrix(record.supercell_matrix)} ({n_sc} atoms)"),
        ("force constants", fc),
        ("dataset", _describe_dataset(record.dataset)),
        ("NAC", "-" if nac is None else f"Born charges and ε∞ (factor {nac.get('factor')})"),
    ]
    if record.fc3_dataset is not None:
        rows.append(("fc3 supercell matrix", matrix(record.fc3_supercell_matrix)))
        rows.append(("fc3 dataset", _describe_dataset(record.fc3_dataset)))
    for key, value in record.reference.items():
        value = np.asarray(value)
        shown = np.round(value, 6).tolist() if value.size <= 6 else f"array {value.shape}"
        unit = MDR_REFERENCE_KEYS.get(key, "")
        rows.append((f"reference.{key}", f"{shown} {unit if unit != '1' else ''}".rstrip()))
    table = Table(title=material_id, show_header=False)
    for name, text in rows:
        table.add_row(name, text)
    console.print(table)


def _describe_dataset(dataset: dict | None) -> str:
    if dataset is None:
        return "-"
    if "first_atoms" in dataset:
        n = len(dataset["first_atoms"])
        pairs = sum(len(d.get("second_atoms", [])) for d in dataset["first_atoms"])
        forces = "with" if all("forces" in d for d in dataset["first_atoms"]) else "without"
        extra = f" + {pairs} pairs" if pairs else ""
        return f"{n} displacement(s){extra} (type 1), {forces} forces"
    forces = "with" if dataset.get("forces") is not None else "without"
    return f"{len(dataset['displacements'])} supercells (type 2), {forces} forces"


@app.command()
def validate(
    dataset: DatasetArg, split_file: SplitFileOpt = None, no_progress: NoProgressOpt = False
) -> None:
    """Read every record and check the split file; list every problem, exit 1 if there are any."""
    from rich.table import Table

    ds = _open(dataset, split_file)
    problems = ds.validate(progress=_progress("validating", no_progress))
    if not problems:
        sizes = ", ".join(f"{name} {len(ids)}" for name, ids in ds.splits.items())
        console.print(f"ok: {len(ds)} records in {dataset}; splits: {sizes or 'none'}")
        return
    table = Table(title=f"{len(problems)} problem(s) in {dataset}")
    for column in ("id", "file", "field", "problem"):
        table.add_column(column, overflow="fold")
    for p in problems:
        table.add_row(p.id or "-", str(p.file), p.field, p.message)
    console.print(table)
    fail(f"{len(problems)} problem(s) found in {dataset}", EXIT_FAILED)
