"""``tunefleet serve`` as users run it: a real uvicorn server in a child process, answering a
real HTTP client with the predictions ``tunefleet predict`` gives, refusing what is over its
limits with the documented status, batching a burst, and following an alias move without a
failed request."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.cli import TUNEFLEET, cli_env, run_cli
from support.configs import write_config
from support.ports import free_port
from support.waiting import wait_for
from tunefleet.platform.store import Store
from tunefleet.trainers.predict import Predictor

pytestmark = pytest.mark.slow

TEXTS = [
    "The food was wonderful and the staff friendly.",
    "Cold fries, rude waiter, never again.",
    "ok",
    "Best brunch in town!",
]
# Far over the sweep's max_length of 32 tokens, and under the body limit of server A.
LONG_TEXT = " ".join(["the soup was good but the bread was stale"] * 40)
NAME = "srv"


@dataclass(frozen=True)
class Promoted:
    out: Path
    champion: int
    other: int

    def checkpoint(self, trial: int) -> Path:
        record = Store(f"sqlite:///{self.out / 'tunefleet.db'}").trial(NAME, trial)
        assert record is not None and record.checkpoint
        return Path(record.checkpoint)


@pytest.fixture(scope="module")
def promoted(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, sentiment_csv: Path
) -> Promoted:
    """Two trials of the tiny BERT through the real CLI, the best promoted as srv@champion
    (MLflow sqlite registry: version 1)."""
    tmp = tmp_path_factory.mktemp("serving")
    out = tmp / "runs"
    config = {
        "name": NAME,
        "model": {"name_or_path": str(tiny_model)},
        "data": {"train": str(sentiment_csv), "test_fraction": 0.2, "max_length": 32},
        "train": {"method": "full", "epochs": 1, "batch_size": 16},
        "search": {
            "trials": 2,
            "sampler": "random",
            "pruner": "none",
            "metric": "eval_accuracy",
            "space": {"train.learning_rate": {"low": 1e-3, "high": 5e-3, "log": True}},
        },
        "tracking": {"mlflow": {"enabled": True}, "wandb": {"enabled": False}},
    }
    swept = run_cli("sweep", str(write_config(tmp, config, name=NAME)), "--out", str(out))
    assert swept.returncode == 0, swept.stdout + swept.stderr
    promoted = run_cli("promote", NAME, "--out", str(out))
    assert promoted.returncode == 0, promoted.stderr
    record = Store(f"sqlite:///{out / 'tunefleet.db'}").promotion(NAME, alias="champion")
    assert record is not None and record.model_version == "1"
    return Promoted(out, champion=record.number, other=1 - record.number)


class Server:
    """``tunefleet serve`` in a child process on a free port of 127.0.0.1."""

    def __init__(self, promoted: Promoted, log: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                [
                    *TUNEFLEET,
                    "serve",
                    f"{NAME}@champion",
                    "--out",
                    str(promoted.out),
                    "--port",
                    str(self.port),
                    *flags,
                ],
                env=cli_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout_s=180, every_s=0.2, what="tunefleet serve to be ready")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-4000:]
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def post(self, path: str, body: Any, **options: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=60, **options)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by name and labels, e.g. ``x_total{kind="timeout"}``."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def _server(
    promoted: Promoted, tmp: pytest.TempPathFactory, name: str, *flags: str
) -> Iterator[Server]:
    server = Server(promoted, tmp.mktemp(name) / "serve.log", *flags)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(promoted: Promoted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small limits, and a batch wait long enough that a burst always shares model calls."""
    with _server(
        promoted,
        tmp_path_factory,
        "serve-a",
        "--max-body-kb",
        "4",
        "--max-batch",
        "8",
        "--batch-wait-ms",
        "200",
    ) as server:
        yield server


def _expected(folder: Path, texts: list[str]) -> list[dict[str, Any]]:
    return [
        {"label": p.label, "probabilities": p.probabilities}
        for p in Predictor.from_checkpoint(folder).predict(texts)
    ]


def _assert_same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-5)


