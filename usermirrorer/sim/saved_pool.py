"""A fitted log-linear pool on disk (``pool.json``): its members, how each is rebuilt, its weights.

Why a file: the most faithful simulator this project has measured is a gated pool of the
trained LLM with four log-only models (``benchmarks/results/fidelity.md``). ``usermirrorer
fit-pool`` fits it once on train-user scenes and writes this file; the environment, the demo
and ``usermirrorer eval`` then take its path where they take a model name
(:func:`usermirrorer.sim.choice_models.make_choice_model`).

Members are stored as recipes plus what was fitted, not as pickles, so the file is small,
readable and portable across library versions:

- ``llm``: a checkpoint folder (relative paths are read from the file's folder) and the
  :class:`~usermirrorer.sim.simulator.SimOptions` fields it is queried with;
- ``collaborative``: rebuilt from the log, its embedding fitted on the rows of ``train_users``
  with ``seed`` (deterministic; cached under the project's ``embeddings/``);
- ``mnl``: the features, weights and standardisation :meth:`MultinomialLogitChoiceModel.fit`
  found (``content`` similarity is an MNL of the one ``content`` feature);
- ``popularity``, ``random``: nothing to store.

>>> spec = SavedPool.read("workspace/pools/ml-100k/pool.json")        # doctest: +SKIP
>>> pool = make_choice_model(str(spec.path), ds)                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usermirrorer.errors import DataError

__all__ = ["POOL_FORMAT", "MEMBER_KINDS", "PoolMember", "SavedPool", "is_pool_file"]

POOL_FORMAT = "usermirrorer-pool/1"
MEMBER_KINDS = ("llm", "collaborative", "mnl", "popularity", "random")


@dataclass(frozen=True)
class PoolMember:
    """One member of a saved pool.

    Attributes:
        name: what the pool calls it (weights are listed by name).
        kind: one of :data:`MEMBER_KINDS`.
        model: ``llm``: the checkpoint folder or registry name.
        options: ``llm``: SimOptions fields; ``mnl``: ``features``, ``embedder``, ``l2``.
        state: ``mnl``: what the fit learned (:meth:`MultinomialLogitChoiceModel.fitted_state`).
    """

    name: str
    kind: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class SavedPool:
    """A fitted pool as stored in ``pool.json``.

    Attributes:
        dataset: the raw dataset the members read (a pool loads only on it).
        members: the members, in the order of ``weights``.
        weights: one per member, or two (base weights, then slopes) with ``gate``.
        gate: the member whose log-term spread moves every weight (:mod:`usermirrorer.sim.pool`).
        train_users: the users the pool and its members were fitted on.
        seed: the collaborative embedding's seed.
        fit: the fit's report (scenes, log-loss, weights by name, where the scenes came from).
        path: where it was read from (None before it is written).
    """

    dataset: str
    members: tuple[PoolMember, ...]
    weights: tuple[float, ...]
    gate: str | None = None
    train_users: tuple[str, ...] = ()
    seed: int = 0
    fit: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"format": POOL_FORMAT, "dataset": self.dataset, "gate": self.gate,
                "weights": list(self.weights), "seed": self.seed, "fit": self.fit,
                "members": [{"name": m.name, "kind": m.kind, "model": m.model, "options": m.options,
                             "state": m.state} for m in self.members],
                "train_users": list(self.train_users)}

    def write(self, path: str | os.PathLike) -> Path:
        """Write the file atomically (a crash leaves the old file or none, never half of one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def member_model(self, member: PoolMember) -> str | None:
        """An ``llm`` member's checkpoint, a relative folder read from the pool file's folder."""
        if member.model is None or self.path is None or Path(member.model).is_absolute():
            return member.model
        local = self.path.parent / member.model
        return str(local) if local.exists() else member.model

    @classmethod
    def read(cls, path: str | os.PathLike) -> SavedPool:
        """Read and check a pool file.

        Raises:
            DataError: unreadable JSON, another format, or a field of the wrong shape (the
                message names the file and the field and says what was expected).
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"{path}: cannot read the pool file ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); "
                            "rewrite it with `usermirrorer fit-pool`") from exc
        if not isinstance(raw, Mapping) or raw.get("format") != POOL_FORMAT:
            got = raw.get("format") if isinstance(raw, Mapping) else type(raw).__name__
            raise DataError(f"{path}: field 'format': expected {POOL_FORMAT!r} (a file `usermirrorer fit-pool` "
                            f"writes), got {got!r}")

        def need(name: str, kind: type | tuple[type, ...], what: str) -> Any:
            value = raw.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DataError(f"{path}: field {name!r}: expected {what}, got {value!r:.80}")
            return value

        dataset = need("dataset", str, "the dataset name (e.g. 'ml-100k')")
        entries = need("members", list, "a list of members")
        members = []
        for i, entry in enumerate(entries):
            where = f"{path}: members[{i}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise DataError(f"{where}: expected an object with a 'name' string, got {entry!r:.80}")
            if entry.get("kind") not in MEMBER_KINDS:
                raise DataError(f"{where} ({entry['name']}): field 'kind': expected one of {list(MEMBER_KINDS)}, "
                                f"got {entry.get('kind')!r}")
            if entry["kind"] == "llm" and not isinstance(entry.get("model"), str):
                raise DataError(f"{where} ({entry['name']}): field 'model': an llm member needs its checkpoint "
                                "folder or model name")
            if entry["kind"] == "mnl" and not isinstance(entry.get("state"), Mapping):
                raise DataError(f"{where} ({entry['name']}): field 'state': an mnl member needs its fitted "
                                "weights and standardisation")
            members.append(PoolMember(name=entry["name"], kind=entry["kind"], model=entry.get("model"),
                                      options=dict(entry.get("options") or {}),
                                      state=None if entry.get("state") is None else dict(entry["state"])))
        if not members:
            raise DataError(f"{path}: field 'members': expected at least one member, got none")
        names = [m.name for m in members]
        gate = raw.get("gate")
        if gate is not None and gate not in names:
            raise DataError(f"{path}: field 'gate': expected null or a member name ({names}), got {gate!r}")
        weights = need("weights", list, "a list of numbers")
        expected = len(members) * (1 if gate is None else 2)
        if len(weights) != expected or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                               for w in weights):
            raise DataError(f"{path}: field 'weights': expected {expected} numbers ("
                            + ("one per member" if gate is None else "a base weight per member, then a slope per member")
                            + f"), got {weights!r:.120}")
        users = raw.get("train_users", [])
        if not isinstance(users, list):
            raise DataError(f"{path}: field 'train_users': expected a list of user ids, got {users!r:.80}")
        seed = raw.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DataError(f"{path}: field 'seed': expected an integer, got {seed!r}")
        return cls(dataset=dataset, members=tuple(members), weights=tuple(float(w) for w in weights), gate=gate,
                   train_users=tuple(str(u) for u in users), seed=seed, fit=dict(raw.get("fit") or {}), path=path)


def is_pool_file(model: Any) -> bool:
    """Whether ``model`` names a pool file (a path ending in ``.json`` that exists)."""
    return isinstance(model, (str, os.PathLike)) and str(model).endswith(".json") and Path(model).is_file()

