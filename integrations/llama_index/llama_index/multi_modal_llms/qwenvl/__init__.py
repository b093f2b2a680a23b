"""LlamaIndex integration of qwenvl (filled by the LlamaIndex issue)."""

__all__: list[str] = []
