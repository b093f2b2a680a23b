#!/usr/bin/env bash
# One environment per integration package, holding just that package, its dependencies and its test extra, so
# that its tests run from its own folder the way its users install it (`make test` runs them there):
#   .venv-langchain, .venv-llama-index-llms, .venv-llama-index-readers
# torch and vLLM's CPU build (gigabytes, installed in a particular order: see scripts/install.sh) are installed
# once, in .venv-base, which each of these environments sees through a .pth file; whatever else a package needs,
# pip installs in that package's own environment from its pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1
BASE=${BASE:-.venv-base}
if ! "$BASE/bin/python" -c "import vllm" 2>/dev/null; then
    python3 -m venv "$BASE"
    bash scripts/install.sh --engine-only "$BASE"
fi
purelib() { "$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
for dist in integrations/langchain integrations/llama_index/llms integrations/llama_index/readers; do
    venv=.venv-$(echo "${dist#integrations/}" | tr '/_' '--')
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    purelib "$BASE" > "$(purelib "$venv")/_qwenvl_engine_base.pth"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e . -e testkit -e "$dist[test]"
    echo "$venv: $("$venv/bin/python" -m pip list --format=freeze 2>/dev/null | grep -ci -e llama -e langchain) framework packages, $(basename "$dist")"
done
