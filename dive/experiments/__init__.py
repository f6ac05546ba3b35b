"""Experiments layer: single cells now; grids, reports and plots build on :func:`run_experiment`."""

from dive.experiments.run import ExperimentSpec, load_data, run_experiment

__all__ = ["ExperimentSpec", "load_data", "run_experiment"]
