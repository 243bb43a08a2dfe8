"""The school's web console (docs/console.md), served by the daemon at ``/``: sign-in by
one-time link (:mod:`.signin`), who may see and do what (:mod:`.access`), the words of its
pages (:mod:`.words`) and what each page shows (:mod:`.views`). The routes are in
:mod:`escalator.web.routers.console`; the templates in ``templates/console/``."""
