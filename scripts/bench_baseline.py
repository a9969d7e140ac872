"""The floor for `scripts/bench_webhook.py`: a bare Flask app whose `POST /wechat` reads the body and
answers `success`, with no signature check, decryption, SQLite or Redis. The benchmark serves it with
the web process's own gunicorn settings (`--config python:config.gunicorn_conf`):

    gunicorn --config python:config.gunicorn_conf scripts.bench_baseline:app
"""

from flask import Flask, Response, request

app = Flask("chatgate-bench-baseline")


@app.post("/wechat")
def receive():
    request.get_data(cache=False)  # read the body, as the real webhook does
    return Response("success", mimetype="text/plain")


@app.get("/healthz")
def healthz():
    return {"ok": True}
