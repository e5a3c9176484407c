"""The micro-batcher: requests arriving together share one model call.

Requests wait in a queue on the event loop; the collector takes the oldest and, until
``batch_wait_s`` after it arrived or ``max_batch`` texts are in hand, the ones behind it; one
worker thread runs the model on the whole batch and the collector hands each request its rows.
Waiting from the oldest request's arrival (not from when collection starts) means a backlog
built up while the model was busy goes out at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tunefleet.platform.serving.limits import Limits, Rejection
from tunefleet.platform.serving.source import LoadedModel, Origin


@dataclass(frozen=True)
class Answer:
    """A request's rows of class probabilities and the model that computed them."""

    origin: Origin
    labels: tuple[str, ...]
    probabilities: NDArray[np.float32]


@dataclass
class Job:
    texts: list[str]
    arrived: float
    future: asyncio.Future[Answer] = field(repr=False)


@dataclass(frozen=True)
class _Outcome:
    probabilities: NDArray[np.float32] | None
    too_long: dict[int, int]
    """Job index -> index of its first text over max_length (``--no-truncate``)."""


class MicroBatcher:
    def __init__(
        self,
        *,
        limits: Limits,
        model: Callable[[], LoadedModel | None],
        observe_batch: Callable[[int], None],
    ) -> None:
        self.limits, self.model, self.observe_batch = limits, model, observe_batch
        self.pending: deque[Job] = deque()
        self.arrived = asyncio.Event()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunefleet-model")

    async def submit(self, texts: list[str]) -> Answer:
        """The probabilities of ``texts``; cancelling the wait (a timeout) drops the request
        from its batch if the batch has not started yet."""
        loop = asyncio.get_running_loop()
        job = Job(texts, loop.time(), loop.create_future())
        self.pending.append(job)
        self.arrived.set()
        return await job.future

    async def run(self) -> None:
        """Collect and run batches until cancelled."""
        while True:
            jobs = await self._collect()
            if jobs:
                await self._run_batch(jobs)

    async def _collect(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        while not self._live():
            self.arrived.clear()
            await self.arrived.wait()
        deadline = self.pending[0].arrived + self.limits.batch_wait_s
        while self._queued_texts() < self.limits.max_batch and loop.time() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
            except TimeoutError:
                break
        return self._take()

    def _live(self) -> bool:
        while self.pending and self.pending[0].future.done():
            self.pending.popleft()  # timed out while queued
        return bool(self.pending)

    def _queued_texts(self) -> int:
        return sum(len(j.texts) for j in self.pending if not j.future.done())

    def _take(self) -> list[Job]:
        jobs: list[Job] = []
        count = 0
        while self._live() and count + len(self.pending[0].texts) <= self.limits.max_batch:
            job = self.pending.popleft()
            jobs.append(job)
            count += len(job.texts)
        if not jobs and self._live():  # cannot happen: the routes refuse oversized requests
            jobs.append(self.pending.popleft())
        return jobs

    async def _run_batch(self, jobs: list[Job]) -> None:
        model = self.model()
        if model is None:  # the routes refuse requests before a model is ready
            for job in jobs:
                _settle(job, error=Rejection(503, "not_ready", "no model is loaded yet"))
            return
        texts = [t for job in jobs for t in job.texts]
        self.observe_batch(len(texts))
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self.worker, _compute, model, [j.texts for j in jobs], self.limits.truncate
            )
        except Exception as exc:
            for job in jobs:
                _settle(job, error=exc)
            return
        start = 0
        for index, job in enumerate(jobs):
            if index in outcome.too_long:
                _settle(job, error=_too_long(outcome.too_long[index], model.max_length))
                continue
            assert outcome.probabilities is not None
            rows = outcome.probabilities[start : start + len(job.texts)]
            start += len(job.texts)
            _settle(job, answer=Answer(model.origin, model.labels, rows))

    def close(self) -> None:
        self.worker.shutdown(wait=False, cancel_futures=True)


def _compute(model: LoadedModel, groups: list[list[str]], truncate: bool) -> _Outcome:
    """On the model thread: with ``truncate`` off, set aside each group holding a text over
    max_length; run the model once on the texts of all the others."""
    too_long: dict[int, int] = {}
    if not truncate:
        flat = [t for g in groups for t in g]
        owners = [(i, j) for i, g in enumerate(groups) for j in range(len(g))]
        for at in model.too_long(flat):
            too_long.setdefault(owners[at][0], owners[at][1])
    texts = [t for i, g in enumerate(groups) if i not in too_long for t in g]
    return _Outcome(model.probabilities(texts) if texts else None, too_long)


def _too_long(index: int, max_length: int) -> Rejection:
    return Rejection(
        422,
        "too_long",
        f"text {index} has more than the model's max_length of {max_length} tokens "
        "(the server runs with --no-truncate)",
        field=f"inputs.{index}",
    )


def _settle(job: Job, *, answer: Answer | None = None, error: Exception | None = None) -> None:
    if job.future.done():  # its request timed out while the model ran
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(answer)  # type: ignore[arg-type]
