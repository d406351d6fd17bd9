"""Conformance cases Ziggurat does not pass, each with the reason. Tests mark them xfail(strict),
so a case that starts passing must be removed from here."""

NODE_EXCLUDES: dict[str, str] = {}

DATA_EXCLUDES: dict[str, str] = {}
