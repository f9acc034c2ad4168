"""CXR gateway: the ``cxr-gateway`` entry point that wires the parts together."""

__version__ = "0.1.0"
