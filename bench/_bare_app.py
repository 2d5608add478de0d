"""The baseline for bench/ingest.py: a bare FastAPI endpoint that only parses the JSON body."""

from __future__ import annotations

import json
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.cli.server import UVICORN_OPTIONS

app = FastAPI()


@app.post("/webhooks/{source}")
async def bare(source: str, request: Request) -> JSONResponse:
    """Parse and acknowledge; nothing else."""
    json.loads(await request.body())
    return JSONResponse({"status": "ok", "source": source}, status_code=202)


@app.get("/livez")
async def livez() -> dict[str, str]:
    """Up."""
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), **UVICORN_OPTIONS)  # type: ignore[arg-type]