def _as_records(response: httpx.Response) -> list[dict[str, Any]]:
    """/v1/predict's answer (top_k = every label) as predict --json's records."""
    assert response.status_code == 200, response.text
    return [
        {"label": p["labels"][0], "probabilities": dict(zip(p["labels"], p["scores"], strict=True))}
        for p in response.json()["predictions"]
    ]


def test_predictions_equal_tunefleet_predict(server: Server, promoted: Promoted) -> None:
    cli = run_cli("predict", f"{NAME}@champion", *TEXTS, "--out", str(promoted.out), "--json")
    assert cli.returncode == 0, cli.stderr
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    response = server.post("/v1/predict", {"inputs": TEXTS, "top_k": 2})
    _assert_same(_as_records(response), expected)
    body = response.json()
    assert body["model"] == {
        "name": NAME,
        "version": "1",
        "alias": "champion",
        "trial": promoted.champion,
    }
    for prediction in body["predictions"]:
        assert prediction["scores"] == sorted(prediction["scores"], reverse=True)
    top1 = server.post("/v1/predict", {"inputs": TEXTS}).json()["predictions"]
    assert [p["labels"] for p in top1] == [[e["label"]] for e in expected]


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": TEXTS},
        {"instances": TEXTS},
        {"inputs": {"text": TEXTS}},
        {
            "dataframe_split": {
                "columns": ["id", "text"],
                "data": [[i, t] for i, t in enumerate(TEXTS)],
            }
        },
        {"dataframe_records": [{"text": t, "id": i} for i, t in enumerate(TEXTS)]},
        {"instances": [{"text": t} for t in TEXTS]},
    ],
    ids=[
        "inputs",
        "instances",
        "inputs-columns",
        "dataframe_split",
        "dataframe_records",
        "records",
    ],
)
def test_mlflow_invocations_formats(server: Server, promoted: Promoted, body: Any) -> None:
    response = server.post("/invocations", body)
    assert response.status_code == 200, response.text
    expected = _expected(promoted.checkpoint(promoted.champion), TEXTS)
    _assert_same(response.json()["predictions"], expected)


def test_health_docs_and_ready_answer(server: Server, promoted: Promoted) -> None:
    assert httpx.get(f"{server.url}/health/live").json() == {"status": "live"}
    ready = httpx.get(f"{server.url}/health/ready").json()
    assert ready["status"] == "ready" and ready["model"]["trial"] == promoted.champion
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/predict", "/invocations", "/health/ready", "/metrics"} <= set(paths)


def test_not_ready_until_a_model_is_loaded(promoted: Promoted) -> None:
    """The app before its lifespan has loaded anything (ASGI in process, no lifespan run): ready
    and the prediction routes answer 503, live answers 200."""
    from tunefleet.platform.serving.app import Serving, create_app
    from tunefleet.platform.serving.limits import Limits
    from tunefleet.platform.serving.metrics import Metrics
    from tunefleet.platform.serving.source import Source

    folder = str(promoted.checkpoint(promoted.champion))
    limits = Limits(
        max_body_bytes=4096,
        max_batch=8,
        batch_wait_s=0.0,
        max_concurrency=4,
        timeout_s=5.0,
        truncate=True,
    )
    source = Source(folder, store=lambda: Store(f"sqlite:///{promoted.out / 'tunefleet.db'}"))
    serving = Serving(source, limits, Metrics(), reload_every_s=None, on_fatal=print)

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(serving))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return [
                await client.get("/health/live"),
                await client.get("/health/ready"),
                await client.post("/v1/predict", json={"inputs": ["hi"]}),
                await client.post("/invocations", json={"inputs": ["hi"]}),
            ]

    live, ready, predict, invocations = asyncio.run(ask())
    assert live.status_code == 200
    assert ready.status_code == 503 and ready.json() == {"status": "loading"}
    for response in (predict, invocations):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["kind"] == "not_ready"


