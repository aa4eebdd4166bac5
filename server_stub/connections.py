"""Which Socket.IO connections are open, and which camera each one registered.

Only connections that python-socketio has accepted are entered here (from the
namespace's ``connect`` handler) and each leaves on ``disconnect``, so a flood
of refused or bogus connection attempts leaves nothing behind.
"""

from __future__ import annotations


class Connections:
    def __init__(self) -> None:
        self._open: set[str] = set()
        # sid -> camera registered on that connection; camera -> its live sids.
        self._sid_camera: dict[str, str] = {}
        self._camera_sids: dict[str, set[str]] = {}

    @property
    def count(self) -> int:
        return len(self._open)

    def sids(self) -> list[str]:
        return list(self._open)

    def opened(self, sid: str) -> None:
        self._open.add(sid)

    def register(self, sid: str, camera_id: str) -> None:
        """Connection ``sid`` now speaks for ``camera_id`` (one camera per connection)."""
        previous = self._sid_camera.get(sid)
        if previous is not None and previous != camera_id:
            self._leave(sid, previous)
        self._sid_camera[sid] = camera_id
        self._camera_sids.setdefault(camera_id, set()).add(sid)

    def closed(self, sid: str) -> str | None:
        """Forget ``sid``; returns its camera if that camera has no connection left."""
        self._open.discard(sid)
        camera_id = self._sid_camera.pop(sid, None)
        if camera_id is None:
            return None
        return camera_id if self._leave(sid, camera_id) else None

    def _leave(self, sid: str, camera_id: str) -> bool:
        """Drop ``sid`` from the camera's set; True when that set is now empty."""
        sids = self._camera_sids.get(camera_id)
        if sids is None:
            return False
        sids.discard(sid)
        if sids:
            return False
        del self._camera_sids[camera_id]
        return True

    def is_live(self, camera_id: str) -> bool:
        return camera_id in self._camera_sids
