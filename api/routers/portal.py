"""The web portal: static HTML, CSS and ES modules served at `/` by the API process itself.

The portal is a client of the public API only. It is mounted last, so every API route, the probes,
`/metrics`, `/docs` and `/openapi.json` keep precedence over a file of the same name.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def install(app: FastAPI) -> None:
    """Mount the portal at `/`; call after every router has been included."""
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="portal")
