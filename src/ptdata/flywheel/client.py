"""A small Python client for the flywheel's feedback API (standard library only)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class FlywheelError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class FlywheelClient:
    """`FlywheelClient("http://127.0.0.1:8080/v1", key).thumbs(iid, "up", event_id="...")`."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        self.base_url, self._key, self.timeout = base_url.rstrip("/"), api_key, timeout

    def __repr__(self) -> str:
        return f"FlywheelClient({self.base_url!r})"

    def _call(self, method: str, path: str, body: Any = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            raise FlywheelError(e.code, detail) from None

    def feedback(self, interaction_id: str, kind: str, value: Any = None, event_id: str | None = None,
                 user: str | None = None) -> dict:
        body = {"interaction_id": interaction_id, "kind": kind, "value": value}
        if event_id:
            body["event_id"] = event_id
        if user:
            body["user"] = user
        return self._call("POST", "/feedback", body)

    def thumbs(self, iid: str, up: bool | str, **kw: Any) -> dict:
        return self.feedback(iid, "thumbs", up if isinstance(up, str) else ("up" if up else "down"), **kw)

    def rating(self, iid: str, stars: int, **kw: Any) -> dict:
        return self.feedback(iid, "rating", stars, **kw)

    def correction(self, iid: str, text: str, **kw: Any) -> dict:
        return self.feedback(iid, "correction", text, **kw)

    def comment(self, iid: str, text: str, **kw: Any) -> dict:
        return self.feedback(iid, "comment", text, **kw)

    def regenerated(self, iid: str, new_iid: str | None = None, **kw: Any) -> dict:
        return self.feedback(iid, "regenerate", new_iid, **kw)

    def choice(self, chosen: str, rejected: str, **kw: Any) -> dict:
        return self.feedback(chosen, "choice", {"chosen": chosen, "rejected": rejected}, **kw)

    def interaction(self, iid: str) -> dict:
        """Needs the admin key."""
        return self._call("GET", f"/interactions/{iid}")
