"""Differentiable ops by family; ``tinydl.functional`` re-exports their public functions.

Each file: Function subclasses (forward/backward launching ``tinydl.kernels``) and the public
functions that validate arguments on the host before any kernel runs.
"""
