#!/usr/bin/env bash
# The README's main job: on the embedded synthetic long-tailed LVIS set,
# generate the data (if absent), train the tiny Mask R-CNN baseline with
# tools/train.py, evaluate it with tools/test.py and print bbox / segm AP,
# APr, APc, APf. The console shows a progress bar per phase; the full logs
# go to $WORK_DIR/<timestamp>/<timestamp>.log (train, then test).
#   CONFIG    config to run (default the tiny Mask R-CNN baseline)
#   WORK_DIR  default work_dirs/demo
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(bash "$ROOT/tools/setup_env.sh")"
PY="$VENV/bin/python"
cd "$ROOT"
CONFIG="${CONFIG:-configs/lvis/mask-rcnn_r18-tiny_fpn_6e_synthetic-lvis.py}"
WORK_DIR="${WORK_DIR:-work_dirs/demo}"
DATA="${MMLT_SYNTHETIC_ROOT:-data/synthetic_lvis/}"
export MMLT_SYNTHETIC_ROOT="$DATA"

START=$(date +%s)
if [ ! -f "$DATA/annotations/lvis_v1_val.json" ]; then
    "$PY" tools/misc/make_synthetic_lvis.py "$DATA"
fi
# tools/test.py evaluates the val set next, so training skips its own
# evaluation after the last epoch
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" --progress \
    --cfg-options val_cfg=None val_dataloader=None val_evaluator=None
CKPT="$WORK_DIR/$(basename -- "$(cat "$WORK_DIR/last_checkpoint")")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR" --progress
echo "main job finished in $(( $(date +%s) - START )) s (data + train + test);" \
    "logs: $WORK_DIR/*/*.log"
