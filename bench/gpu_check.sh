#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) in one command; prints one markdown table.
#   bash bench/gpu_check.sh        one H100/H200, <= 8 minutes in all: creates $VENV (.venv) if
#                                  missing, `pip install -e .` there, then the CUDA JAX of the
#                                  same version, then `python -m bench.gpu_check`
#   bash bench/gpu_check.sh --cpu  no install: the tiny CPU mode with $PY (.venv/bin/python)
# Env: BUDGET_S (whole run, default 480; 180 with --cpu), VENV, PY, SKIP_INSTALL=1 (the venv is
# ready), PIP_ARGS (e.g. "--no-index --find-links /wheels" on a machine without the index).
# Other arguments go to bench.gpu_check (e.g. --out check.json, --only attention train).
# If an install step fails, the check runs with the JAX the venv has, and the table says so.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--cpu" ]; then
  shift
  exec timeout -k 5 "${BUDGET_S:-180}" "${PY:-.venv/bin/python}" -m bench.gpu_check --cpu \
    --budget-s "$(( ${BUDGET_S:-180} - 10 ))" "$@"
fi

budget=${BUDGET_S:-480}
VENV=${VENV:-.venv}
py="$VENV/bin/python"
log=$(mktemp /tmp/gpu_check_install.XXXXXX)
on_gpu() { "$py" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' >>"$log" 2>&1; }
pip_in() {  # pip_in SECONDS ARGS...: bounded by what the run has left
  local t=$1 cap=$(( budget - SECONDS - 200 )); shift  # leave >= 200 s for the check
  (( t > cap )) && t=$cap
  (( t < 10 )) && t=10
  timeout "$t" "$py" -m pip install -q ${PIP_ARGS:-} "$@" >>"$log" 2>&1
}

note="skipped (SKIP_INSTALL=1)"
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  [ -x "$py" ] || python3 -m venv "$VENV" >>"$log" 2>&1
  if ! pip_in 180 -e .; then
    note="pip install -e . failed (log $log)"
  else
    ver=$("$py" -c 'import jax; print(jax.__version__)' 2>>"$log")
    note="no jax[cuda12] or jax[cuda13] ==$ver installed that sees a GPU (log $log)"
    for extra in cuda12 cuda13; do
      if pip_in 150 "jax[$extra]==$ver" && on_gpu; then note="jax[$extra]==$ver"; break; fi
    done
  fi
fi
backend=$("$py" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo "none (no jax)")
[ "$backend" = gpu ] || note="$note; jax backend $backend, not gpu"
echo "gpu_check: install: $note ($SECONDS s)" >&2

left=$(( budget - SECONDS - 15 ))
timeout -k 5 "$(( left + 10 ))" "$py" -m bench.gpu_check --budget-s "$left" --install "$note" "$@"
