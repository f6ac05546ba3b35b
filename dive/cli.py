"""``dive`` command line: parses arguments and calls the library, nothing more.

Logs and progress bars go to stderr; ``--json`` prints exactly one JSON object to stdout.
Bad input exits with code 2 and a one-line message (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence, TypeVar

from dive import __version__, checks
from dive.checks import InvalidSetting
from dive.compress import DEFAULT_CHUNK_ROWS, compress_file, compress_with_ray
from dive.config import field_default, parse_assignments, read_config_file
from dive.data import MiningConfig, SplitConfig
from dive.data.splits import PROTOCOLS
from dive.encode import EncodeConfig, model_path, save_embeddings
from dive.errors import DiveError
from dive.evaluate import DEFAULT_KS, check_cutoffs
from dive.experiments import (PRESETS, ExperimentSpec, GridSpec, load_data, merge_results, reproduce,
                              run_experiment, train_and_save, write_report)
from dive.experiments.run import check_data_model
from dive.experiments.fit import FitConfig, fit, load_judged_vectors
from dive.experiments.report import format_result
from dive.experiments.tune import DEFAULT_TRIALS, default_tuned_path, tune
from dive.export import ExportConfig, export_onnx, export_sentence_transformers
from dive.engines import ENGINES, EngineConfig
from dive.index import DEFAULT_TOP_K, build_index, default_engine, evaluate_index_on_dataset, load_index
from dive.inputs import read_query_texts, read_query_vectors, read_vectors
from dive.trec import DEFAULT_TAG, write_run
from dive.methods import REGISTRY, method_class
from dive.pipeline import Pipeline
from dive.quantize import CODECS
from dive.significance import STAT_TESTS
from dive.train import TrainConfig

DESCRIPTION = """dive compresses frozen retrieval embeddings (any model) to 64-512 dims with a small
trained adapter and measures, with real retrieval metrics, what search quality was kept."""

EPILOG = """examples:
  dive embed --dataset scifact --out vectors/scifact
  dive train --dataset scifact --method dive --dim 128 --protocol heldout --seed 0 --json
  dive evaluate --dataset scifact --method frozen --json
  dive evaluate --dataset scifact --load runs/scifact-dive-128-heldout-seed0 --codec binary --rescore 100
  dive train --dataset scifact --method dive --dim 128 --codec int8 --json
  dive reproduce --preset quick --out runs/demo
  dive tune --dataset scifact --method dive --dim 128 --trials 10 --out tuned.json && dive train ... --config tuned.json
  dive compress --pipeline runs/scifact-dive-128-heldout-seed0 --input vectors.npy --output small.npy
  dive export --pipeline runs/scifact-dive-128-heldout-seed0 --format onnx --out dive128.onnx
  dive index --pipeline runs/scifact-dive-128-heldout-seed0 --dataset scifact --out scifact-index
  dive index --pipeline runs/scifact-dive-128-heldout-seed0 --input vectors.npy --ids ids.txt --engine qdrant --out idx
  dive search --index scifact-index --query "vitamin D and bone fractures"
  dive search --index scifact-index --queries queries.jsonl --top 100 --run run.trec
  dive evaluate --index scifact-index --dataset scifact
  dive fit --dataset scifact --budget 64 --out scifact-64b
  dive methods

data: --dataset NAME is looked up under --data-dir, then $DIVE_DATA_DIR, then the user cache;
BEIR's public datasets are downloaded there when missing. Embeddings are cached under
$DIVE_CACHE_DIR (default: the platform cache dir)."""


T = TypeVar("T")
CONVERSIONS = {int: "an integer", float: "a number", str: "text"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as dive reports bad input: one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dive: error: {message} (see {self.prog} --help)\n")


def _checked(convert: Callable[[str], T], rule: Callable[[T], object]) -> Callable[[str], T]:
    """An argparse ``type=``: ``convert`` the flag's text, then refuse the value by the library's ``rule``."""
    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {CONVERSIONS[convert]}, got {text!r}") from None
        try:
            rule(value)
        except InvalidSetting as error:
            raise argparse.ArgumentTypeError(error.requirement) from None
        except DiveError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value
    return parse


def _setting(config: type, name: str, convert: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` for field ``name`` of dataclass ``config``: refused by ``config``'s own rules."""
    return _checked(convert, lambda value: config(**{name: value}))


DIVE_CONFIG = REGISTRY["dive"].Config
PROMPT_FIELDS = ("query_prompt", "doc_prompt", "query_prompt_name", "doc_prompt_name")
"""EncodeConfig's prompt fields, each set by the flag of the same name (``--query-prompt`` ...)."""
DEVICE = _setting(EncodeConfig, "device", str)
"""``--device``: encoding and training take the same devices (EncodeConfig and TrainConfig share the rule)."""


