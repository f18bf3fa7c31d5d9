"""Speed of the potential on the Si 64-atom supercell (mp-149) with nequix-mp-1.

Prints compile time, seconds per energy+forces(+stress) call and per HVP, their ratio (the
floor is about 2-3: an HVP is a forward-over-reverse pass), and peak memory. Never asserted.

    python benchmarks/potential.py [--model PATH]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import peak_rss_mb, shared_dir, timed

import phonon_eval as pe
from phonon_eval.potential import _efs, _hvp, _inputs


def main() -> None:
    shared = shared_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shared / "models" / "nequix-mp-1.nqx"))
    args = parser.parse_args()

    potential = pe.load_potential(args.model)
    atoms = pe.read_record(shared / "data" / "mdr" / "mp-149.yaml").supercell()
    graph, r, cell = _inputs(potential, atoms, None)
    v = np.zeros((graph.n_nodes, 3), np.float32)
    v[0, 0] = 1.0

    c_efs, t_efs = timed(lambda: _efs(potential, graph, r, cell))
    c_hvp, t_hvp = timed(lambda: _hvp(potential, graph, r, cell, v))
    print(f"Si {len(atoms)} atoms, {int(graph.edge_mask.sum())} edges (padded to {graph.n_nodes} nodes, {graph.n_edges} edges)")
    print(f"energy+forces+stress: compile+first {c_efs:7.2f} s   per call {t_efs * 1e3:8.1f} ms")
    print(f"HVP                 : compile+first {c_hvp:7.2f} s   per call {t_hvp * 1e3:8.1f} ms")
    print(f"HVP / energy+forces ratio: {t_hvp / t_efs:.2f}")
    print(f"peak memory (RSS): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
