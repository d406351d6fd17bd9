"""Graph -> Graph optimization passes, one per module, and the pipelines that chain them."""

from .pipeline import optimize

__all__ = ["optimize"]