def _data_arguments(parser: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    group = parser.add_argument_group("data and embeddings")
    group.add_argument("--dataset", required=dataset_required,
                       help="BEIR dataset name (e.g. scifact) or a BEIR-format folder")
    group.add_argument("--data-dir", help="folder holding dataset folders (default: $DIVE_DATA_DIR, then the user cache)")
    group.add_argument("--model", help="local sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)")
    group.add_argument("--vectors", help="folder of precomputed vectors (corpus.npy, corpus_ids.txt, queries.npy, "
                                         "query_ids.txt, as `dive embed` writes) instead of encoding text")
    group.add_argument("--encode-batch-size", type=_setting(EncodeConfig, "batch_size", int),
                       default=EncodeConfig.batch_size,
                       help=f"texts per encoder batch (default {EncodeConfig.batch_size})")
    group.add_argument("--no-cache", action="store_true", help="re-encode instead of using the embedding cache")
    for kind, example in (("query", "query: "), ("doc", "passage: ")):
        group.add_argument(f"--{kind}-prompt", help=f"text put before every {kind} (E5: {example!r}); part of the "
                                                    "embedding cache key and of the pipeline's base model")
        group.add_argument(f"--{kind}-prompt-name", help=f"instead of --{kind}-prompt, a name from the model's own "
                                                         "prompts (config_sentence_transformers.json)")
    group.add_argument("--device", type=DEVICE, default=EncodeConfig.device,
                       help=f"cpu, cuda, cuda:N or mps (encoding and training; default {EncodeConfig.device})")


def _ray_arguments(parser: argparse.ArgumentParser, copies: str) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--engine", choices=["local", "ray"], default=EncodeConfig.engine,
                       help=f"local: this process; ray: Ray Data map_batches (default {EncodeConfig.engine})")
    group.add_argument("--ray-address", help="Ray cluster, e.g. auto or ray://head:10001 (default: a local instance)")
    group.add_argument("--workers", type=_setting(EncodeConfig, "ray_workers", int), default=EncodeConfig.ray_workers,
                       help=f"Ray workers ({copies}); keep below the cluster's CPUs "
                            f"(default {EncodeConfig.ray_workers})")


def _protocol_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("protocol and evaluation")
    group.add_argument("--protocol", choices=PROTOCOLS, default=ExperimentSpec.protocol,
                       help="heldout (default): test queries never seen in training; paper: the DIVE paper's "
                            "transductive protocol (trains on all qrels, test queries included)")
    group.add_argument("--seed", type=int, default=ExperimentSpec.seed,
                       help=f"seed for initialisation and negative sampling (default {ExperimentSpec.seed})")
    group.add_argument("--k", type=_checked(int, lambda k: check_cutoffs([k])), action="append",
                       help=f"extra cutoffs for nDCG@k/Recall@k ({', '.join(map(str, DEFAULT_KS))} is always reported)")
    group.add_argument("--folds", type=_setting(SplitConfig, "n_folds", int), default=SplitConfig.n_folds,
                       help=f"folds for test-only datasets (default {SplitConfig.n_folds})")
    group.add_argument("--validation-fraction", type=_setting(SplitConfig, "validation_fraction", float),
                       default=SplitConfig.validation_fraction,
                       help=f"share of train queries held out for model selection and tuning "
                            f"(default {SplitConfig.validation_fraction}; at least "
                            f"{SplitConfig.min_validation_queries} queries, up to "
                            f"{SplitConfig.max_validation_fraction * 100:.0f}%% of them)")
    group.add_argument("--codec", choices=list(CODECS),
                       help="post-hoc codec after the method (default: none, float32); bytes_per_vector is reported")
    group.add_argument("--rescore", type=int, help="binary codec: re-rank the top N Hamming candidates")
    group.add_argument("--oversampling", type=float,
                       help="binary codec: re-rank the top ceil(F x k) Hamming candidates (Qdrant's oversampling, "
                            "sentence-transformers' rescore_multiplier); exclusive with --rescore")
    group.add_argument("--codec-set", action="append", default=[], metavar="NAME=VALUE",
                       help="any other codec setting, e.g. --codec-set m=16 for pq")
    group.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    group.add_argument("--out", help="folder for result.json and the fitted method (train default: runs/<cell>)")


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (defaults: the paper's; see `dive methods`)")
    group.add_argument("--method", default=ExperimentSpec.method,
                       help=f"compression method (see `dive methods`; default {ExperimentSpec.method})")
    group.add_argument("--dim", type=int, default=ExperimentSpec.dim,
                       help=f"target dimension (default {ExperimentSpec.dim})")
    group.add_argument("--epochs", type=_setting(TrainConfig, "epochs", int),
                       help=f"most training epochs (per stage for staged methods; paper: {TrainConfig.epochs})")
    group.add_argument("--batch-size", type=_setting(TrainConfig, "batch_size", int),
                       help=f"triplets per batch (paper: {TrainConfig.batch_size})")
    group.add_argument("--lr", type=_setting(TrainConfig, "lr", float),
                       help=f"AdamW learning rate (default: the method's own; DIVE's paper: {TrainConfig.lr:g}, "
                            "Matryoshka-Adaptor and Search-Adaptor: 1e-3 as their papers)")
    group.add_argument("--weight-decay", type=_setting(TrainConfig, "weight_decay", float),
                       help=f"AdamW weight decay (torch default {TrainConfig.weight_decay})")
    group.add_argument("--selection", type=_setting(TrainConfig, "selection", str),
                       help="which weights to keep: validation = the best validation nDCG@10, the untrained start "
                            "included (heldout default; the validation slice comes from the train queries); "
                            "last = the last of --epochs (the paper protocol's rule)")
    group.add_argument("--patience", type=_setting(TrainConfig, "patience", int),
                       help=f"with --selection validation: stop after this many epochs without a better "
                            f"validation nDCG@10, 0 = never (default {TrainConfig.patience})")
    group.add_argument("--margin", type=_setting(DIVE_CONFIG, "margin", float),
                       help="DIVE hinge margin m (Table 8 per dataset)")
    group.add_argument("--lambda", dest="lambda_contrast", type=_setting(DIVE_CONFIG, "lambda_contrast", float),
                       help="DIVE contrastive weight lambda")
    group.add_argument("--temperature", type=_setting(DIVE_CONFIG, "temperature", float),
                       help="DIVE NT-Xent temperature tau")
    group.add_argument("--heads", type=_setting(DIVE_CONFIG, "heads", int), help="DIVE number of heads H")
    group.add_argument("--hidden", type=int, help=f"adapter hidden width (paper: {REGISTRY['dive'].Config.hidden})")
    group.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="any other method setting, e.g. --set alpha=0.2 (VALUE parsed as JSON when possible)")
    group.add_argument("--config", help="JSON file of method settings (as `dive tune` writes); flags override it")
    group.add_argument("--negatives", choices=["hard", "random"], default=MiningConfig.negatives,
                       help=f"negative sampling: hard = frozen top-{MiningConfig.hard_top_k} non-relevant, "
                            f"random = corpus (default {MiningConfig.negatives})")
    group.add_argument("--negatives-per-positive", type=_setting(MiningConfig, "negatives_per_positive", int),
                       default=MiningConfig.negatives_per_positive,
                       help=f"triplets per relevant pair (default {MiningConfig.negatives_per_positive})")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("checkpoints")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from its checkpoints (same settings; ends with the same "
                            "weights as an uninterrupted run)")
    group.add_argument("--checkpoint-dir", help="where torch adapters save their state after every epoch "
                                                "(default OUT/checkpoints; removed once the run completes)")
    group.add_argument("--no-checkpoint", action="store_true", help="do not write per-epoch checkpoints")


