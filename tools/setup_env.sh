#!/usr/bin/env bash
# Create (or reuse) the virtual environment with the pinned stack and this
# checkout installed in editable mode, then print its path on the last line.
#
#   MMLT_VENV              where the venv lives (default
#                          ~/.cache/mmdet_longtail/venv, outside the clone so
#                          later clones reuse it)
#   MMLT_TORCH_SPEC        torch requirement (default the pin of
#   MMLT_TORCHVISION_SPEC  requirements.txt) and the torchvision built for it;
#                          other CUDA versions: docs/install.md
#
#   bash tools/setup_env.sh --check   only says whether MMLT_VENV has this
#                                     checkout installed; builds nothing
#
# The first build compiles mmcv 2.1.0's ops (about 20 min on 2 cores); pip
# caches that wheel, so a later venv installs in about 2 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
# absolute: the checks below run from another directory
VENV="$(realpath -m "${MMLT_VENV:-$HOME/.cache/mmdet_longtail/venv}")"
REQ="$ROOT/requirements.txt"
STAMP="$VENV/.mmdet_longtail-stack-$(sha1sum "$REQ" | cut -c1-12)"

log() { echo "[setup_env $(date +%H:%M:%S)] $*" >&2; }
pin() { grep -E "^$1===?[0-9]" "$REQ" | sed 's/ .*//'; }

# The checkout the venv imports mmdet_longtail from (empty: none). Asked from
# a neutral directory in isolated mode, so neither the current directory nor
# PYTHONPATH can answer for the venv; find_spec locates the package without
# importing it (and torch with it).
installed_root() {
    [ -x "$VENV/bin/python" ] || return 0
    (cd / && "$VENV/bin/python" -I -c 'import importlib.util, os
spec = importlib.util.find_spec("mmdet_longtail")
if spec is not None and spec.origin:
    print(os.path.dirname(os.path.dirname(os.path.realpath(spec.origin))))' \
        2>/dev/null) || true
}

if [ "${1:-}" = "--check" ]; then
    found="$(installed_root)"
    if [ "$found" = "$ROOT" ]; then
        echo "installed"
    elif [ -n "$found" ]; then
        echo "elsewhere: $found"
    else
        echo "missing"
    fi
    exit 0
fi

if [ ! -f "$STAMP" ]; then
    if [ -n "$(find "${PIP_CACHE_DIR:-$HOME/.cache/pip}" -name "$(pin mmcv | sed 's/==/-/')-*.whl" -print -quit 2>/dev/null)" ]; then
        eta="2-5 min if pip's cache holds the mmcv wheel, else about 25 min"
    else
        eta="about 25 min: mmcv compiles its ops once, then pip caches it"
    fi
    log "creating the environment in $VENV ($eta)"
    python3 -m venv "$VENV"
    PIP="$VENV/bin/python -m pip"
    log "step 1/5: pip, setuptools, wheel, ninja"
    $PIP install -q --upgrade pip >&2
    $PIP install -q "$(grep -E '^setuptools' "$REQ" | sed 's/ .*//')" wheel ninja >&2
    log "step 2/5: torch, torchvision, numpy (about 1 min; 4 GB with CUDA's libraries)"
    $PIP install -q "${MMLT_TORCH_SPEC:-$(pin torch)}" \
        "${MMLT_TORCHVISION_SPEC:-$(pin torchvision)}" "$(pin numpy)" >&2
    # a torchvision built for another torch fails only when imported
    if ! tv_error=$("$VENV/bin/python" -c 'import torch, torchvision.ops
torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)' 2>&1); then
        echo "$tv_error" | tail -3 >&2
        log "error: torchvision does not work with this torch:"
        "$VENV/bin/python" -m pip list 2>/dev/null | grep -E '^torch(vision)? ' >&2 || true
        log "install the torchvision built for your torch (docs/install.md)"
        exit 1
    fi
    log "step 3/5: $(pin mmengine)"
    $PIP install -q "$(pin mmengine)" >&2
    log "step 4/5: $(pin mmcv) with its ops (compiles for about 20 min the first time; cached after)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
        $PIP install -q --no-build-isolation "$(pin mmcv)" >&2
    log "step 5/5: mmdet, lvis, evaluation and test packages (about 1 min)"
    # torch, torchvision, mmcv, mmengine are already satisfied
    grep -vE '^(setuptools|torch|mmcv)' "$REQ" | sed 's/ *#.*//' | grep -v '^$' \
        > "$VENV/.requirements-rest.txt"
    $PIP install -q -r "$VENV/.requirements-rest.txt" >&2
    rm -f "$VENV"/.mmdet_longtail-stack-*
    touch "$STAMP"
    log "environment ready"
fi
found="$(installed_root)"
if [ "$found" != "$ROOT" ]; then
    log "installing mmdet_longtail from $ROOT (editable${found:+; it pointed at $found})"
    if ! "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation \
            -e "$ROOT" >"$VENV/.editable-install.log" 2>&1; then
        cat "$VENV/.editable-install.log" >&2
        exit 1
    fi
    found="$(installed_root)"
    if [ "$found" != "$ROOT" ]; then
        log "error: $VENV still imports mmdet_longtail from '${found:-nowhere}', not $ROOT"
        exit 1
    fi
fi
echo "$VENV"
