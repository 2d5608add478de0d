"""ITSM triage service: the application core and its HTTP edge (never imports torch)."""

__version__ = "0.1.0"
