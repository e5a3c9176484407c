"""Where the served model comes from: a checkpoint folder, or NAME@ALIAS through the store's
promotion record; loading and warming one up; and, with ``--reload-on-alias-change``, polling the
alias and swapping to the model newly promoted under it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tunefleet.errors import NotFoundError
from tunefleet.platform.store import PromotionRecord, Store
from tunefleet.trainers.predict import Predictor

log = logging.getLogger(__name__)

WARM_UP_TEXT = "warm up"


@dataclass(frozen=True)
class Origin:
    """What a served model is: shown in every answer, compared to notice an alias move."""

    name: str
    version: str | None
    alias: str | None
    trial: int
    checkpoint: str


class LoadedModel:
    """A loaded, warmed checkpoint. Only the model thread calls :meth:`probabilities` once it is
    served (tokenizers and torch modules are not meant for concurrent use)."""

    def __init__(self, predictor: Predictor, origin: Origin) -> None:
        self.predictor, self.origin = predictor, origin
        self.labels = predictor.label_names
        self.max_length = predictor.manifest.max_length

    def probabilities(self, texts: list[str]) -> NDArray[np.float32]:
        """One row of class probabilities per text, computed as ``Predictor.predict`` does (texts
        longer than the model's max_length are truncated to it)."""
        logits = self.predictor.logits(texts)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs: NDArray[np.float32] = shifted / shifted.sum(axis=-1, keepdims=True)
        return probs

    def too_long(self, texts: list[str]) -> list[int]:
        """Indexes of the texts whose tokens exceed max_length (for ``--no-truncate``)."""
        ids = self.predictor.tokenizer(texts, truncation=False)["input_ids"]
        return [i for i, row in enumerate(ids) if len(row) > self.max_length]


def load(origin: Origin, *, warm_batch: int) -> LoadedModel:
    """Load ``origin``'s checkpoint and run it once on one text and once on ``warm_batch``
    texts, so the first real requests do not pay for lazy initialisation."""
    model = LoadedModel(Predictor.from_checkpoint(origin.checkpoint), origin)
    model.probabilities([WARM_UP_TEXT])
    model.probabilities([WARM_UP_TEXT] * warm_batch)
    return model


class Source:
    """The model a user named: a checkpoint folder, or ``NAME@ALIAS`` in ``store``."""

    def __init__(self, spec: str, *, store: Callable[[], Store]) -> None:
        self.spec = spec
        self.folder = Path(spec) if Path(spec).is_dir() else None
        self.name = self.alias = None
        self._open_store = store
        self._store: Store | None = None
        if self.folder is None:
            if "@" not in spec:
                raise NotFoundError(f"{spec!r} is neither a checkpoint folder nor NAME@ALIAS")
            self.name, self.alias = spec.split("@", 1)

    @property
    def follows_alias(self) -> bool:
        return self.folder is None

    def current(self) -> Origin:
        """What the folder or alias names now; NotFoundError when nothing is promoted."""
        if self.folder is not None:
            return _folder_origin(self.folder)
        assert self.name is not None and self.alias is not None
        if self._store is None:  # once: opening a store checks its migrations
            self._store = self._open_store()
        record = self._store.promotion(self.name, alias=self.alias)
        if record is None:
            raise NotFoundError(
                f"nothing promoted as {self.spec}; run `tunefleet promote {self.name}` first"
            )
        return _promotion_origin(record)


def _folder_origin(folder: Path) -> Origin:
    from tunefleet.trainers.checkpoint import Manifest

    manifest = Manifest.read(folder)
    return Origin(manifest.sweep, None, None, manifest.trial, str(folder))


def _promotion_origin(record: PromotionRecord) -> Origin:
    return Origin(
        record.model_name, record.model_version, record.alias, record.number, record.checkpoint
    )


class AliasWatcher:
    """Polls the alias every ``every_s``; when it names another model, loads and warms that one
    off the model thread and only then hands it to ``swap``, so the old model answers every
    request until the new one is ready. A model that fails to load is logged and not retried
    until the alias moves again; a store that does not answer is retried at the next poll."""

    def __init__(
        self,
        source: Source,
        *,
        every_s: float,
        warm_batch: int,
        serving: Callable[[], Origin | None],
        swap: Callable[[LoadedModel], None],
        on_load: Callable[[str], None],
    ) -> None:
        self.source, self.every_s, self.warm_batch = source, every_s, warm_batch
        self.serving, self.swap, self.on_load = serving, swap, on_load
        self._failed: Origin | None = None

    async def run(self, *, after: Awaitable[None]) -> None:
        """Poll until cancelled, starting once ``after`` (the first load) is done: polling
        sooner would load the alias's model a second time."""
        await after
        while True:
            await asyncio.sleep(self.every_s)
            await self.poll()

    async def poll(self) -> None:
        try:
            latest = await asyncio.to_thread(self.source.current)
        except Exception as exc:  # a store that is down now may answer at the next poll
            log.warning("polling %s failed: %s", self.source.spec, exc)
            return
        if latest in (self.serving(), self._failed):
            return
        log.info(
            "%s moved to version %s (trial %s): loading",
            self.source.spec,
            latest.version,
            latest.trial,
        )
        try:
            model = await asyncio.to_thread(load, latest, warm_batch=self.warm_batch)
        except Exception:
            log.exception("loading %s failed; still serving the previous model", latest.checkpoint)
            self._failed = latest
            self.on_load("failed")
            return
        self.swap(model)
        self.on_load("ok")
        log.info("now serving %s version %s (trial %s)", latest.name, latest.version, latest.trial)
