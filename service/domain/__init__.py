"""Pure core: tables, schemas, ports, policy and errors (no FastAPI, Celery, httpx or torch)."""
