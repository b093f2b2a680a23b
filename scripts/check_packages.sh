#!/usr/bin/env bash
# Build the four distributions of this repository as wheels, then install each integration alone into a fresh
# virtual environment next to the qwenvl wheel: it must import with its framework, and without its framework
# the import must raise qwenvl's MissingDependencyError naming the pip command.
#
#   bash scripts/check_packages.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
PY=${PYTHON:-python3}
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1
rm -rf "$WORK/wheels"
# the four builds and, below, the three installs run side by side: each is mostly waiting on one core; the
# installs skip byte-compiling, as each venv serves two imports only (79 s for the whole script, not 193 s)
pids=()
for dir in . integrations/langchain integrations/llama_index/llms integrations/llama_index/readers; do
    "$PY" -m pip wheel -q --no-deps -w "$WORK/wheels" "$dir" & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
ls "$WORK/wheels"
core=$(ls "$WORK"/wheels/qwenvl-*.whl)
# test data and fixtures are the test kit's (testkit/), not the product's
if "$PY" -m zipfile -l "$core" | grep -E "synthetic_pages|qwenvl_testkit|conftest"; then
    echo "the qwenvl wheel holds test code"; exit 1
fi
echo "qwenvl wheel: no test code"

check() {  # DIST-WHEEL-PREFIX MODULE FRAMEWORK-DIST
    local wheel venv
    wheel=$(ls "$WORK"/wheels/"$1"-*.whl)
    venv="$WORK/venv-$1"
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --no-compile "$core" "$wheel"
    "$venv/bin/python" -c "import $2; print('$1: import $2 ok')"
    "$venv/bin/python" -m pip uninstall -q -y "$3"
    "$venv/bin/python" - "$2" <<'PY'
import importlib, sys
from qwenvl.errors import MissingDependencyError
try:
    importlib.import_module(sys.argv[1])
except MissingDependencyError as exc:
    assert "pip install" in str(exc), exc
    print(f"without its framework: {exc}")
else:
    raise SystemExit(f"{sys.argv[1]} imported without its framework")
PY
}

pids=()
check langchain_qwenvl langchain_qwenvl langchain-core > "$WORK/check-1.log" 2>&1 & pids+=($!)
check llama_index_llms_qwenvl llama_index.llms.qwenvl llama-index-core > "$WORK/check-2.log" 2>&1 & pids+=($!)
check llama_index_readers_qwenvl llama_index.readers.qwenvl llama-index-core > "$WORK/check-3.log" 2>&1 & pids+=($!)
failed=0
for i in 0 1 2; do
    wait "${pids[$i]}" || failed=1
    cat "$WORK/check-$((i + 1)).log"
done
[ "$failed" = 0 ] || { echo "a distribution failed its check (above)"; exit 1; }
echo "all four distributions build, install and import"
