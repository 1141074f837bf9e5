"""The package version, in one place (the package face and the policies files carry it)."""

__version__ = "0.1.0"