def test_limits_answer_their_status_naming_the_field(server: Server) -> None:
    before = server.metrics()
    too_big = server.post("/v1/predict", {"inputs": ["x" * 5000]})
    assert too_big.status_code == 413, too_big.text
    assert "--max-body-kb 4" in too_big.json()["error"]["message"]
    too_many = server.post("/v1/predict", {"inputs": ["good"] * 9})
    assert too_many.status_code == 413, too_many.text
    assert too_many.json()["error"]["kind"] == "batch_too_large"
    assert server.post("/invocations", {"instances": ["a"] * 9}).status_code == 413
    cases = [
        ("/v1/predict", {"inputs": ["fine", 3]}, "inputs.1"),
        ("/v1/predict", {"texts": ["fine"]}, "inputs"),
        ("/v1/predict", {"inputs": []}, "inputs"),
        ("/v1/predict", {"inputs": ["fine"], "top_k": 0}, "top_k"),
        ("/invocations", {"instances": ["fine", None]}, "instances.1"),
        (
            "/invocations",
            {"dataframe_split": {"columns": ["review"], "data": [["x"]]}},
            "dataframe_split.columns",
        ),
        ("/invocations", {"dataframe_records": [{"review": "x"}]}, "dataframe_records.0"),
        ("/invocations", {"rows": ["x"]}, "body"),
    ]
    for path, body, field in cases:
        response = server.post(path, body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["field"] == field and field in error["message"], (body, error)
    not_json = httpx.post(f"{server.url}/invocations", content=b"{nope", timeout=30)
    assert not_json.status_code == 422 and not_json.json()["error"]["field"] == "body"
    after = server.metrics()
    for kind, count in (("body_too_large", 1), ("batch_too_large", 2), ("invalid_input", 9)):
        key = f'tunefleet_serve_errors_total{{kind="{kind}"}}'
        assert after[key] - before.get(key, 0.0) == count, kind


def test_long_texts_are_truncated_as_predict_does(server: Server, promoted: Promoted) -> None:
    texts = [LONG_TEXT, LONG_TEXT + " and the staff was rude"]
    response = server.post("/v1/predict", {"inputs": texts, "top_k": 2})
    _assert_same(_as_records(response), _expected(promoted.checkpoint(promoted.champion), texts))


def test_metrics_parse_as_prometheus_text(server: Server) -> None:
    server.post("/v1/predict", {"inputs": TEXTS})
    text = httpx.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["tunefleet_serve_requests"].type == "counter"
    assert families["tunefleet_serve_request_seconds"].type == "histogram"
    assert families["tunefleet_serve_batch_size"].type == "histogram"
    assert families["tunefleet_serve_errors"].type == "counter"
    samples = server.metrics()
    assert samples['tunefleet_serve_requests_total{route="/v1/predict",status="200"}'] >= 1
    assert samples['tunefleet_serve_request_seconds_count{route="/v1/predict"}'] >= 1
    assert samples["tunefleet_serve_ready"] == 1
    assert samples['tunefleet_serve_model_loads_total{outcome="ok"}'] == 1


def test_a_burst_is_batched_and_none_is_lost(server: Server, promoted: Promoted) -> None:
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(40)]
    before = server.metrics()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/v1/predict", json={"inputs": [t], "top_k": 2}) for t in texts)
            )

    responses = asyncio.run(burst())
    got = [record for r in responses for record in _as_records(r)]
    _assert_same(got, _expected(promoted.checkpoint(promoted.champion), texts))
    after = server.metrics()
    calls = after["tunefleet_serve_batch_size_count"] - before["tunefleet_serve_batch_size_count"]
    batched = after["tunefleet_serve_batch_size_sum"] - before["tunefleet_serve_batch_size_sum"]
    singles = after['tunefleet_serve_batch_size_bucket{le="1.0"}'] - before.get(
        'tunefleet_serve_batch_size_bucket{le="1.0"}', 0.0
    )
    assert batched == len(texts)
    assert calls < len(texts) and singles < calls, (calls, singles)


