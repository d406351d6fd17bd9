"""Ziggurat's intermediate representation."""

from . import dtypes
from .graph import Dim, Graph, Model, Node, Type, ValueInfo

__all__ = ["Dim", "Graph", "Model", "Node", "Type", "ValueInfo", "dtypes"]
