"""lpr-agent: read licence plates at the edge and deliver every reading to the LPR server."""

__version__ = "0.1.0"
