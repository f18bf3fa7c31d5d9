"""Fine-tuning validated on ω_max, S, F and C_V, and the checkpoint kept by a chosen metric."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

import phonon_eval as pe
from conftest import REPO
from finetune.run import RunSpec, run
from finetune.trainer import TrainConfig
from finetune.validation import PROPERTY_METRICS, RATIO
from phonon_eval.phonons import PhononSettings, evaluate_material


@pytest.fixture(scope="module")
def cu_au(tmp_path_factory):
    """A dataset of two built-in EMT records: Cu to train on, Au to validate on."""
    folder = tmp_path_factory.mktemp("cu-au")
    for name in ("Cu-fcc", "Au-fcc"):
        shutil.copy(REPO / "data" / "emt" / f"{name}.yaml.xz", folder)
    (folder / "split.json").write_text(json.dumps({"train": ["Cu-fcc"], "val": ["Au-fcc"]}))
    return folder


def test_property_validation_and_selection(cu_au, tiny_ckpt, tmp_path):
    out = tmp_path / "model.ckpt"
    config = TrainConfig(epochs=3, batch_size=1, learning_rate=3e-3, schedule="constant", val_every=1,
                         select_by=RATIO, force_weight=0.0, stress_weight=0.0)
    run(RunSpec(out=out, model=tiny_ckpt, dataset=cu_au, metrics=tmp_path / "m.csv"), config, progress=False)
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    # before training: the evaluator's own errors of the starting model on the validation record
    row = evaluate_material(pe.load_potential(tiny_ckpt), pe.read_record(cu_au / "Au-fcc.yaml.xz"),
                            PhononSettings.from_protocol("exact", relax=False))
    t300 = list(PhononSettings().temperatures).index(300.0)
    expected = {"val_omega_max_mae": abs(row["omega_max"] - row["omega_max_ref"])}
    for field in ("entropy", "free_energy", "heat_capacity"):
        expected[f"val_{field}_mae"] = abs(row[field][t300] - row[f"{field}_ref"][t300])
    for name in PROPERTY_METRICS:
        assert float(rows[0][name]) == pytest.approx(expected[name], rel=1e-4), name
    assert float(rows[0][RATIO]) == 1.0
    ratios = [float(r[RATIO]) for r in rows]
    for r in rows:
        assert float(r[RATIO]) == pytest.approx(max(float(r[n]) / float(rows[0][n]) for n in PROPERTY_METRICS))
    best = out.with_name("model.best.ckpt")
    assert best.is_file()
    # the kept checkpoint is the epoch with the lowest worst-property ratio, at most the start's
    chosen = int(np.argmin(ratios))
    assert min(ratios) <= 1.0
    kept = pe.load_potential(best)
    kept_row = evaluate_material(kept, pe.read_record(cu_au / "Au-fcc.yaml.xz"), PhononSettings.from_protocol("exact", relax=False))
    assert abs(kept_row["entropy"][t300] - kept_row["entropy_ref"][t300]) == pytest.approx(float(rows[chosen]["val_entropy_mae"]), rel=1e-4)


def test_selection_needs_a_metric_that_is_measured(cu_au, tiny_ckpt, tmp_path):
    spec = RunSpec(out=tmp_path / "m.ckpt", model=tiny_ckpt, dataset=cu_au)
    with pytest.raises(ValueError, match="unknown select_by metric 'val_s'"):
        run(spec, TrainConfig(select_by="val_s"), progress=False)
    with pytest.raises(ValueError, match="select_by val_entropy_mae is a phonon-property metric: set val_every"):
        run(spec, TrainConfig(select_by="val_entropy_mae"), progress=False)
