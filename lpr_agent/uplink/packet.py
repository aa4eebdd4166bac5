"""Socket.IO packets as the uplink sends them: a cheaper binary scan, and the
stored JSON text spliced in as it is (no decode/encode of a 50 KB image)."""

from __future__ import annotations

import json
from typing import Any

import socketio


class RawJSON(str):
    """JSON text to splice into a Socket.IO packet as it is (never re-encoded)."""

    __slots__ = ()


# What a Socket.IO event packet adds to its payload on the wire, about:
# '42["health_status",' + ack id + ']' + the WebSocket frame header.
PACKET_OVERHEAD = 32


_LEAF_TYPES = frozenset((str, RawJSON, int, float, bool, type(None)))


class Packet(socketio.packet.Packet):
    """python-socketio's packet with a cheaper scan for binary attachments.

    Every outgoing event is scanned for bytes before it is encoded; the stock
    scan recurses through the payload building lists and calling
    functools.reduce (~12 µs for a 1 KB detection, about 7 % of what sending
    one costs). Same answer, iteratively, with a fast path for JSON leaves
    (~2 µs). Installed through the documented ``serializer=`` argument.

    An event whose payload is :class:`RawJSON` (the spooled JSON text) is
    encoded by splicing that text in: no decode/encode of a 50 KB image.
    """

    def encode(self) -> Any:
        data = self.data
        if (self.packet_type == socketio.packet.EVENT and type(data) is list
                and len(data) == 2 and type(data[1]) is RawJSON):
            head = str(self.packet_type)
            if self.namespace is not None and self.namespace != "/":
                head += self.namespace + ","
            if self.id is not None:
                head += str(self.id)
            return f"{head}[{json.dumps(data[0])},{data[1]}]"
        return super().encode()

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        stack = [data]
        pop = stack.pop
        extend = stack.extend
        leaf = _LEAF_TYPES
        while stack:
            x = pop()
            t = type(x)
            if t in leaf:
                continue
            if t is dict:
                extend(x.values())
            elif t is list:
                extend(x)
            elif isinstance(x, (bytes, bytearray)):
                return True
            elif isinstance(x, dict):  # subclasses, as the stock scan accepts them
                extend(x.values())
            elif isinstance(x, list):
                extend(x)
        return False
