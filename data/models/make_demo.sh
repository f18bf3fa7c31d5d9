#!/usr/bin/env bash
# Reproduce data/models/demo.ckpt: a small Nequix trained from scratch by pft-finetune on the
# EMT upstream frames (data/emt-frames, made by `python -m phonon_eval.generate data/emt-frames
# --frames`). About 10 minutes on 2 CPU cores. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
pft-finetune --init data/models/demo-arch.toml \
    --cotrain data/emt-frames/train.extxyz.xz --cotrain-val data/emt-frames/val.extxyz.xz \
    --config data/models/demo-train.toml --out data/models/demo.ckpt --metrics data/models/demo.csv "$@"
rm -f data/models/demo.ckpt.state  # optimiser state: only needed to resume, not shipped
