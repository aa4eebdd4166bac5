"""Uplink: drains the spool to the LPR server over Socket.IO, falling back to REST.

See ``drainer.py`` for the delivery rules and ``sio.py`` for the Socket.IO
facts that shape them.
"""

from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.drainer import Uplink, backoff_delay
from lpr_agent.uplink.outcome import Outcome, Verdict, classify_http, classify_reply
from lpr_agent.uplink.stats import UplinkStats

__all__ = [
    "Outcome",
    "Uplink",
    "UplinkConfig",
    "UplinkStats",
    "Verdict",
    "backoff_delay",
    "classify_http",
    "classify_reply",
]
