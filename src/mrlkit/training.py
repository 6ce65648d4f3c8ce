"""Make prefixes meaningful: fine-tune with MatryoshkaLoss, or fit a rotation on stored vectors.

Two ways out for a model that was not Matryoshka-trained (whose short prefixes are poor):

* :func:`train` fine-tunes a sentence-transformers model with ``MatryoshkaLoss`` around
  ``MultipleNegativesRankingLoss`` (pairs) or ``CoSENTLoss`` (scored pairs), saves it as a
  model folder and registers it in the user catalog as MRL with its trained ``mrl_dims``.
* :func:`fit_transform` fits, on vectors already stored, an orthogonal map after which
  prefixes keep their meaning — with no model call, and full-dimension scores unchanged
  (an orthogonal map preserves every cosine). ``pca`` orders directions by variance in
  closed form; ``adaptor`` learns an orthogonal matrix (initialised from PCA) so that, at
  every prefix length, similarities to each vector's nearest neighbours match the full
  vectors' — the unsupervised objective of Matryoshka-Adaptor (Yoon et al., "Matryoshka-
  Adaptor: Unsupervised and Supervised Tuning for Smaller Embedding Dimensions", EMNLP
  2024), restricted to orthogonal maps so that full-dimension quality cannot move.

Example::

    >>> t = fit_transform(np.eye(4, dtype=np.float32), "pca")   # doctest: +SKIP
    >>> t.matrix.shape                                          # doctest: +SKIP
    (4, 4)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence


from .documents import read_jsonl
from .errors import InvalidInputError

# the post-hoc transforms live in transform.py; kept importable from here
from .transform import (METHODS, Transform, check_method, default_prefix_dims,  # noqa: E402,F401
                        fit_transform, pca_rotation)


# --- fine-tuning with MatryoshkaLoss ---------------------------------------------------


@dataclass
class TrainData:
    """Training examples: ``columns`` of texts (and ``score`` for scored pairs)."""

    kind: str                      # "pairs" (MNRL) or "scored" (CoSENT)
    columns: dict[str, list[Any]]
    source: str
    eval_folder: str | None = None  # a BEIR folder whose test split measures the result

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))


def load_training_data(path: str | Path, split: str = "train") -> TrainData:
    """Read training examples from a JSONL of ``anchor``/``positive`` (optional
    ``negative``) or ``sentence1``/``sentence2``/``score`` objects, a BEIR folder
    (``qrels/<split>.tsv``: query → each relevant document), or an STS-B folder
    (scores 0–5, scaled to 0–1).

    Example::

        >>> load_training_data("../shared/datasets/scifact").kind   # doctest: +SKIP
        'pairs'
    """
    from .evaluation.datasets import DatasetError, load_beir, load_sts

    path = Path(path)
    if path.is_dir() and (path / "corpus.jsonl").exists():
        ds = load_beir(path, split)
        docs = dict(zip(ds.doc_ids, ds.doc_texts))
        anchors, positives = [], []
        for qid, text in zip(ds.query_ids, ds.query_texts):
            for did, rel in sorted(ds.qrels.get(qid, {}).items()):
                if rel > 0 and did in docs:
                    anchors.append(text)
                    positives.append(docs[did])
        test = path / "qrels" / "test.tsv"
        return TrainData("pairs", {"anchor": anchors, "positive": positives},
                         f"{path.name} ({split} split)", str(path) if test.exists() else None)
    if path.is_dir() and (path / f"sts-{split}.csv").exists():
        sts = load_sts(path, split)
        return TrainData("scored", {"sentence1": sts.sentences1, "sentence2": sts.sentences2,
                                    "score": [s / 5.0 for s in sts.scores]},
                         f"{path.name} ({split} split)")
    if not path.is_file():
        raise DatasetError(f"{path}: expected a JSONL file, a BEIR folder or an STS-B folder")
    rows = [rec for _, rec in read_jsonl(path, error=DatasetError)]
    if not rows:
        raise DatasetError(f"{path}: no training examples")
    if all("anchor" in r and "positive" in r for r in rows):
        cols = ["anchor", "positive"] + (["negative"] if all("negative" in r for r in rows)
                                         else [])
        return TrainData("pairs", {c: [str(r[c]) for r in rows] for c in cols}, path.name)
    if all({"sentence1", "sentence2", "score"} <= r.keys() for r in rows):
        scores = [float(r["score"]) for r in rows]
        top = max(scores)
        return TrainData("scored", {"sentence1": [r["sentence1"] for r in rows],
                                    "sentence2": [r["sentence2"] for r in rows],
                                    "score": [s / top if top > 1 else s for s in scores]},
                         path.name)
    raise DatasetError(f"{path}: every line needs anchor and positive (optional negative), "
                       "or sentence1, sentence2 and score")


@dataclass
class TrainResult:
    name: str
    output: str
    mrl_dims: list[int]
    steps: int
    seconds: float
    catalog: str
    card: dict[str, Any] | None


def train(data: TrainData, output: str | Path, *, base: str = "all-MiniLM-L6-v2",
          name: str | None = None, epochs: int = 8, batch_size: int = 32,
          max_seq_length: int = 128, learning_rate: float = 1e-4,
          dims: Sequence[int] | None = None, weights: Sequence[float] | None = None,
          max_steps: int = -1, save_steps: int = 50, resume: bool = True,
          evaluate: bool = True, register_model: bool = True, seed: int = 42) -> TrainResult:
    """Fine-tune ``base`` with MatryoshkaLoss and register the result.

    Defaults are sized for a CPU: sequences cut to 128 tokens while training (the saved
    model keeps the base's own limit), batch 32, every prefix of
    :func:`default_prefix_dims` weighted 1. Checkpoints go to ``OUTPUT/checkpoints``
    every ``save_steps``; a run started again with ``resume`` continues from the last one.
    With ``evaluate`` and a BEIR folder, the model card holds nDCG@10 retention before
    and after, on the folder's test split.
    """
    import os

    _quiet_libraries()
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    try:
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:  # older sentence-transformers
        from sentence_transformers import losses  # type: ignore[attr-defined,no-redef]
        from sentence_transformers.training_args import BatchSamplers  # type: ignore[no-redef]

    from .providers.sentence_transformers import resolve_model_path
    from .registry import get_spec, register
    from .user_catalog import save_to_user_catalog

    spec = get_spec(base)
    if spec.provider != "sentence-transformers":
        raise InvalidInputError(f"{spec.name} is served by {spec.provider}; training needs a "
                                "sentence-transformers model whose weights are on disk")
    output = Path(output).expanduser().resolve()
    name = name or output.name
    dims = sorted({int(d) for d in (dims or default_prefix_dims(spec.native_dim))},
                  reverse=True)
    if dims[0] != spec.native_dim or dims[-1] < 1:
        raise InvalidInputError(f"matryoshka dims must start at the native dimension "
                                f"{spec.native_dim} and stay positive, not {dims}")
    if weights is not None and len(weights) != len(dims):
        raise InvalidInputError(f"{len(weights)} weights for {len(dims)} dimensions")
    if len(data) < batch_size:
        raise InvalidInputError(f"{len(data)} training examples; need at least one batch "
                                f"of {batch_size}")

    model = SentenceTransformer(resolve_model_path(spec.model_id), device="cpu",
                                local_files_only=True)
    native_length = model.max_seq_length
    model.max_seq_length = max_seq_length
    inner = (losses.MultipleNegativesRankingLoss(model) if data.kind == "pairs"
             else losses.CoSENTLoss(model))
    loss = losses.MatryoshkaLoss(model, inner, matryoshka_dims=dims,
                                 matryoshka_weights=list(weights) if weights else None)
    prompts = None
    if data.kind == "pairs" and (spec.query_prompt or spec.document_prompt):
        prompts = {"anchor": spec.query_prompt, "positive": spec.document_prompt,
                   "negative": spec.document_prompt}
    checkpoints = output / "checkpoints"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=epochs, max_steps=max_steps,
        per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        **_warmup(0.1), seed=seed, save_strategy="steps", save_steps=save_steps,
        save_total_limit=2, logging_steps=10, report_to="none", use_cpu=True,
        dataloader_num_workers=0, prompts=prompts,
        batch_sampler=(BatchSamplers.NO_DUPLICATES if data.kind == "pairs"
                       else BatchSamplers.BATCH_SAMPLER))
    trainer = SentenceTransformerTrainer(model=model, args=args, loss=loss,
                                         train_dataset=Dataset.from_dict(data.columns))
    has_checkpoint = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    t0 = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _progress_through_mrlkit(trainer, f"training {name}")
    state = trainer.train(resume_from_checkpoint=bool(resume and has_checkpoint))
    seconds = time.perf_counter() - t0
    model.max_seq_length = native_length
    model.save(str(output))

    new = {"name": name, "provider": "sentence-transformers", "model_id": str(output),
           "native_dim": spec.native_dim, "supports_mrl": True,
           "mrl_dims": sorted(dims), "query_prompt": spec.query_prompt,
           "document_prompt": spec.document_prompt, "max_tokens": native_length,
           "license": spec.license,
           "notes": f"{spec.name} fine-tuned with MatryoshkaLoss on {data.source} by "
                    "mrlkit train"}
    catalog = ""
    if register_model:
        catalog = str(save_to_user_catalog(new))
    register(new, replace=True)
    card = None
    if evaluate and data.eval_folder:
        card = retention_card(data.eval_folder, spec.name, name, sorted(dims))
    _write_card(output, new, data, dims, weights, epochs, batch_size, max_seq_length,
                int(state.global_step), seconds, card)
    return TrainResult(name, str(output), sorted(dims), int(state.global_step),
                       round(seconds, 1), catalog, card)


def _progress_through_mrlkit(trainer: Any, description: str) -> None:
    """Training steps and losses through mrlkit's one progress helper (stderr: a bar on
    a terminal, lines in a log) instead of the Trainer's tqdm bar and the log dicts it
    prints on stdout."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .progress import Progress

    class Steps(TrainerCallback):
        bar: Progress | None = None
        loss = ""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar = Progress(description, state.max_steps, unit="steps").__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.advance(1, description=f"{description}{self.loss}")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            if logs and "loss" in logs:
                self.loss = f" (loss {float(logs['loss']):.4f})"

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.__exit__(None, None, None)

    for callback in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(Steps())


