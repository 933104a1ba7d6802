"""nn modules: misc."""

__all__: list[str] = []
