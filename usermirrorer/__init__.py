"""usermirrorer: preference-aligned LLM user simulators from recommendation logs, as gymnasium envs.

``import usermirrorer`` registers the environment ``usermirrorer/RecEnv-v0`` (and its vector
entry point). Importing the package does not import torch.

The package follows the data, one layer per stage; a module imports only from layers below it
(``docs/architecture.md`` has the full map, ``tests/test_architecture.py`` keeps it):

0. :mod:`usermirrorer.errors` -- the error hierarchy;
1. :mod:`usermirrorer.data_pipeline` -- the data ground: raws, JSONL, the ``Scene`` type,
   causal popularity, embeddings;
2. :mod:`usermirrorer.preprocessing` (converters: original files -> raws) and
   :mod:`usermirrorer.data_pipeline.sampling` (raws -> scenes);
3. :mod:`usermirrorer.sim` -- prompts, backends, :class:`~usermirrorer.sim.UserSimulator`,
   choice models, evaluation;
4. :mod:`usermirrorer.data_pipeline.training` (decisions -> probs -> filter -> fine-tune) and
   :mod:`usermirrorer.envs` (``RecEnv``, ``RecVectorEnv``, agents);
5. :mod:`usermirrorer.fidelity` -- the fidelity benchmark;
6. commands (``usermirrorer/<verb>_command.py``, :mod:`usermirrorer.cli`) and the orchestrators
   :mod:`usermirrorer.reproduce` and :mod:`usermirrorer.demo`.
"""

from __future__ import annotations

from usermirrorer.envs import registration as _registration  # noqa: F401  registers RecEnv-v0

__version__ = "0.1.0"
