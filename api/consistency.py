"""Read-your-writes: a state-changing route answers once the read models its caller reads next are there.

Each route names the read models it waits for (never all of them): a create waits for `instances`
and `operations`, a ticket for `tickets`, and so on. A wait that runs out is not hidden: the answer
carries `ZLH-Read-Your-Writes: timeout; views=...` and the log says which read model lagged; on
success the header says `caught-up`.
"""

from __future__ import annotations

from fastapi import Response
from starlette.concurrency import run_in_threadpool

from services.bootstrap import Container

HEADER = "ZLH-Read-Your-Writes"


async def read_your_writes(container: Container, response: Response, position: int, *views: str) -> bool:
    """Wait until `views` have applied log `position`; report the outcome in the response header."""
    caught_up = await run_in_threadpool(container.wait_for_projections, position, views)
    response.headers[HEADER] = "caught-up" if caught_up else f"timeout; views={','.join(views)}"
    return caught_up
