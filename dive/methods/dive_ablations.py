"""DIVE's ablations (SPEC "DIVE", Ablations; DIVE paper Section 5.1, ablation study).

- ``dive-no-contrast`` ("w/o contrast"): ``lambda_contrast = 0``, so ``L = L_tri``.
- ``dive-single-head`` ("w/o multi-head"): ``heads = 1``, so there is no ``L_con``.

Everything else is DIVE's default for the dataset (Table 8 row). The ablated field is fixed:
an override that contradicts it raises :class:`~dive.errors.DiveError`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from dive.errors import DiveError
from dive.methods.dive import CITATION, Dive, DiveConfig


class _DiveAblation(Dive):
    """A :class:`Dive` whose ``ABLATION`` fields are fixed to the given values."""

    ABLATION: ClassVar[dict[str, Any]]
    role = "ablation"
    ablates = Dive.name
    search_space = {"margin": Dive.search_space["margin"]}
    """Only the margin: each ablation fixes lambda or H, which leaves tau (and H) without effect on head 1."""
    citation = replace(CITATION, note="ablation study, Section 5.1")

    @classmethod
    def default_config(cls, dataset: str | None = None) -> DiveConfig:
        return replace(super().default_config(dataset), **cls.ABLATION)

    def __init__(self, config: DiveConfig | None = None, **overrides: Any):
        super().__init__(config if config is not None else self.default_config(), **overrides)
        for name, value in self.ABLATION.items():
            if getattr(self.config, name) != value:
                raise DiveError(f"{self.name} fixes {name}={value} (got {getattr(self.config, name)}); "
                                f"use method 'dive' to vary it")


class DiveNoContrast(_DiveAblation):
    name = "dive-no-contrast"
    summary = "DIVE ablation 'w/o contrast': lambda = 0, self-limiting triplet loss only"
    ABLATION = {"lambda_contrast": 0.0}


class DiveSingleHead(_DiveAblation):
    name = "dive-single-head"
    summary = "DIVE ablation 'w/o multi-head': H = 1 head, so no head-wise contrastive loss"
    ABLATION = {"heads": 1}