def test_timeout_and_concurrency_limits(
    promoted: Promoted, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A lone request waits 30 s for company but times out after 8 s (503); while it waits it
    is the one request in flight allowed, so another is refused at once (429)."""
    with _server(
        promoted,
        tmp_path_factory,
        "serve-b",
        "--batch-wait-ms",
        "30000",
        "--timeout-s",
        "8",
        "--max-concurrency",
        "1",
    ) as slow:
        waiting: list[httpx.Response] = []
        lone = threading.Thread(
            target=lambda: waiting.append(slow.post("/v1/predict", {"inputs": ["alone"]}))
        )
        lone.start()
        wait_for(
            lambda: slow.metrics()["tunefleet_serve_in_flight"] == 1,
            timeout_s=8,
            what="the lone request to be in flight",
        )
        refused = slow.post("/v1/predict", {"inputs": ["second"]})
        lone.join()
        assert refused.status_code == 429, refused.text
        assert "--max-concurrency 1" in refused.json()["error"]["message"]
        assert waiting[0].status_code == 503, waiting[0].text
        assert waiting[0].json()["error"]["kind"] == "timeout"
        errors = slow.metrics()
        assert errors['tunefleet_serve_errors_total{kind="timeout"}'] == 1
        assert errors['tunefleet_serve_errors_total{kind="overloaded"}'] == 1


@pytest.fixture(scope="module")
def following(promoted: Promoted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _server(
        promoted,
        tmp_path_factory,
        "serve-c",
        "--reload-on-alias-change",
        "--reload-poll-s",
        "0.5",
        "--no-truncate",
    ) as server:
        yield server


def test_no_truncate_refuses_long_texts_naming_them(following: Server) -> None:
    response = following.post("/v1/predict", {"inputs": ["short", LONG_TEXT]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["kind"] == "too_long" and error["field"] == "inputs.1"
    assert "max_length of 32" in error["message"]
    assert following.post("/v1/predict", {"inputs": ["short"]}).status_code == 200


def test_an_alias_move_is_followed_without_a_failed_request(
    following: Server, promoted: Promoted
) -> None:
    answers: list[tuple[int, str | None, list[dict[str, Any]]]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=following.url, timeout=60) as http:
            while not stop.is_set():
                response = http.post("/v1/predict", json={"inputs": TEXTS, "top_k": 2})
                version = response.json().get("model", {}).get("version")
                records = _as_records(response) if response.status_code == 200 else []
                answers.append((response.status_code, version, records))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answers) >= 5, timeout_s=60, what="answers from the first model")
        # Forced: the other trial is the worse one, which the gate (rightly) may refuse.
        moved = run_cli(
            "promote",
            NAME,
            "--trial",
            str(promoted.other),
            "--force",
            "--reason",
            "serving test: move the alias",
            "--out",
            str(promoted.out),
        )
        assert moved.returncode == 0, moved.stderr
        wait_for(
            lambda: sum(v == "2" for _, v, _ in answers) >= 5,
            timeout_s=120,
            what="answers from the newly promoted model",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert {status for status, _, _ in answers} == {200}
    versions = [v for _, v, _ in answers]
    assert set(versions) == {"1", "2"}
    old = _expected(promoted.checkpoint(promoted.champion), TEXTS)
    new = _expected(promoted.checkpoint(promoted.other), TEXTS)
    for _, version, records in answers:
        _assert_same(records, old if version == "1" else new)
    ready = httpx.get(f"{following.url}/health/ready").json()
    assert ready["model"] == {
        "name": NAME,
        "version": "2",
        "alias": "champion",
        "trial": promoted.other,
    }
    assert following.metrics()['tunefleet_serve_model_loads_total{outcome="ok"}'] == 2


def test_serve_errors_are_clear(promoted: Promoted) -> None:
    missing = run_cli("serve", f"{NAME}@staging", "--out", str(promoted.out))
    assert missing.returncode == 2
    assert f"nothing promoted as {NAME}@staging" in missing.stderr
    no_extra = subprocess.run(
        [
            TUNEFLEET[0],
            "-c",
            "import sys; sys.modules['fastapi'] = None; "
            "from tunefleet.platform.cli import main; "
            f"sys.exit(main(['serve', '{NAME}@champion', '--out', {str(promoted.out)!r}]))",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert no_extra.returncode == 2, no_extra.stderr
    assert "pip install 'tunefleet[serve]'" in no_extra.stderr