def _presets_help() -> str:
    """``name: datasets, dims, seeds, protocols, epochs`` of each preset, read from PRESETS."""
    def describe(settings: dict[str, Any]) -> str:
        epochs = settings.get("epochs", TrainConfig.epochs)
        return (f"{'+'.join(settings['datasets'])}, all methods, {'/'.join(map(str, settings['dims']))} dims, "
                f"{len(settings['seeds'])} seed(s), {'+'.join(settings['protocols'])}, {epochs} epochs")

    return "; ".join(f"{name}: {describe(settings)}" for name, settings in PRESETS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dive", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dive {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser("embed", help="encode a dataset into frozen embeddings (cached)",
                                description="Encode a dataset's corpus and queries and write them as .npy + id files. "
                                            "--engine ray spreads the encoding over Ray workers (a local instance, "
                                            "or the cluster at --ray-address; every node needs the model folder).")
    _data_arguments(embed)
    embed.add_argument("--out", required=True, help="folder to write corpus.npy, corpus_ids.txt, queries.npy, query_ids.txt")
    _ray_arguments(embed, "model copies")

    train = commands.add_parser("train", help="fit a compression method, save it, and evaluate it",
                                description="Fit a method on a dataset's training queries, save it to --out and "
                                            "report nDCG@10 / Recall@10 against the frozen embeddings.")
    _data_arguments(train)
    _protocol_arguments(train)
    _training_arguments(train)
    _checkpoint_arguments(train)

    evaluate = commands.add_parser("evaluate", help="evaluate frozen/training-free methods or a saved method",
                                   description="Evaluate without training: a training-free method (frozen, "
                                               "truncate) or a fitted method loaded with --load.")
    _data_arguments(evaluate)
    _protocol_arguments(evaluate)
    evaluate.add_argument("--method", default="frozen", help="training-free method (default frozen)")
    evaluate.add_argument("--dim", type=int, default=ExperimentSpec.dim,
                          help=f"target dimension for truncate (default {ExperimentSpec.dim})")
    evaluate.add_argument("--load", help="folder of a saved pipeline or method (from `dive train --out`) to evaluate; "
                                         "--codec replaces its codec")
    evaluate.add_argument("--index", help="an index written by `dive index` (of this dataset's corpus): score the test "
                                          "queries through its engine's own search, beside dive's own evaluation "
                                          "of its pipeline")

    reproduce = commands.add_parser(
        "reproduce", help="run a grid of cells (resumable), then write report.md and figures",
        description="Run every (dataset, protocol, method, dim, seed) cell, appending each to DIR/results.jsonl as "
                    "it finishes (a rerun skips finished cells), then write DIR/report.md and PNG figures.",
        epilog="example: dive reproduce --datasets scifact,cranfield --methods all --dims 128,256,512 --seeds 3 "
               "--protocols heldout,paper --out runs/paper")
    reproduce.add_argument("--preset", choices=list(PRESETS),
                           help=f"{_presets_help()}; explicit flags override it (quick is what make demo runs)")
    reproduce.add_argument("--datasets", help=f"comma-separated dataset names or folders "
                                              f"(default {','.join(field_default(GridSpec, 'datasets'))})")
    reproduce.add_argument("--methods", help="comma-separated methods, or 'all' (default all)")
    reproduce.add_argument("--dims", help=f"comma-separated target dims "
                                          f"(default {','.join(map(str, field_default(GridSpec, 'dims')))})")
    reproduce.add_argument("--seeds", type=int,
                           help=f"number of seeds, 0..N-1 (default {len(field_default(GridSpec, 'seeds'))})")
    reproduce.add_argument("--protocols", help=f"comma-separated: heldout,paper "
                                               f"(default {','.join(field_default(GridSpec, 'protocols'))})")
    reproduce.add_argument("--epochs", type=_setting(TrainConfig, "epochs", int),
                           help=f"override every adapter's epochs (paper: {TrainConfig.epochs})")
    reproduce.add_argument("--codecs", help="comma-separated storage after each method: none, float16, int8, binary, "
                                            "pq, lossless, with settings as name:key=value+key=value "
                                            f"(e.g. none,int8,binary:rescore=100,pq:m=16); "
                                            f"default {','.join(field_default(GridSpec, 'codecs'))}")
    reproduce.add_argument("--out", required=True, help="folder for results.jsonl, report.md and figures")
    reproduce.add_argument("--tune", type=int, default=GridSpec.tune_trials, metavar="TRIALS",
                           help=f"first tune every method that has a search space, per dataset, on the validation "
                                f"slice with TRIALS trials each (the same budget for all; default "
                                f"{GridSpec.tune_trials}: off)")
    reproduce.add_argument("--report-only", action="store_true", help="rebuild report.md and figures, run nothing")
    reproduce.add_argument("--merge-from", action="append", default=[], metavar="RESULTS_JSONL",
                           help="first add the cells of another results.jsonl to DIR (a grid split by --methods "
                                "over several processes or machines; DIR's record wins where both have a cell); "
                                "repeat per file; with --report-only, merge and rebuild the report only")
    reproduce.add_argument("--data-dir", help="folder holding dataset folders")
    reproduce.add_argument("--model", help="local sentence-transformers folder (default: packaged all-MiniLM-L6-v2)")
    reproduce.add_argument("--vectors", action="append", default=[], metavar="DATASET=FOLDER",
                           help="precomputed vectors for a dataset (as `dive embed` writes) instead of encoding; "
                                "repeat per dataset")
    reproduce.add_argument("--device", type=DEVICE, default=EncodeConfig.device,
                           help=f"cpu, cuda, cuda:N or mps (default {EncodeConfig.device})")
    reproduce.add_argument("--no-progress", action="store_true", help="hide progress bars")

    tune = commands.add_parser(
        "tune", help="choose a method's settings (DIVE: margin, lambda, tau, heads) on the validation slice",
        description="Optuna TPE search (seeded) over the method's search space, its defaults tried first (`dive "
                    "methods` lists which methods have one). Each trial trains on the heldout training queries and is "
                    "scored on the validation slice carved from them; test queries are never used. The study is "
                    "stored beside --out (OUT.optuna.db), so rerunning the command resumes it. Writes the best "
                    "settings as JSON for `dive train --config`, and every trial to OUT.trials.json.")
    _data_arguments(tune)
    _protocol_arguments(tune)
    _training_arguments(tune)
    tune.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                      help=f"settings tried in all, a resumed study's included (default {DEFAULT_TRIALS})")

    compress = commands.add_parser(
        "compress", help="apply a saved pipeline to a .npy or Parquet file of vectors, streaming in chunks",
        description="Stream INPUT (.npy [n, d] floats, or Parquet with a column of float lists) through a saved "
                    "pipeline into OUTPUT (.npy or .parquet; float32 vectors, or codec codes). Parquet outputs keep "
                    "the input's other columns (ids). Memory is bounded by --chunk-rows; the output appears only "
                    "when complete, so a crash or Ctrl-C leaves no partial file. --engine ray runs the same job "
                    "over a Parquet file or folder with Ray Data (a local instance, or the cluster at "
                    "--ray-address) and writes a Parquet folder; rows keep their ids but may change order, so "
                    "the input needs an id column.")
    compress.add_argument("--pipeline", required=True, help="folder saved by `dive train --out`")
    compress.add_argument("--input", required=True, help=".npy or .parquet file of frozen vectors "
                                                         "(with --engine ray: Parquet file, folder or URI)")
    compress.add_argument("--output", required=True, help=".npy or .parquet file to write "
                                                          "(with --engine ray: a new Parquet folder or URI)")
    compress.add_argument("--column", help="Parquet vector column (default: the first of embedding, embeddings, "
                                           "vector, vectors)")
    compress.add_argument("--model", help="the sentence-transformers folder that made INPUT's vectors: refused unless "
                                          "it is the pipeline's base model (default: check the model.json that "
                                          "`dive embed` writes beside its vectors, when there is one)")
    compress.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                          help=f"rows per chunk or Ray batch (default {DEFAULT_CHUNK_ROWS})")
    _ray_arguments(compress, "pipeline copies")
    compress.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    export = commands.add_parser(
        "export", help="export a saved pipeline as an ONNX graph or a sentence-transformers model",
        description="sentence-transformers: copy the frozen model folder (it must be the pipeline's base model) and "
                    "append the fitted pipeline, so that SentenceTransformer(OUT).encode(texts) returns what the "
                    "pipeline stores: the codec's codes (its float vectors under output_value='float_embedding'), or "
                    "the compressed vectors without a codec. DIVE, PCA, truncate and the autoencoder become standard "
                    "Dense + Normalize modules (no custom code); residual adapters and codecs need dive installed. "
                    "README.md becomes a model card written from the pipeline's recorded facts and metrics. onnx: "
                    "write the adapter alone as OUT.onnx (input 'embeddings' [batch, input_dim] frozen vectors, "
                    "output 'compressed' [batch, dim]), kept only if ONNX Runtime matches the pipeline within 1e-5; "
                    "the codec is not part of the graph.")
    export.add_argument("--pipeline", required=True, help="folder saved by `dive train --out`")
    export.add_argument("--format", choices=["sentence-transformers", "onnx"], default="sentence-transformers",
                        help="export format (default sentence-transformers)")
    export.add_argument("--model", help="sentence-transformers only: the frozen model folder the pipeline was "
                                        "trained on (default: the packaged all-MiniLM-L6-v2)")
    export.add_argument("--out", required=True, help="new folder (sentence-transformers) or .onnx file to write")
    export.add_argument("--truncate-dim", type=int,
                        help="sentence-transformers only: keep the first N dims of the output, re-normalised "
                             "(Matryoshka-style prefixes; the card says they were measured at the full width)")
    export.add_argument("--no-codec", action="store_true",
                        help="sentence-transformers only: leave the pipeline's codec out, so encode() returns float32")

    index = commands.add_parser(
        "index", help="store a corpus compressed by a saved pipeline in LanceDB, Qdrant or faiss",
        description="Compress corpus vectors (a dataset's, encoded or cached, or your own --input) with the "
                    "pipeline and store them with --engine: lancedb (embedded, a folder; the default), qdrant (local "
                    "mode in the folder, or --url a server) or faiss (one file; the default when --out ends in "
                    ".faiss). A folder index holds index.json, a copy of the pipeline and the engine's data, with "
                    "relative paths, so it can be moved. Query it with `dive search`, score it with "
                    "`dive evaluate --index`.")
    _data_arguments(index, dataset_required=False)
    index.add_argument("--pipeline", required=True, help="folder saved by `dive train --out`")
    index.add_argument("--out", required=True, help="index folder to write (a faiss index: a file, OUT.json beside it)")
    own = index.add_argument_group("own vectors (instead of --dataset)")
    own.add_argument("--input", help="frozen corpus vectors: .npy [n, dim] or Parquet (a vector column; other "
                                     "columns travel with the vectors)")
    own.add_argument("--ids", help="document ids, one per line, in the order of --input (default: an id column of "
                                   "the Parquet file, else the row numbers)")
    own.add_argument("--column", help="Parquet vector column (default: embedding, embeddings, vector or vectors)")
    own.add_argument("--id-column", help="Parquet id column (default: _id, id, doc_id or docid)")
    store = index.add_argument_group("engine")
    store.add_argument("--engine", dest="index_engine", choices=list(ENGINES),
                       help=f"where to store it (default {EngineConfig.engine}; faiss when --out ends in .faiss)")
    store.add_argument("--url", help="qdrant: a server or cluster, e.g. http://localhost:6333 (default: local mode "
                                     "inside the index folder)")
    store.add_argument("--collection", default=EngineConfig.collection,
                       help=f"LanceDB table / Qdrant collection name (default {EngineConfig.collection})")
    store.add_argument("--factory", help="faiss: an index_factory string applied to the stored float vectors, e.g. "
                                         "HNSW32 or IVF256,PQ16 (approximate; a pipeline without codec)")
    store.add_argument("--search-params", help="faiss --factory: search-time parameters, e.g. nprobe=16 or "
                                               "efSearch=128 (default: faiss's, nprobe=1, efSearch=16)")
    store.add_argument("--exact", action="store_true", default=None,
                       help="search every stored vector even where the codec maps to the database's approximate "
                            "storage (LanceDB IVF-PQ, Qdrant quantisation)")
    store.add_argument("--no-rescore", dest="rescore", action="store_false",
                       help="qdrant: rank quantised candidates by Qdrant's own codes, without rescoring them by the "
                            "stored floats (does not match dive's evaluation)")
    store.add_argument("--oversampling", type=_setting(EngineConfig, "oversampling", float),
                       default=EngineConfig.oversampling,
                       help=f"qdrant quantised search: candidates per result before rescoring "
                            f"(default {EngineConfig.oversampling})")
    store.add_argument("--nprobes", type=_setting(EngineConfig, "nprobes", int), default=EngineConfig.nprobes,
                       help=f"lancedb IVF-PQ: partitions scanned per query (default {EngineConfig.nprobes})")
    store.add_argument("--refine-factor", type=_setting(EngineConfig, "refine_factor", int),
                       default=EngineConfig.refine_factor,
                       help=f"lancedb IVF-PQ: rescore refine_factor x top candidates by the stored floats "
                            f"(default {EngineConfig.refine_factor})")

    search = commands.add_parser("search", help="query a `dive index` index with texts or vectors",
                                 description="Query with --query texts or a --queries file (encoded with the "
                                             "index's model) or frozen --query-vectors; each is compressed by the "
                                             "index's pipeline and ranked by its engine. --run writes a TREC run "
                                             "(qid Q0 docid rank score tag) that trec_eval, pytrec_eval and ranx read.")
    search.add_argument("--index", required=True, help="index folder or file written by `dive index`")
    queries = search.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", action="append", help="query text (repeat for several; ids 1, 2, ...)")
    queries.add_argument("--queries", help="JSONL of {\"_id\": ..., \"text\": ...} per line (BEIR's queries.jsonl)")
    queries.add_argument("--query-vectors", help="frozen query vectors (.npy or Parquet) from the index's model")
    search.add_argument("--query-ids", help="ids of --query-vectors, one per line (default: the row numbers)")
    search.add_argument("--top", type=int, default=DEFAULT_TOP_K, help=f"documents per query (default {DEFAULT_TOP_K})")
    search.add_argument("--run", help="write a TREC run file here (6 columns)")
    search.add_argument("--tag", default=DEFAULT_TAG, help=f"the run's tag, its 6th column (default {DEFAULT_TAG})")
    search.add_argument("--json", action="store_true", help="print one JSON object")

    fit = commands.add_parser(
        "fit", help="choose, train and prove the best pipeline within a storage budget",
        description="Try every method x dim x codec whose bytes per vector fit --budget: fit each on the train "
                    "queries, score it on the validation slice, choose the best validation nDCG@10 (never below "
                    "the best training-free candidate), then score the choice once on the test queries with a "
                    "95%% interval and paired tests (ranx) against frozen and the best training-free candidate. "
                    "Writes OUT/pipeline, OUT/fit.md, OUT/fit.json and OUT/candidates.jsonl; rerun the same "
                    "command to resume an interrupted fit.")
    fit_data = fit.add_argument_group("data: --dataset, or your own --vectors with --qrels")
    fit_data.add_argument("--dataset", help="BEIR dataset name (e.g. scifact) or a BEIR-format folder")
    fit_data.add_argument("--data-dir", help="folder holding dataset folders (default: $DIVE_DATA_DIR)")
    fit_data.add_argument("--vectors", help="folder of corpus.npy, corpus_ids.txt, queries.npy, query_ids.txt "
                                            "(your vectors; with --dataset: used instead of encoding its text)")
    fit_data.add_argument("--qrels", help="with --vectors alone: TSV of query-id, corpus-id, score (header "
                                          "optional), the judged pairs to test on (K-fold without --train-qrels)")
    fit_data.add_argument("--train-qrels", help="with --qrels: a separate TSV of training pairs")
    fit_data.add_argument("--model", help="sentence-transformers folder of the frozen model (default: the "
                                          "packaged all-MiniLM-L6-v2)")
    fit_search = fit.add_argument_group("search")
    fit_search.add_argument("--budget", required=True, type=_setting(FitConfig, "budget", float),
                            help="most bytes stored per corpus vector, e.g. 64")
    fit_search.add_argument("--methods", help=f"comma-separated methods (default {','.join(FitConfig.methods)})")
    fit_search.add_argument("--dims", help=f"comma-separated dims (default {','.join(map(str, FitConfig.dims))})")
    fit_search.add_argument("--codecs", help=f"comma-separated codecs, none = float32 "
                                             f"(default {','.join(FitConfig.codecs)})")
    fit_search.add_argument("--stat-test", choices=STAT_TESTS, default=FitConfig.stat_test,
                            help=f"paired test of the proof: student (t-test) or fisher (randomisation; "
                                 f"default {FitConfig.stat_test})")
    fit_search.add_argument("--seed", type=int, default=ExperimentSpec.seed,
                            help=f"seed for initialisation and negative sampling (default {ExperimentSpec.seed})")
    fit_search.add_argument("--workers", type=_checked(int, lambda value: checks.whole_at_least("workers", value, 1)),
                            help="(method, dim) groups fitted side by side in worker processes, the torch threads "
                                 "shared among them (default: cores / torch threads, e.g. 2 with OMP_NUM_THREADS=1 "
                                 "on 2 cores; 1 = one at a time)")
    fit_search.add_argument("--folds", type=_setting(SplitConfig, "n_folds", int), default=SplitConfig.n_folds,
                            help=f"folds for data without a train split (default {SplitConfig.n_folds})")
    fit_output = fit.add_argument_group("output")
    fit_output.add_argument("--out", required=True, help="folder for the pipeline, fit.md, fit.json, candidates")
    fit_output.add_argument("--export", choices=["st", "onnx"],
                            help="also write the shipped form: st = sentence-transformers folder, onnx = OUT/"
                                 "pipeline.onnx")
    fit_output.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    fit_output.add_argument("--no-progress", action="store_true", help="hide progress bars")

    commands.add_parser("methods", help="list the compression methods with a summary and their paper")
    return parser


