"""pytest-madengine: madengine's models.json as pytest items that build, run in Docker and report."""

from __future__ import annotations

from .gpus.lease import Lease
from .report.results import Result, parse_performance
from .zoo.models import ModelSpec, load_models

__all__ = ["Lease", "ModelSpec", "Result", "load_models", "parse_performance"]
__version__ = "0.1.0"
