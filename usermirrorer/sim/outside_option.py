"""An outside option for likelihood-mode LLM simulators that scores like a catalog quantile.

Likelihood mode turns each option text into a score (PMI against a neutral context) and
softmaxes the scores. Scored the same way, the text "None of these movies: I skip this list"
is almost never likely (its PMI sits far below any title's), so a likelihood simulator never
skips and every slate looks equally good to it (measured in #13: ~0 % skips).
:class:`QuantileOutsideOption` gives "none of these" the rule the log-only baselines use
(:mod:`usermirrorer.sim.baselines`): it scores at the ``quantile`` quantile of the user's
scores over the catalog, so the user skips about as readily as they would take the
catalog's item at that rank. An LLM cannot score the whole catalog per scene; the quantile is
estimated from ``n_reference`` fixed catalog items (drawn once with ``seed``) scored in the
scene's own context, in the same simulator call as the slate. Equal contexts (every agent
facing the same user at the same time) reuse one estimate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset, parse_time
from usermirrorer.data_pipeline.sampling.strategies import DomainStrategy, get_strategy
from usermirrorer.data_pipeline.scene import render_scene, scene_fields, scene_text
from usermirrorer.errors import ConfigError
from usermirrorer.sim.simulator import ChoiceResult, _softmax

__all__ = ["QuantileOutsideOption"]

_MEMO_SIZE = 4096


class QuantileOutsideOption:
    """A likelihood-mode simulator whose outside option scores at a quantile of catalog items.

    For a scene with ``outside_option`` the K item options are scored by ``simulator`` without
    the "none of these" text, the reference items are scored in the same context, and
    ``probs = softmax([s_1, ..., s_K, q] / T)`` where ``q`` is the ``quantile`` quantile of the
    reference scores and ``T`` the simulator's ``score_temperature``. A scene without an
    outside option is passed through unchanged.

    Args:
        simulator: a :class:`~usermirrorer.sim.UserSimulator` in likelihood mode.
        ds: the dataset the scenes' items come from (reference items are drawn from it).
        n_reference: catalog items the quantile is estimated from (at most 26, the option
            limit of one scene).
        quantile: the quantile (0.9: the baselines' default ``skip_quantile``).
        seed: which catalog items are the reference.
        strategy: renders the reference items' option texts (default: the dataset's).
    """

    def __init__(self, simulator: Any, ds: RawDataset, n_reference: int = 24, quantile: float = 0.9,
                 seed: int = 0, strategy: DomainStrategy | str | None = None):
        options = getattr(simulator, "options", None)
        if getattr(options, "mode", None) != "likelihood":
            raise ConfigError("QuantileOutsideOption needs a UserSimulator in likelihood mode "
                              f"(SimOptions(mode='likelihood')), got {simulator!r}")
        if not 2 <= n_reference <= min(26, ds.n_items):
            raise ConfigError(f"n_reference must be in 2..{min(26, ds.n_items)}, got {n_reference}")
        if not 0.0 <= quantile <= 1.0:
            raise ConfigError(f"quantile must be in [0, 1], got {quantile}")
        self.simulator = simulator
        self.ds = ds
        self.strategy = strategy if isinstance(strategy, DomainStrategy) else get_strategy(strategy or ds.name)
        self.quantile = float(quantile)
        rng = np.random.default_rng(seed)
        self.reference = np.sort(rng.choice(ds.n_items, n_reference, replace=False)).astype(np.int64)
        self._memo: OrderedDict[tuple, float] = OrderedDict()

    @property
    def options(self) -> Any:
        """The wrapped simulator's options (read at every call: a fitted temperature applies)."""
        return self.simulator.options

    def __repr__(self) -> str:
        return (f"QuantileOutsideOption({self.simulator!r}, quantile={self.quantile}, "
                f"n_reference={len(self.reference)})")

    def _reference_scene(self, scene: dict[str, Any]) -> dict[str, Any]:
        now = parse_time(scene["timestamp"])
        texts = [self.strategy.exposure_item(self.ds, int(i), now) for i in self.reference]
        fields = scene_fields(scene)
        fields.update(impression_list=[str(self.ds.item_ids[i]) for i in self.reference], action_list=texts,
                      outside_option=False, scene_id=f"{fields.get('scene_id') or 'scene'}~reference")
        return render_scene(**fields)

    def threshold_key(self, scene: dict[str, Any]) -> tuple:
        profile, history, _ = scene_text(scene)
        return (scene.get("dataset"), scene.get("user_id"), scene["timestamp"], profile, history)

    def choice_probs(self, scenes: dict | Sequence[dict], **kwargs: Any) -> ChoiceResult | list[ChoiceResult]:
        """Choice distributions, the outside option (last) scored at the reference quantile."""
        single = isinstance(scenes, dict)
        batch = [scenes] if single else list(scenes)
        items, wanted = [], {}
        for scene in batch:
            if scene.get("outside_option"):
                fields = scene_fields(scene)
                fields.update(outside_option=False,
                              action_list=scene_text(scene)[2][:-1])
                items.append(render_scene(**fields))
                key = self.threshold_key(scene)
                if key not in self._memo and key not in wanted:
                    wanted[key] = self._reference_scene(scene)
            else:
                items.append(scene)
        answers = self.simulator.choice_probs(items + list(wanted.values()), mode="likelihood")
        for key, ref in zip(wanted, answers[len(items):]):
            self._memo[key] = float(np.quantile(ref.scores, self.quantile))
            while len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)
        temperature = self.options.score_temperature
        out = []
        for scene, answer in zip(batch, answers[: len(items)]):
            if not scene.get("outside_option"):
                out.append(answer)
                continue
            scores = np.append(answer.scores, self._memo[self.threshold_key(scene)])
            out.append(ChoiceResult(probs=_softmax(scores / temperature), scores=scores))
        return out[0] if single else out
