"""What a reply from the server means for the spooled item that caused it.

One place decides, for both links, whether an item was delivered, must be
dead-lettered, retried later, or whether the *link* failed (the item goes back
to the spool untouched and is sent again over whichever link works).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # spool.ack
    REJECTED = "rejected"  # spool.dead_letter(reason): resending cannot help or may duplicate
    RETRY = "retry"  # spool.nack(error): the server answered but could not take it now
    LINK_DOWN = "link_down"  # spool.release: the link failed; resend over a working link
    AUTH = "auth"  # spool.release + back off: token refused, not the item's fault


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str = ""
    reply: dict[str, Any] | None = None
    # True when the message may have reached the server (it was written to the
    # wire) although we did not learn the outcome: resending it may duplicate
    # it on a server without event_id dedup.
    maybe_stored: bool = False

    @property
    def duplicate(self) -> bool:
        return bool(self.reply and self.reply.get("duplicate"))


# Validation messages of protocol.md and lpr_agent.protocol.parse_inbound.
_VALIDATION = re.compile(
    r"missing required field|invalid field|must be a json object|not json|bad request|"
    r"invalid json|malformed",
    re.IGNORECASE,
)
# A deployed server's KeyError leaking out as the message, e.g. "'detections'"
# (protocol.md quirk 8): the detection may already be stored.
_KEYERROR = re.compile(r"^'[^']*'$")
# An error a server raises while it is temporarily unable to store.
_TRANSIENT = re.compile(
    r"temporar|unavailable|try again|overload|busy|timeout|internal server error",
    re.IGNORECASE,
)


def classify_reply(reply: Any, *, event: str | None = None) -> Outcome:
    """Classify a Socket.IO outcome (ack data or the reply/``error`` event)."""
    if not isinstance(reply, dict):
        return Outcome(Verdict.RETRY, f"unexpected reply {reply!r:.200}", None, maybe_stored=True)
    if reply.get("success") is True or reply.get("duplicate") is True:
        return Outcome(Verdict.DELIVERED, "", reply)
    message = str(reply.get("message") or reply.get("error") or "rejected without a message")
    if _KEYERROR.match(message):
        # Never resend: the server may have stored it before failing.
        return Outcome(
            Verdict.REJECTED,
            f"server error after a possible store (deployed-server quirk): {message}",
            reply,
            maybe_stored=True,
        )
    if _VALIDATION.search(message):
        return Outcome(Verdict.REJECTED, message, reply)
    if _TRANSIENT.search(message):
        return Outcome(Verdict.RETRY, message, reply, maybe_stored=True)
    # An unknown refusal: the safe side for "never resend blindly" is a dead
    # letter with the server's words; an operator can requeue it.
    return Outcome(Verdict.REJECTED, message, reply, maybe_stored=True)


def classify_http(status: int, body: Any, text: str) -> Outcome:
    """Classify a REST response (``body`` is the decoded JSON or None)."""
    message = ""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("error") or "")
    if not message:
        message = text.strip()[:300]
    if 200 <= status < 300:
        if isinstance(body, dict) and (body.get("success") is True or body.get("duplicate")):
            return Outcome(Verdict.DELIVERED, "", body)
        # A proxy or captive portal answering 200 is not the LPR server.
        return Outcome(
            Verdict.RETRY, f"HTTP {status} without the expected body: {message}", None,
            maybe_stored=True,
        )
    if status in (401, 403):
        return Outcome(Verdict.AUTH, f"HTTP {status}: {message or 'unauthorized'}", None)
    if status in (408, 425, 429):
        return Outcome(Verdict.RETRY, f"HTTP {status}: {message}", None, maybe_stored=True)
    if 400 <= status < 500:
        reply = body if isinstance(body, dict) else None
        return Outcome(Verdict.REJECTED, f"HTTP {status}: {message}", reply)
    if status == 500 and "400 bad request" in message.lower():
        # Deployed servers answer a malformed body with 500 (protocol.md quirk 6).
        return Outcome(Verdict.REJECTED, f"HTTP 500 (malformed body): {message}", None)
    return Outcome(Verdict.RETRY, f"HTTP {status}: {message}", None, maybe_stored=True)
