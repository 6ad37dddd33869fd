"""The data flywheel: a logging proxy and feedback API over a real database."""
from .client import FlywheelClient, FlywheelError
from .store import Store

__all__ = ["FlywheelClient", "FlywheelError", "Store"]
