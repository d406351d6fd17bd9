"""Ziggurat's intermediate representation."""

from . import dtypes
from .graph import Dim, Graph, Model, Node, SparseTensor, Type, ValueInfo

__all__ = ["Dim", "Graph", "Model", "Node", "SparseTensor", "Type", "ValueInfo", "dtypes"]
