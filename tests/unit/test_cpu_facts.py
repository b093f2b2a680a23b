"""What the engines read off the CPU they run on."""

from __future__ import annotations

from qwenvl.engine.base import cpu_bfloat16_emulated, cpu_kv_cache_fixed

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\nbugs\t\t:\n"
AVX512 = "processor\t: 0\nflags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_bf16\n"


def test_bfloat16_is_emulated_on_x86_without_avx512() -> None:
    assert cpu_bfloat16_emulated(AVX2, "x86_64")
    assert cpu_bfloat16_emulated(AVX2, "AMD64")
    assert not cpu_bfloat16_emulated(AVX512, "x86_64")
    assert cpu_bfloat16_emulated("flags\t\t: fpu avx512fx\n", "x86_64")  # a flag is a whole word


def test_other_machines_and_unreadable_flags_are_not_flagged() -> None:
    assert not cpu_bfloat16_emulated(AVX2, "aarch64")  # Arm: no x86 flags to go by
    assert not cpu_bfloat16_emulated("processor\t: 0\n", "x86_64")  # no flags line


def test_this_machine_reads_without_error() -> None:
    assert isinstance(cpu_bfloat16_emulated(), bool)


def test_kv_cache_is_fixed_by_the_environment_or_the_engine_arguments() -> None:
    assert cpu_kv_cache_fixed(environ={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert cpu_kv_cache_fixed({"kv_cache_memory_bytes": 2**30}, environ={})
    assert not cpu_kv_cache_fixed(environ={})  # measured after the profiling run: it must run
    assert not cpu_kv_cache_fixed(environ={"VLLM_CPU_KVCACHE_SPACE": "0"})
    assert not cpu_kv_cache_fixed(environ={"VLLM_CPU_KVCACHE_SPACE": ""})
    assert not cpu_kv_cache_fixed(environ={"VLLM_CPU_KVCACHE_SPACE": "lots"})


def test_server_process_skips_the_encoder_profiling_only_with_a_given_kv_cache(monkeypatch) -> None:  # noqa: ANN001
    from qwenvl import testing

    monkeypatch.setattr(testing, "_vllm_on_cpu", lambda: True)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)  # the server gets 1 GiB then
    assert "--skip-mm-profiling" in testing.VLLMServerProcess("m")._args
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "0")  # measured after the profiling run: it must run
    assert "--skip-mm-profiling" not in testing.VLLMServerProcess("m")._args
    assert "--skip-mm-profiling" in testing.VLLMServerProcess("m", skip_mm_profiling=True)._args
    monkeypatch.setattr(testing, "_vllm_on_cpu", lambda: False)  # on a GPU, the run sizes the KV cache
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    assert "--skip-mm-profiling" not in testing.VLLMServerProcess("m")._args
