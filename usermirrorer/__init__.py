"""usermirrorer: preference-aligned LLM user simulators from recommendation logs, as gymnasium envs.

``import usermirrorer`` registers the environment ``usermirrorer/RecEnv-v0`` (and its vector
entry point); the simulator lives in :mod:`usermirrorer.sim`, the data pipeline in
:mod:`usermirrorer.data_pipeline`. Importing the package does not import torch.
"""

from __future__ import annotations

from usermirrorer.envs import registration as _registration  # noqa: F401  registers RecEnv-v0

__version__ = "0.1.0"
