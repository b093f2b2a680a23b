"""Each kind of bad request fails alone, with its typed error, through the real vLLM engine; the rest of its
batch completes and the engine answers normally afterwards."""

from __future__ import annotations

import pytest

from qwenvl import ChatResult
from tests.reliability.faults import assert_answers, bad_kinds, good_request, wait_idle

pytestmark = pytest.mark.engine
KINDS = bad_kinds("/nonexistent-qwenvl-dir")


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_bad_request_fails_alone_in_a_batch(vllm_engine, tmp_path, kind) -> None:  # noqa: ANN001
    bad = bad_kinds(str(tmp_path))[KINDS.index(kind)].build()
    results = vllm_engine.generate([good_request(1), bad, good_request(2)])
    assert len(results) == 3 and all(isinstance(r, ChatResult) for r in results)
    assert results[0].ok and results[2].ok, (results[0].error, results[2].error)
    assert isinstance(results[1].error, kind.error), repr(results[1].error)
    assert results[1].finish_reason == "error"
    assert wait_idle(vllm_engine) == 0


async def test_every_bad_kind_in_one_async_batch(vllm_engine, tmp_path) -> None:  # noqa: ANN001
    kinds = bad_kinds(str(tmp_path))
    batch = [good_request(0), *[k.build() for k in kinds], good_request(1)]
    results = await vllm_engine.agenerate(batch)
    assert results[0].ok and results[-1].ok
    for kind, result in zip(kinds, results[1:-1], strict=True):
        assert isinstance(result.error, kind.error), (kind.name, result.error)


@pytest.mark.parametrize("kind", KINDS[::3], ids=[k.name for k in KINDS[::3]])
async def test_bad_request_stream_raises_typed_error(vllm_engine, tmp_path, kind) -> None:  # noqa: ANN001
    bad = bad_kinds(str(tmp_path))[KINDS.index(kind)].build()
    with pytest.raises(kind.error):
        list(vllm_engine.stream(bad))
    with pytest.raises(kind.error):
        async for _ in vllm_engine.astream(bad):
            pass
    assert wait_idle(vllm_engine) == 0


def test_engine_answers_after_all_bad_input(vllm_engine) -> None:  # noqa: ANN001
    assert_answers(vllm_engine)
    assert vllm_engine.healthy
