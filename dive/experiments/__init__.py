"""Experiments layer: one cell (:func:`run_experiment`), grids with resume (:func:`reproduce`),
reports and figures."""

from dive.experiments.grid import (PRESETS, GridSpec, merge_results, read_results, reproduce, run_grid,
                                   write_report)
from dive.experiments.run import ExperimentSpec, load_data, run_experiment

__all__ = ["ExperimentSpec", "GridSpec", "PRESETS", "load_data", "merge_results", "read_results", "reproduce",
           "run_experiment", "run_grid", "write_report"]
