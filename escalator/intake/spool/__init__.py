"""The spool-folder source: events dropped as files into ``<spool>/incoming/``.

Contract (DESIGN.md "Spool folder"; the writer's guide is ``docs/spool.md``): writers put
complete files into ``incoming/`` (best: write into ``tmp/`` and rename in); names starting with
``.`` or ending ``.tmp``/``.part`` are ignored; a file's events and its content hash are
committed in one transaction, then the file moves to ``processed/<local date>/``; a bad file
moves to ``failed/`` with ``<name>.error.json`` saying why. Files present at start are taken. A
file whose content was taken before (same SHA-256) adds nothing and is moved to ``processed/``.

A file is taken only when complete:

- renamed in (inotify ``IN_MOVED_TO``): at once;
- written in place (``IN_CLOSE_WRITE``), or found by a rescan: once it has stayed unchanged
  (size, ``mtime_ns``, inode) for ``settle`` seconds, measured on the injected clock between two
  looks — so a writer that opens, appends and closes several times (Samba, some Windows tools)
  is not taken half-written. Every ``IN_CLOSE_WRITE`` starts the interval again.

A periodic rescan (every ``rescan_interval`` seconds, and at once after an inotify queue
overflow) covers missed events and network filesystems where inotify sees nothing. Without
inotify (not Linux, no watches left, or ``inotify: false``) the rescan alone does the work.

Formats by extension: ``.csv`` registers (:mod:`escalator.intake.registers`), ``.yaml`` /
``.yml`` (one event or a list; safe loader), anything else JSON (one event or a list).

Options: ``path`` (default: the daemon's ``spool_dir``), ``settle`` (seconds, default 2; 0 turns
the check off — only for writers that always rename in), ``rescan_interval`` (seconds, default
30; ``poll_interval`` is an older name for it), ``max_bytes`` (default 1 MiB), ``encoding`` (of
CSV registers; default: detected), ``inotify`` (default true), ``pseudonym_key`` (default
``<state_dir>/pseudonym.key``). Relative paths are read from the config file's folder.

The parts, one concern each: :mod:`.source` (the loop, :class:`~.source.SpoolSource`),
:mod:`.watch` (inotify and the rescan's listing), :mod:`.settle` (the settle rule),
:mod:`.files` (reading, moving to ``processed/`` / ``failed/``, sidecars), :mod:`.decode`
(JSON / YAML / CSV bytes → submissions), :mod:`.keys` (the pseudonym key). The plugin
``escalator_plugins.spool`` registers the source.
"""
