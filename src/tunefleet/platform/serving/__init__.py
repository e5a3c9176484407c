"""``tunefleet serve``: a promoted model (or a checkpoint folder) behind an HTTP API.

Small modules: ``schemas`` (request and response bodies, MLflow's input formats), ``limits``
(body size, batch size, concurrency), ``metrics`` (Prometheus), ``batching`` (the micro-batcher
and its one model thread), ``source`` (loading, warming and alias polling) and ``app`` (routes).
FastAPI, uvicorn and prometheus_client are the optional extra ``tunefleet[serve]``: import this
package's modules only from the serve command.
"""
