"""The local Similar Images server: the simages.info protocol over a folder of your own images."""

from .process import ManagedProcess, ServerProcess, free_port

__all__ = ["ManagedProcess", "ServerProcess", "free_port"]
