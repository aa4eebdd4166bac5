"""Camera registration over REST, only when Socket.IO stays unavailable.

Deployed servers refuse Socket.IO for a camera once it has registered over
REST, until they restart (protocol.md quirk 8). So the uplink registers over
REST only when ``LinkState.should_register_over_rest`` says REST has worked
while Socket.IO has not for ``rest_register_after_s``.
"""

from __future__ import annotations

import logging

from lpr_agent.identity import CameraIdentity
from lpr_agent.protocol import Kind, now_timestamp
from lpr_agent.uplink.linkstate import LinkState
from lpr_agent.uplink.outcome import Verdict
from lpr_agent.uplink.rest import RestLink

log = logging.getLogger(__name__)


def registration_payload(identity: CameraIdentity) -> dict[str, str]:
    return {"camera_id": identity.camera_id, "checkpoint_id": identity.checkpoint_id}


async def maybe_register_over_rest(rest: RestLink, identity: CameraIdentity,
                                   state: LinkState) -> None:
    if not state.should_register_over_rest():
        return
    state.rest_registered = True
    payload = {**registration_payload(identity), "timestamp": now_timestamp()}
    outcome = await rest.send(Kind.REGISTRATION, payload)
    if outcome.verdict is Verdict.DELIVERED:
        log.info("uplink: registered over REST (Socket.IO unavailable for %.0f s while REST "
                 "worked)", state.config.rest_register_after_s)
    else:
        # A rejection will not change: do not ask again. Anything else: retry later.
        state.rest_registered = outcome.verdict is Verdict.REJECTED
        log.warning("uplink: REST registration failed: %s", outcome.reason)
