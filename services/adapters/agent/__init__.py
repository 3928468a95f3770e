"""The node agent: an authenticated HTTP/WebSocket face of a node's `LocalDriver` (`server`), and
`AgentDriver`, the control plane's `InstanceDriver` that talks to it (`client`).

The control plane never touches an instance's files or processes itself; it asks
the agent on the instance's node. Every agent call carries `Authorization: Bearer
<per-node secret>`; the agent refuses to start without a secret and answers 401
to anything else.
"""

from services.adapters.agent.client import AgentDriver
from services.adapters.agent.server import create_agent_app, run_agent, start_agent_in_thread

__all__ = ["AgentDriver", "create_agent_app", "run_agent", "start_agent_in_thread"]
