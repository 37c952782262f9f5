"""pha: sample-efficient multi-task PEFT with hypernetwork-generated adapters."""

__version__ = "0.1.0"

from . import ops  # noqa: E402

__all__ = ["ops", "__version__"]
