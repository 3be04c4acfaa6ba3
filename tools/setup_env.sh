#!/usr/bin/env bash
# Create (or reuse) the virtual environment with the pinned stack and this
# package installed in editable mode, then print its path on the last line.
#
#   MMLT_VENV        where the venv lives (default ~/.cache/mmdet_longtail/venv,
#                    outside the clone so CI and later clones reuse it)
#   MMLT_TORCH_SPEC  torch requirement (default the CPU pin of
#                    requirements.txt); GPU users: see README "Install on GPU"
#
# The mmcv 2.1.0 source build takes ~13 min on 2 cores the first time; pip
# caches the built wheel, so later venvs install in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${MMLT_VENV:-$HOME/.cache/mmdet_longtail/venv}"
REQ="$ROOT/requirements.txt"
STAMP="$VENV/.mmdet_longtail-stack-$(sha1sum "$REQ" | cut -c1-12)"

log() { echo "[setup_env] $*" >&2; }
pin() { grep -E "^$1==" "$REQ" | sed 's/ .*//'; }

if [ ! -f "$STAMP" ]; then
    log "creating the environment in $VENV (first run: ~15 min, mmcv builds from source)"
    python3 -m venv "$VENV"
    PIP="$VENV/bin/python -m pip"
    $PIP install -q --upgrade pip >&2
    $PIP install -q "$(grep -E '^setuptools' "$REQ" | sed 's/ .*//')" wheel ninja >&2
    $PIP install -q "${MMLT_TORCH_SPEC:-$(pin torch)}" "$(pin numpy)" >&2
    $PIP install -q "$(pin mmengine)" >&2
    log "building $(pin mmcv) with its ops (cached after the first build)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
        $PIP install -q --no-build-isolation "$(pin mmcv)" >&2
    # everything else; torch/mmcv/mmengine are already satisfied
    grep -vE '^(setuptools|torch|mmcv)' "$REQ" | sed 's/ *#.*//' | grep -v '^$' \
        > "$VENV/.requirements-rest.txt"
    $PIP install -q -r "$VENV/.requirements-rest.txt" >&2
    rm -f "$VENV"/.mmdet_longtail-stack-*
    touch "$STAMP"
fi
# editable install of this checkout (fast; re-pointed when the clone moves)
if ! "$VENV/bin/python" -c "import mmdet_longtail, sys, os; \
sys.exit(0 if os.path.dirname(os.path.dirname(mmdet_longtail.__file__)) == '$ROOT' else 1)" \
        2>/dev/null; then
    log "installing mmdet_longtail from $ROOT (editable)"
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" >&2
fi
echo "$VENV"
