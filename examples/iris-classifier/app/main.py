"""iris-classifier: a scikit-learn model behind Cortex's container contract.

* ``GET /healthz`` answers 503 while the model trains and 200 once it serves (the readiness
  probe in cortex.yaml), so the dequeuer holds requests back until then;
* ``POST /`` takes ``{"sepal_length", "sepal_width", "petal_length", "petal_width"}`` (cm) and
  answers ``{"prediction": "setosa", "probabilities": {"setosa": 0.97, ...}}``.

The model is trained at start-up on the iris data set that scikit-learn ships (no download), so
the example runs anywhere. A plain ASGI app: any ASGI server runs it (the Dockerfile: uvicorn).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

model: LogisticRegression | None = None
labels: list[str] = []


def train() -> None:
    global model, labels
    iris = load_iris()
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    labels = [str(name) for name in iris.target_names]


def predict(body: bytes) -> tuple[int, dict[str, Any]]:
    assert model is not None
    try:
        sample = json.loads(body)
        row = [float(sample[name]) for name in FEATURES]
    except (ValueError, TypeError, KeyError) as exc:
        fields = ", ".join(FEATURES)
        return 400, {"error": f"expected a JSON object with numbers {fields}: {exc!r}"}
    probabilities = model.predict_proba([row])[0]
    best = int(probabilities.argmax())
    return 200, {
        "prediction": labels[best],
        "probabilities": {
            label: round(float(p), 4) for label, p in zip(labels, probabilities, strict=True)
        },
    }


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                train()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET" and scope["path"] == "/healthz":
        status, answer = (200, {"status": "ok"}) if model is not None else (503, {})
    elif scope["method"] == "POST" and scope["path"] == "/":
        status, answer = predict(body)
    else:
        status, answer = 404, {"error": "not found"}
    data = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})
