"""Socket.IO packets built from the stored JSON text (``lpr_agent/uplink/packet.py``)
are byte for byte what python-socketio builds from the decoded dict, and a
real stub stores what was sent that way."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import socketio

from lpr_agent.uplink import UplinkConfig
from lpr_agent.uplink.outcome import Verdict
from lpr_agent.uplink.packet import Packet, RawJSON
from lpr_agent.uplink.sio import SioLink
from tests.helpers.payloads import detection


@pytest.mark.parametrize("namespace", [None, "/", "/cams"])
@pytest.mark.parametrize("ack_id", [None, 0, 12345])
def test_spliced_packet_equals_the_stock_encoding(namespace: str | None,
                                                  ack_id: int | None) -> None:
    payload = detection("cam", event_id=str(uuid.uuid4()), note="ünïcode \"quoted\" \\ </script>")
    text = json.dumps(payload, separators=(",", ":"))
    stock = socketio.packet.Packet(socketio.packet.EVENT, data=["lpr_data", payload],
                                   namespace=namespace, id=ack_id).encode()
    ours = Packet(socketio.packet.EVENT, data=["lpr_data", RawJSON(text)],
                  namespace=namespace, id=ack_id).encode()
    assert ours == stock
    # and what the server decodes is the original payload
    decoded = socketio.packet.Packet(encoded_packet=ours)
    assert decoded.data == ["lpr_data", payload] and decoded.id == ack_id


def test_binary_payloads_still_take_the_stock_path() -> None:
    pkt = Packet(socketio.packet.EVENT, data=["lpr_data", {"image": b"\xff\xd8"}])
    assert pkt.packet_type == socketio.packet.BINARY_EVENT
    assert not Packet.data_is_binary(["lpr_data", RawJSON("{}")])


def test_stored_json_text_is_delivered_as_sent(stub) -> None:
    payload = detection("camera_packet", event_id=str(uuid.uuid4()), ocr_results=["RAW0001"])
    text = json.dumps(payload, separators=(",", ":"))

    async def main() -> tuple[Verdict, Verdict]:
        link = SioLink(UplinkConfig(server_url=stub.url),
                       {"camera_id": "camera_packet", "checkpoint_id": "checkpoint_001"})
        await link.connect()
        try:
            as_text = await (await link.send("detection", text))
            as_dict = await (await link.send("detection", {**payload,
                                                           "event_id": str(uuid.uuid4())}))
        finally:
            await link.close()
        return as_text.verdict, as_dict.verdict

    assert asyncio.run(main()) == (Verdict.DELIVERED, Verdict.DELIVERED)
    recs = stub.records(camera_id="camera_packet")
    assert len(recs) == 2
    assert recs[0]["event_id"] == payload["event_id"]
    assert "RAW0001" in json.dumps(recs[0])