def _quiet_libraries() -> None:
    """The libraries' own bars (datasets, the hub, loading and saving weights) stay
    quiet: long work reports through mrlkit's helper."""
    import datasets
    import transformers
    import huggingface_hub.utils as hub_utils

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hub_utils.disable_progress_bars()  # type: ignore[attr-defined]


def _warmup(ratio: float) -> dict[str, Any]:
    import transformers

    # transformers 5 takes the ratio as a float warmup_steps and deprecates warmup_ratio
    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": ratio}
    return {"warmup_ratio": ratio}


def retention_card(folder: str, before: str, after: str, dims: Sequence[int]) -> dict[str, Any]:
    """nDCG@10 and its retention at each prefix, for two models on a BEIR test split."""
    from .evaluation.retrieval import evaluate_retrieval

    out: dict[str, Any] = {"dataset": Path(folder).name, "split": "test", "dims": list(dims)}
    for label, model in (("before", before), ("after", after)):
        report = evaluate_retrieval(folder, model, dims=dims, precisions=["float32"])
        out[label] = {"model": model, "ndcg@10": {r["dim"]: r["ndcg@10"]
                                                  for r in report["results"]},
                      "retention": {r["dim"]: r["retention"] for r in report["results"]}}
    return out


def _write_card(output: Path, spec: dict[str, Any], data: TrainData, dims: Sequence[int],
                weights: Sequence[float] | None, epochs: int, batch_size: int,
                max_seq_length: int, steps: int, seconds: float,
                card: dict[str, Any] | None) -> None:
    lines = [f"# {spec['name']}", "", spec["notes"] + ".", "",
             f"- Matryoshka dims: {', '.join(map(str, sorted(dims)))} "
             f"(weights: {', '.join(map(str, weights)) if weights else 'all 1'})",
             f"- Data: {data.source}, {len(data):,} {data.kind}; loss: MatryoshkaLoss("
             + ("MultipleNegativesRankingLoss" if data.kind == "pairs" else "CoSENTLoss")
             + ")",
             f"- Epochs {epochs}, batch {batch_size}, max_seq_length {max_seq_length} while "
             f"training; {steps} steps in {seconds / 60:.1f} min on the CPU", ""]
    if card:
        lines += [f"## nDCG@10 on {card['dataset']} ({card['split']})", "",
                  "| dim | before | retention | after | retention |", "|---|---|---|---|---|"]
        for d in sorted(card["dims"], reverse=True):
            b, a = card["before"], card["after"]
            lines.append(f"| {d} | {b['ndcg@10'][d]:.4f} | {b['retention'][d]:.1%} | "
                         f"{a['ndcg@10'][d]:.4f} | {a['retention'][d]:.1%} |")
    (output / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (output / "mrlkit.json").write_text(json.dumps({"spec": spec, "card": card}, indent=2,
                                                   default=str))
