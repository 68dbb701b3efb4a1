"""The sessions' own error: a session another live node holds, which this node cannot serve."""

from __future__ import annotations

from app.core.errors import SessionGoneError
from app.sessions.directory import SessionOwner


class SessionElsewhereError(SessionGoneError):
    """The directory names another live node, but the request was not served there: the
    forwarded request did not reach it (dead, not yet lapsed from the directory) or this
    caller (the MCP tools) must go to it themselves."""

    def __init__(self, session_id: str, owner: SessionOwner) -> None:
        super().__init__(
            "the node that holds this session did not answer; it has probably stopped",
            details={"session_id": session_id, "end_reason": "owner_unreachable",
                     "node_id": owner.node_id},
        )  # fmt: skip
        self.owner = owner
