"""Data layer: load BEIR-format datasets, split them by protocol, mine training triplets."""

from dive.data.beir import BeirDataset, Qrels, load_beir
from dive.data.download import BEIR_SPLITS, download_beir, resolve_dataset
from dive.data.sets import Embeddings, EvalSet, TrainSet, check_vectors
from dive.data.splits import PROTOCOLS, Split, SplitConfig, make_splits
from dive.data.triplets import MiningConfig, TripletSampler, build_sampler

__all__ = [
    "BEIR_SPLITS", "BeirDataset", "Embeddings", "EvalSet", "MiningConfig", "PROTOCOLS", "Qrels",
    "Split", "SplitConfig", "TrainSet", "TripletSampler", "build_sampler", "check_vectors",
    "download_beir", "load_beir", "make_splits", "resolve_dataset",
]
