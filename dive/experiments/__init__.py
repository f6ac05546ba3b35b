"""Experiments layer: one cell (:func:`run_experiment`, :func:`train_and_save`), grids with resume
(:func:`reproduce`), the results store (:mod:`dive.experiments.store`), reports and figures."""

from dive.experiments.grid import PRESETS, GridSpec, reproduce, run_grid, write_report
from dive.experiments.run import CellResult, ExperimentSpec, load_data, run_experiment, train_and_save
from dive.experiments.store import merge_results, read_results

__all__ = ["CellResult", "ExperimentSpec", "GridSpec", "PRESETS", "load_data", "merge_results", "read_results",
           "reproduce", "run_experiment", "run_grid", "train_and_save", "write_report"]
