"""Data-centre infrastructure monitoring."""
__version__ = "0.1.0"
