"""CXR gateway: the ``cxr-gateway`` entry point that wires the parts together."""

from importlib.metadata import version

__version__ = version("cxr-gateway")  # pyproject.toml's, as installed