def _codec_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = parse_assignments(args.codec_set, "--codec-set")
    for flag, key in (("--rescore", "rescore"), ("--oversampling", "oversampling")):
        if getattr(args, key) is not None:
            if args.codec != "binary":
                raise DiveError(f"{flag} applies to --codec binary only")
            settings[key] = getattr(args, key)
    if settings and not args.codec:
        raise DiveError("--codec-set needs --codec")
    return settings


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = read_config_file(args.config) if args.config else {}
    overrides.pop("dim", None)
    train = dict(overrides.pop("train", {}))
    for flag, key in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"),
                      ("weight_decay", "weight_decay"), ("selection", "selection"),
                      ("patience", "patience")):
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    if args.device != TrainConfig.device:
        train["device"] = args.device
    if args.no_progress:
        train["progress"] = False
    for flag in ("margin", "lambda_contrast", "temperature", "heads", "hidden"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    overrides.update(parse_assignments(args.set, "--set"))
    if train:
        overrides["train"] = train
    return overrides


def _encode_config(args: argparse.Namespace) -> EncodeConfig:
    return EncodeConfig(model=args.model, batch_size=getattr(args, "encode_batch_size", EncodeConfig.batch_size),
                        device=args.device, use_cache=not getattr(args, "no_cache", False),
                        engine=getattr(args, "engine", EncodeConfig.engine),
                        ray_address=getattr(args, "ray_address", None),
                        ray_workers=getattr(args, "workers", EncodeConfig.ray_workers),
                        progress=not getattr(args, "no_progress", False),
                        **{field: getattr(args, field, None) for field in PROMPT_FIELDS})


def _spec(args: argparse.Namespace, method: str, overrides: dict[str, Any] | None = None) -> ExperimentSpec:
    return ExperimentSpec(
        dataset=args.dataset, method=method, dim=args.dim, protocol=args.protocol, seed=args.seed,
        ks=tuple(sorted(set(DEFAULT_KS) | set(args.k or []))),
        overrides=overrides or {},
        mining=MiningConfig(negatives=getattr(args, "negatives", MiningConfig.negatives),
                            negatives_per_positive=getattr(args, "negatives_per_positive",
                                                           MiningConfig.negatives_per_positive)),
        split=SplitConfig(n_folds=args.folds, validation_fraction=args.validation_fraction),
        encode=_encode_config(args), data_dir=args.data_dir, vectors=args.vectors, out=args.out,
        codec=args.codec, codec_settings=_codec_settings(args),
    )


def _print_result(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record))
        return
    print(format_result(record))


