"""The API's routes, one :class:`fastapi.APIRouter` per area (included by
:func:`escalator.web.app.create_app`)."""
