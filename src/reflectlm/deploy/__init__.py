"""Deployment: compress and export a champion, serve it, watch drift, feed corrections back.

    compress.py   pruning, dynamic int8 and bf16 on a PyTorch model
    export.py     `reflectlm export`: ONNX / int8 / bf16 variants, each gated by a paired
                  non-inferiority test against the champion; export.json
    predictor.py  one inference interface over a run, a bundle or an export (PyTorch or ONNX Runtime)
    masking.py    personal data (e-mail, phone, card, IBAN, IP) masked before logging or storing
    store.py      the production store (SQLAlchemy: a SQLite file, or PostgreSQL for replicas):
                  predictions, feedback, low-confidence texts
    monitor.py    drift of served traffic against the selection split; alerts
    feedback.py   the store -> the next run's verified labels and unlabelled pool
    serve/        the FastAPI app (micro-batching, auth, limits, metrics, UI page); ray_app.py
                  deploys it on Ray Serve with autoscaling replicas

FastAPI, uvicorn, prometheus-client and onnxruntime are optional extras (`[serve]`, `[onnx]`);
only the modules that need them import them, and nothing here is imported by `import reflectlm`.
"""
