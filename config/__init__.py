"""Shipped configs, packaged as ``escalator.bundled``: ``demo.yaml`` is what ``escalator demo`` runs."""
