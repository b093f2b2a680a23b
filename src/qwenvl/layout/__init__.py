"""Layout-aware document parsing (scanned pages into typed blocks with boxes); filled by the loader issue."""

__all__: list[str] = []