def cmd_embed(args: argparse.Namespace) -> None:
    spec = ExperimentSpec(dataset=args.dataset, data_dir=args.data_dir, vectors=args.vectors,
                          encode=_encode_config(args))
    _, embeddings = load_data(spec)
    folder = save_embeddings(embeddings, args.out)
    print(f"wrote {len(embeddings.doc_ids)} document and {len(embeddings.query_ids)} query vectors "
          f"({embeddings.dim}-d) to {folder}")


def cmd_train(args: argparse.Namespace) -> None:
    spec = replace(_spec(args, args.method, _overrides(args)), resume=args.resume, checkpoint_dir=args.checkpoint_dir)
    _print_result(train_and_save(spec, checkpoints=not args.no_checkpoint), args.json)


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.index:
        _evaluate_index(args)
        return
    fitted = Pipeline.load(args.load) if args.load else None
    method = fitted.method.name if fitted else args.method
    if fitted is None and method_class(method).supervised:
        raise DiveError(f"{method} needs training: use `dive train --method {method}` or pass --load DIR")
    _print_result(run_experiment(_spec(args, method), fitted=fitted), args.json)


def _evaluate_index(args: argparse.Namespace) -> None:
    if args.load or args.codec or args.method != "frozen":
        raise DiveError("--index evaluates the index's own pipeline; drop --load, --codec and --method")
    spec = _spec(args, "frozen")
    index = load_index(args.index)
    try:
        record = evaluate_index_on_dataset(index, load_data(spec), spec.protocol, spec.split, spec.ks)
    finally:
        index.close()
    record = {"index": args.index, **record}
    if args.json:
        print(json.dumps(record))
        return
    print(f"{args.index} ({record['engine']}, {'exact' if record['exact'] else 'approximate'}) on "
          f"{record['dataset']} {record['protocol']}, {record['n_test_queries']} test queries")
    for name, value in record["metrics"].items():
        print(f"  {name}: {value:.4f} through {record['engine']}, {record['dive_metrics'][name]:.4f} dive's "
              f"evaluation (difference {record['difference'][name]:+.2e})")


