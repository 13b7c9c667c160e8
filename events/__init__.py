"""Pure data: value types, configuration, errors, the event model and projections. No I/O."""

from __future__ import annotations

from routeledger.events._address import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._address import __all__ as _address_all
from routeledger.events._budgets import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._budgets import __all__ as _budgets_all
from routeledger.events._config import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._config import __all__ as _config_all
from routeledger.events._errors import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._errors import __all__ as _errors_all
from routeledger.events._events import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._events import __all__ as _events_all
from routeledger.events._projections import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._projections import __all__ as _projections_all
from routeledger.events._routing import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._routing import __all__ as _routing_all
from routeledger.events._text import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._text import __all__ as _text_all
from routeledger.events._types import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._types import __all__ as _types_all
from routeledger.events._validation import *  # noqa: F403 - re-export, bounded by each module's __all__
from routeledger.events._validation import __all__ as _validation_all

__all__ = sorted(
    [
        *_address_all,
        *_budgets_all,
        *_config_all,
        *_errors_all,
        *_events_all,
        *_projections_all,
        *_routing_all,
        *_text_all,
        *_types_all,
        *_validation_all,
    ]
)
