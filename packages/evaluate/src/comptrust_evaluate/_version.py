"""The package version, written into run.json."""

__version__ = "0.1.0"