def cmd_tune(args: argparse.Namespace) -> None:
    spec = _spec(args, args.method, _overrides(args))
    out = args.out or default_tuned_path(spec)
    settings = tune(spec, load_data(spec), args.trials, out=out)
    print(json.dumps(settings) if args.json else f"best settings {settings} written to {out}")


def _csv(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _ints(text: str | None, flag: str) -> list[int] | None:
    try:
        return [int(part) for part in _csv(text)] if text else None
    except ValueError:
        raise DiveError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _vectors_by_dataset(assignments: list[str]) -> dict[str, str]:
    vectors = {}
    for assignment in assignments:
        dataset, separator, folder = assignment.partition("=")
        if not separator or not dataset or not folder:
            raise DiveError(f"--vectors expects DATASET=FOLDER, got {assignment!r}")
        vectors[dataset] = folder
    return vectors


def cmd_reproduce(args: argparse.Namespace) -> None:
    if args.merge_from:
        added = merge_results(Path(args.out), [Path(source) for source in args.merge_from])
        print(f"added {added} cells to {Path(args.out) / 'results.jsonl'}")
    if args.report_only:
        print(write_report(Path(args.out)))
        return
    methods = _csv(args.methods)
    train = {key: value for key, value in (("progress", False if args.no_progress else None),
                                           ("device", args.device if args.device != TrainConfig.device else None))
             if value is not None}
    spec = GridSpec.from_preset(
        args.out, args.preset, train=train, datasets=_csv(args.datasets),
        methods=methods if methods and methods != ["all"] else None, dims=_ints(args.dims, "--dims"),
        seeds=list(range(args.seeds)) if args.seeds is not None else None, protocols=_csv(args.protocols),
        codecs=_csv(args.codecs), epochs=args.epochs, data_dir=args.data_dir, tune_trials=args.tune,
        encode=_encode_config(args), vectors=_vectors_by_dataset(args.vectors))
    print(reproduce(spec))


def cmd_compress(args: argparse.Namespace) -> None:
    if args.chunk_rows < 1 or args.workers < 1:
        raise DiveError("--chunk-rows and --workers must be at least 1")
    if args.engine == "ray":
        summary = compress_with_ray(args.pipeline, args.input, args.output, column=args.column,
                                    batch_rows=args.chunk_rows, workers=args.workers, address=args.ray_address,
                                    model=args.model)
    else:
        summary = compress_file(Pipeline.load(args.pipeline), args.input, args.output, args.chunk_rows,
                                column=args.column, progress=not args.no_progress, model=args.model)
    print(json.dumps(summary))


def cmd_export(args: argparse.Namespace) -> None:
    pipeline = Pipeline.load(args.pipeline)
    if args.format == "onnx":
        print(json.dumps(export_onnx(pipeline, args.out)))
        return
    config = ExportConfig(truncate_dim=args.truncate_dim, codec=not args.no_codec)
    folder = export_sentence_transformers(pipeline, model_path(args.model), args.out, config)
    output = "the codec's codes" if config.codec and pipeline.codec is not None else "the compressed vectors"
    print(f"wrote {folder}: SentenceTransformer({str(folder)!r}).encode(texts) gives {output}; see its README.md")


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine settings of `dive index`; without --engine the engine follows --out (dive.index.default_engine)."""
    return EngineConfig(engine=args.index_engine or default_engine(args.out), url=args.url, factory=args.factory,
                        search_params=args.search_params, collection=args.collection, exact=args.exact,
                        rescore=args.rescore, oversampling=args.oversampling, nprobes=args.nprobes,
                        refine_factor=args.refine_factor)


def cmd_index(args: argparse.Namespace) -> None:
    if bool(args.input) == bool(args.dataset):
        raise DiveError("give the corpus as --dataset NAME or as --input VECTORS (not both)")
    if not args.input and (args.ids or args.column or args.id_column):
        raise DiveError("--ids, --column and --id-column go with --input")
    pipeline = Pipeline.load(args.pipeline)
    config = _engine_config(args)
    if args.input:
        corpus = read_vectors(args.input, args.ids, args.column, args.id_column)
        doc_ids, doc_vectors, columns = corpus.ids, corpus.vectors, corpus.columns
    else:
        spec = ExperimentSpec(dataset=args.dataset, data_dir=args.data_dir, vectors=args.vectors,
                              encode=_encode_config(args))
        check_data_model(pipeline, spec)  # before any text is encoded
        _, embeddings = load_data(spec)
        doc_ids, doc_vectors, columns = embeddings.doc_ids, embeddings.doc_vectors, None
    summary = build_index(pipeline, args.pipeline, doc_ids, doc_vectors, args.out, model=args.model, config=config,
                          columns=columns)
    print(json.dumps(summary))


def _search_results(args: argparse.Namespace) -> tuple[list[str], list[str] | None, list[list[dict[str, Any]]]]:
    """(query ids, query texts or None, hits per query) of `dive search`."""
    if args.query_ids and not args.query_vectors:
        raise DiveError("--query-ids goes with --query-vectors")
    index = load_index(args.index)
    try:
        if args.query_vectors:
            queries = read_query_vectors(args.query_vectors, args.query_ids)
            return queries.ids, None, index.search_hits(queries.vectors, args.top)
        if args.queries:
            query_ids, texts = read_query_texts(args.queries)
        else:
            query_ids, texts = [str(number) for number in range(1, len(args.query) + 1)], args.query
        return query_ids, texts, index.search(texts, args.top)
    finally:
        index.close()


def cmd_search(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise DiveError("--top must be at least 1")
    query_ids, texts, results = _search_results(args)
    lines = write_run(args.run, query_ids, results, args.tag) if args.run else None
    if args.json:
        print(json.dumps({"index": args.index, "run": args.run, "results": [
            {"query_id": query_id, **({"query": texts[number]} if texts else {}), "hits": hits}
            for number, (query_id, hits) in enumerate(zip(query_ids, results))]}))
        return
    if args.run:
        print(f"wrote {lines} lines for {len(query_ids)} queries to {args.run}")
        return
    for number, (query_id, hits) in enumerate(zip(query_ids, results)):
        print(f"query {query_id}: {texts[number]}" if texts else f"query {query_id}")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank:>3}. {hit['doc_id']}  {hit['score']:.4f}")


def cmd_fit(args: argparse.Namespace) -> None:
    if bool(args.dataset) == bool(args.qrels) or (args.qrels and not args.vectors):
        raise DiveError("dive fit takes --dataset NAME, or --vectors DIR with --qrels FILE")
    if args.train_qrels and not args.qrels:
        raise DiveError("--train-qrels needs --vectors and --qrels")
    config = FitConfig(budget=args.budget, methods=tuple(_csv(args.methods) or FitConfig.methods),
                       dims=tuple(_ints(args.dims, "--dims") or FitConfig.dims),
                       codecs=tuple(_csv(args.codecs) or FitConfig.codecs), stat_test=args.stat_test,
                       progress=not args.no_progress, workers=args.workers)
    dataset = args.dataset or Path(args.vectors).name
    spec = ExperimentSpec(dataset=dataset, seed=args.seed, split=SplitConfig(n_folds=args.folds),
                          encode=EncodeConfig(model=args.model, progress=not args.no_progress),
                          data_dir=args.data_dir, vectors=args.vectors)
    data = load_judged_vectors(args.vectors, args.qrels, args.train_qrels) if args.qrels else None
    result = fit(spec, config, args.out, data, export=args.export)
    if args.json:
        print(json.dumps(result))
        return
    choice, test = result["choice"], result["test"]
    print(f"chose {choice['label']} ({choice['bytes_per_vector']:g} bytes per vector) of "
          f"{len(result['candidates'])} candidates: test nDCG@10 {test['metrics']['chosen']['ndcg@10']:.4f} vs frozen "
          f"{test['metrics']['frozen']['ndcg@10']:.4f} (p = {test['tests']['vs frozen']['p']:.3g}); "
          f"see {Path(args.out) / 'fit.md'}")


def _method_tags(cls: type) -> str:
    """``main, supervised, trained, tunable``: what a method class declares about itself."""
    role = f"ablation of {cls.ablates}" if cls.role == "ablation" else cls.role
    return ", ".join([role, "supervised" if cls.supervised else "no labels",
                      "trained" if cls.trains else "no training", *(["tunable"] if cls.tunable else [])])


def cmd_methods(args: argparse.Namespace) -> None:
    width = max(len(name) for name in REGISTRY)
    for name, cls in REGISTRY.items():
        print(f"{name:<{width}}  [{_method_tags(cls)}] {cls.summary}\n"
              f"{'':<{width}}  paper: {cls.citation or 'none'}")


COMMANDS = {"embed": cmd_embed, "train": cmd_train, "evaluate": cmd_evaluate, "reproduce": cmd_reproduce,
            "tune": cmd_tune, "compress": cmd_compress, "export": cmd_export, "index": cmd_index,
            "search": cmd_search, "methods": cmd_methods, "fit": cmd_fit}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("faiss", "sentence_transformers", "transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so temp files are removed and no partial output remains.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        COMMANDS[args.command](args)
    except DiveError as error:
        if args.debug:
            raise
        print(f"dive: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dive: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
