"""LangChain integration of qwenvl (ChatQwenVL and the document loader land here)."""

__all__: list[str] = []
