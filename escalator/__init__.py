"""escalator — notification and escalation daemon for school joint prevention and control."""

__version__ = "0.1.0"
