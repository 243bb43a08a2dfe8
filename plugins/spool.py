"""The spool-folder source plugin: registers :class:`escalator.intake.spool.source.SpoolSource`
(type ``spool``; the contract is :mod:`escalator.intake.spool` and ``docs/spool.md``)."""

from escalator.hookspecs import hookimpl
from escalator.intake.spool.source import SpoolSource


@hookimpl
def register_sources(register):
    register(SpoolSource)
