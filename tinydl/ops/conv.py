"""conv ops (see tinydl/ops/__init__.py)."""

__all__: list[str] = []
