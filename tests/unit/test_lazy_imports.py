"""`import qwenvl` needs neither vLLM nor torch; constructing an engine without them names the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_without_vllm_or_torch() -> None:
    result = _run(
        """
        import sys
        for name in ("vllm", "torch", "transformers", "torchvision"):
            sys.modules[name] = None  # makes any import of them fail
        import qwenvl
        from qwenvl import ChatRequest, Message, Image, Text, smart_resize, image_tokens
        from qwenvl.layout import *  # noqa
        assert image_tokens(640, 480) > 0
        try:
            qwenvl.VLLMEngine("Qwen/Qwen2-VL-2B-Instruct")
        except qwenvl.MissingDependencyError as exc:
            print("ERR", exc)
        try:
            qwenvl.TransformersEngine("Qwen/Qwen2-VL-2B-Instruct")
        except qwenvl.MissingDependencyError as exc:
            print("ERR", exc)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "vllm") and sys.modules[m] is not None))
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "pip install 'qwenvl[vllm]'" in lines[0]
    assert "pip install 'qwenvl[transformers]'" in lines[1]
    assert lines[2] == "[]"


def test_plain_import_loads_no_heavy_module() -> None:
    result = _run("import sys, qwenvl; print([m for m in ('torch', 'vllm', 'transformers') if m in sys.modules])")
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize(
    ("module", "framework", "pip"),
    [
        ("langchain_qwenvl", "langchain_core", "langchain-core>=1.0,<2"),
        ("llama_index.llms.qwenvl", "llama_index.core", "llama-index-core>=0.14,<0.15"),
        ("llama_index.multi_modal_llms.qwenvl", "llama_index.core", "llama-index-core>=0.14,<0.15"),
        ("llama_index.readers.qwenvl", "llama_index.core", "llama-index-core>=0.14,<0.15"),
    ],
)
def test_an_integration_without_its_framework_names_the_pip_command(module: str, framework: str, pip: str) -> None:
    code = (
        f"import sys; sys.modules[{framework!r}] = None\n"
        "from qwenvl.errors import MissingDependencyError\n"
        f"try:\n    import {module}\nexcept MissingDependencyError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"pip install '{pip}'" in out.stdout
