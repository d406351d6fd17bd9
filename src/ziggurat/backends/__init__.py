"""Array backends. ``xp_of`` gives the array namespace (numpy or CuPy) of a kernel's inputs."""

from .namespace import xp_of

__all__ = ["xp_of"]
