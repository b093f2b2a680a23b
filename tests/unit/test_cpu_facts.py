"""What the engines read off the CPU they run on."""

from __future__ import annotations

from qwenvl.engine.base import cpu_bfloat16_emulated

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
