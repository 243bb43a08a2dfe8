"""Default rendering: Jinja2 templates in ``escalator_plugins/templates/{zh,en}/``.

Registered ``trylast`` so that any other plugin implementing ``render_notification`` answers
first (the hook is ``firstresult``).
"""

from __future__ import annotations

from escalator.delivery.render import RenderContext, Rendered, render_templates
from escalator.hookspecs import hookimpl


@hookimpl(trylast=True)
def render_notification(context: RenderContext) -> Rendered:
    return render_templates(context)
