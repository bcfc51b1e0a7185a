"""A local stand-in for the Xquik API: the demo's and the test suite's server."""

from worker.sandbox.faults import FaultConfig
from worker.sandbox.server import Sandbox, SandboxConfig
from worker.sandbox.store import Store

__all__ = ["FaultConfig", "Sandbox", "SandboxConfig", "Store"]
