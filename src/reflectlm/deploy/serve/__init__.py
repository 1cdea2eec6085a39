"""The HTTP service: `create_app(path, settings)` (app.py) and `serve(...)` (uvicorn).
FastAPI, uvicorn and prometheus-client are imported by these modules only (the `[serve]` extra)."""
