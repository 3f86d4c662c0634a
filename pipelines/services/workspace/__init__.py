"""`supportflow workspace`: the human agents' web page and the escalation router, in one process.

The router (`pipelines/services/escalation_router.py`, `RouterService`) keeps the queue: it reads
`sf.escalations` and `sf.workspace.commands`, and writes every change to `sf.workspace.state`.
This module puts a Starlette app in front of it (`web/workspace.html`, `web/workspace.js`):

- **Sign-in**: `POST /workspace/api/login` checks the agents file (pipelines/handover/auth.py)
  and sets an HttpOnly, SameSite=Strict cookie holding a JWT; scripts may send the same token as
  `Authorization: Bearer`. Failed logins are throttled per address and per agent id from an address
  (429); across addresses they only slow sign-ins from addresses the agent never used.
- **Live queue**: `/workspace/ws` (a WebSocket, authenticated by the cookie or a first
  `{"type": "auth", "token": ...}` frame) sends the entries the agent may see, then every change
  as the router publishes it. The same socket takes actions as frames.
- **Actions** (HTTP `POST /workspace/api/entries/{id}/{verb}` or a WebSocket frame, one code
  path): reply, approve or reject the prepared actions, transfer (warm or cold, to an agent or a
  queue), resolve with a code, correct an intent, rate an AI reply; and presence. Each carries a
  client-generated `action_id`: replies, commands and feedback derive their ids from it, so a
  retried request changes nothing twice.
- **Knowledge** (`knowledge.py`): an entry shows the passages its `knowledge_gap` hand-overs carry;
  supervisors search the knowledge base as the agent does (`GET /workspace/api/knowledge/search?q=`)
  and preview an article (`GET /workspace/api/knowledge/articles/{doc_id}`), over the workers' own
  retriever, built on the first search.
- **Authorization** on every route and every frame: an agent sees and answers only entries
  assigned to them or waiting in one of their queues; a supervisor, all. Anything else is 403
  with the reason; a missing or expired token is 401.

Approving runs the escalation's prepared actions through the topology's own authorize, execute
and guard operators (`pipelines/handover/approval.py`), with the idempotency keys the agent
prepared, so approving twice makes one refund; the customer is then told the outcome in the
playbook's words. A human's reply is an `OutboundMessage(author="human")` on `sf.outbound`,
built by the one reply formatter (`operators.format.outbound_reply`) with the channel's shape.
"""

from pipelines.services.workspace.desk import Workspace
from pipelines.services.workspace.http import build_workspace_app
from pipelines.services.workspace.process import agents_file_for, run_workspace, serve_workspace
from pipelines.services.workspace.requests import COOKIE, RESOLUTION_CODES, WorkspaceError

__all__ = [
    "COOKIE",
    "RESOLUTION_CODES",
    "Workspace",
    "WorkspaceError",
    "agents_file_for",
    "build_workspace_app",
    "run_workspace",
    "serve_workspace",
]
