"""The scene: what the simulator reads for one choice (DESIGN.md §2 "Scene record").

A scene is one user's profile and history text plus a lettered exposure list. It is a plain
dict (so it round-trips through JSONL unchanged), typed by :class:`Scene`, and every scene in the
package is built by one constructor, :func:`render_scene`: the scene sampler (logged scenes of
``datasets/<D>_{train,eval}.jsonl``), the environment (one scene per step), the rating reward
(its follow-up queries) and the position-debiasing path (:func:`reorder_options`).

Keys are written in one order, whatever the caller: ``dataset``, ``scene_id``, ``user_id``,
``item_id``, ``timestamp``, ``impression_list``, ``item_pos``, ``choice_cnt``,
``history_item_ids``, ``outside_option``, ``rating_query``, ``text``. Optional keys the caller
does not give are left out, so a sampled scene is exactly the DESIGN.md §2 record.

>>> scene = render_scene(dataset="toy", user_id="u1", timestamp="1998-03-04 12:00:00",
...                      impression_list=["m1", "m2"], item_id="m2", item_pos=1,
...                      profile="age: 30", history="m0 (2 days ago)", action_list=["M1", "M2"])
>>> list(scene)
['dataset', 'user_id', 'item_id', 'timestamp', 'impression_list', 'item_pos', 'choice_cnt', 'text']
>>> scene_id(scene), scene_target(scene)
('toy:u1:m2:1998-03-04 12:00:00', 1)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypedDict

from usermirrorer.errors import DataError, data_problem

__all__ = [
    "Scene",
    "SceneText",
    "RatingQuery",
    "render_scene",
    "scene_fields",
    "scene_id",
    "scene_fingerprint",
    "scene_text",
    "scene_target",
    "reorder_options",
    "reversed_scene",
]


class SceneText(TypedDict):
    """The text the LLM reads (``scene["text"]``)."""

    profile: str  #: the user's profile, rendered by the domain strategy
    history: str  #: the user's interactions before ``timestamp``, one per line, oldest first
    action_list: list[str]  #: one rendered option per exposure-list entry, in option order (A, B, ...)


class RatingQuery(TypedDict):
    """What a rating follow-up scene asks (``scene["rating_query"]``)."""

    item_id: str  #: the item being rated
    levels: list[int]  #: the rating level of each option, in option order


class Scene(TypedDict, total=False):
    """One simulation scene. Sampled scenes hold the DESIGN.md §2 keys; env scenes add their own.

    DESIGN.md §2 keys (a sampled scene has exactly these):

    - ``dataset``: dataset name (``D`` of the raws).
    - ``user_id``: the user's id.
    - ``item_id``: the item the user really chose (logged scenes only).
    - ``timestamp``: the time of the choice, ``YYYY-MM-DD HH:MM:SS``; the history is before it.
    - ``impression_list``: item ids of the exposure list in option order (real item included).
    - ``item_pos``: 0-based index of the real item in ``impression_list`` (logged scenes only).
    - ``choice_cnt``: number of options, ``len(impression_list)`` (logged scenes only).
    - ``text``: :class:`SceneText` — profile, history and the rendered options.

    Optional keys (environment, rating reward, debiasing):

    - ``scene_id``: a unique id; without it :func:`scene_id` derives one from the §2 keys.
    - ``history_item_ids``: item ids of the user's history at this step, oldest first.
    - ``outside_option``: the last entry of ``text.action_list`` is "none of these" (it has no
      ``impression_list`` entry).
    - ``rating_query``: :class:`RatingQuery` — the scene asks for a rating, not a choice.
    """

    dataset: str
    scene_id: str
    user_id: str
    item_id: str
    timestamp: str
    impression_list: list[str]
    item_pos: int
    choice_cnt: int
    history_item_ids: list[str]
    outside_option: bool
    rating_query: RatingQuery
    text: SceneText


def render_scene(
    *,
    dataset: str,
    user_id: str,
    timestamp: str,
    impression_list: Sequence[str],
    profile: str,
    history: str,
    action_list: Sequence[str],
    item_id: str | None = None,
    item_pos: int | None = None,
    scene_id: str | None = None,
    history_item_ids: Sequence[str] | None = None,
    outside_option: bool | None = None,
    rating_query: RatingQuery | None = None,
) -> Scene:
    """Build a scene; the one constructor of the package.

    Values are stored as given (no conversion), so a caller's output stays byte-identical.

    Args:
        dataset, user_id, timestamp: who and when.
        impression_list: item ids in option order.
        profile, history, action_list: the ``text`` fields.
        item_id, item_pos: the real choice of a logged scene, given together; ``choice_cnt``
            (``len(impression_list)``) is written with them. Left out for env scenes.
        scene_id, history_item_ids, outside_option, rating_query: the optional keys
            (see :class:`Scene`); each is left out when None.

    Raises:
        DataError: only one of ``item_id``/``item_pos``, or ``item_pos`` outside the list.
    """
    scene: dict[str, Any] = {"dataset": dataset}
    if scene_id is not None:
        scene["scene_id"] = scene_id
    scene["user_id"] = user_id
    if (item_id is None) != (item_pos is None):
        raise DataError(
            f"scene of user {user_id!r} at {timestamp}: item_id and item_pos describe the real choice "
            f"and come together, got item_id={item_id!r}, item_pos={item_pos!r}"
        )
    if item_id is not None:
        scene["item_id"] = item_id
    scene["timestamp"] = timestamp
    scene["impression_list"] = list(impression_list)
    if item_pos is not None:
        if not 0 <= item_pos < len(scene["impression_list"]):
            raise DataError(
                f"scene of user {user_id!r} at {timestamp}: item_pos {item_pos!r} is not an index into the "
                f"{len(scene['impression_list'])} items of impression_list"
            )
        scene["item_pos"] = item_pos
        scene["choice_cnt"] = len(scene["impression_list"])
    if history_item_ids is not None:
        scene["history_item_ids"] = list(history_item_ids)
    if outside_option is not None:
        scene["outside_option"] = outside_option
    if rating_query is not None:
        scene["rating_query"] = rating_query
    scene["text"] = {"profile": profile, "history": history, "action_list": list(action_list)}
    return scene  # type: ignore[return-value]


_OPTIONAL = ("scene_id", "history_item_ids", "outside_option", "rating_query")


def scene_fields(scene: Scene | dict[str, Any]) -> dict[str, Any]:
    """The :func:`render_scene` keyword arguments that rebuild ``scene``.

    ``render_scene(**scene_fields(s))`` equals ``s`` for any scene :func:`render_scene` made; so a
    variant is ``render_scene(**{**scene_fields(s), "action_list": ...})``. Keys outside
    :class:`Scene` are not carried, nor ``choice_cnt`` (derived).

    Raises:
        DataError: a required key or the ``text`` fields missing, naming the scene.
    """
    profile, history, actions = scene_text(scene)
    missing = [k for k in ("dataset", "user_id", "timestamp", "impression_list") if k not in scene]
    if missing:
        raise DataError(f"scene {scene_id(scene)!r} lacks {', '.join(missing)}; expected a scene record (DESIGN.md §2)")
    fields = {k: scene[k] for k in ("dataset", "user_id", "timestamp", "impression_list")}
    fields.update(profile=profile, history=history, action_list=actions)
    if "item_id" in scene and "item_pos" in scene:
        fields.update(item_id=scene["item_id"], item_pos=scene["item_pos"])
    fields.update({k: scene[k] for k in _OPTIONAL if k in scene})
    return fields


def scene_id(scene: Scene | dict[str, Any]) -> str:
    """A stable id: ``scene["scene_id"]`` or ``dataset:user_id:item_id:timestamp``."""
    sid = scene.get("scene_id")
    if sid is not None:
        return str(sid)
    return ":".join(str(scene.get(k, "")) for k in ("dataset", "user_id", "item_id", "timestamp"))


def scene_fingerprint(scene: Scene | dict[str, Any]) -> str:
    """A short hash of what a scene shows (text, exposure list, real item's position).

    Stage records carry it (``scene_fp``), so a record written about one version of a scene
    is refused for another version under the same id (a scene file re-sampled with other
    options keeps its ids).
    """
    shown = {k: scene.get(k) for k in ("text", "impression_list", "item_pos")}
    blob = json.dumps(shown, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def scene_text(scene: Scene | dict[str, Any]) -> tuple[str, str, list[str]]:
    """``(profile, history, action_list)`` of a scene, validated.

    Raises:
        DataError: ``text`` missing or of the wrong type, naming the scene.
    """
    if not isinstance(scene, dict):
        raise DataError(f"a scene must be a dict with a 'text' field, got {type(scene).__name__}")
    text = scene.get("text")
    sid = scene_id(scene)
    if not isinstance(text, dict):
        raise DataError(f"scene {sid!r}: field 'text' must be an object with profile/history/action_list, got {text!r:.80}")
    problems = []
    for key in ("profile", "history"):
        if not isinstance(text.get(key), str):
            problems.append(f"scene {sid!r}: text.{key}: expected a string, got {type(text.get(key)).__name__}")
    actions = text.get("action_list")
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        problems.append(f"scene {sid!r}: text.action_list: expected a list of strings, got {actions!r:.80}")
    if problems:
        raise DataError("malformed scene", problems)
    return text["profile"], text["history"], actions


def scene_target(scene: Scene | dict[str, Any], where: str | None = None) -> int:
    """Index of the real item in the scene's exposure list (``item_pos``, else found by id).

    Args:
        scene: a logged scene.
        where: where the scene came from for the error (e.g. ``file:line``); default: its id.

    Raises:
        DataError: no valid real-item position.
    """
    n = len(scene.get("text", {}).get("action_list", []) or [])
    pos = scene.get("item_pos")
    if pos is None and "impression_list" in scene and "item_id" in scene:
        try:
            pos = list(scene["impression_list"]).index(scene["item_id"])
        except ValueError:
            pos = None
    if not isinstance(pos, int) or not 0 <= pos < n:
        where = f"scene {scene_id(scene)!r}" if where is None else where
        raise DataError("scene without a valid real-item position",
                        [data_problem(where, None, "item_pos", f"expected an index into the {n} options, got {pos!r}")])
    return pos


def reorder_options(scene: Scene | dict[str, Any], order: Sequence[int], tag: str) -> Scene:
    """The same scene with its first ``len(order)`` options shown in ``order``.

    ``order[j]`` is the old position of the option now at position ``j``; options after them (the
    outside option) keep their place. ``impression_list``, ``text.action_list``, ``item_pos`` and
    ``rating_query.levels`` move together, profile and history stay (so a prefix-caching backend
    reuses the user prefix), and the id becomes ``"<scene_id>~<tag>"``. Map a distribution
    back with ``probs_original[order] = probs_reordered[:len(order)]``. Keys outside
    :class:`Scene` are not carried (see :func:`scene_fields`).

    Raises:
        DataError: ``order`` is not a permutation of ``0..len(order)-1`` within the list.
    """
    fields = scene_fields(scene)
    order = [int(i) for i in order]
    k = len(order)
    impressions, actions = list(fields["impression_list"]), list(fields["action_list"])
    if sorted(order) != list(range(k)) or k > len(actions) or k > len(impressions):
        raise DataError(
            f"scene {scene_id(scene)!r}: option order {order} must be a permutation of 0..{k - 1} "
            f"over at most the {min(len(actions), len(impressions))} listed items"
        )
    fields["impression_list"] = [impressions[i] for i in order] + impressions[k:]
    fields["action_list"] = [actions[i] for i in order] + actions[k:]
    fields["scene_id"] = f"{scene_id(scene)}~{tag}"
    pos = fields.get("item_pos")
    if pos is not None and pos < k:
        fields["item_pos"] = order.index(pos)
    query = fields.get("rating_query")
    if query is not None:
        levels = list(query["levels"])
        fields["rating_query"] = {**query, "levels": [levels[i] for i in order] + levels[k:]}
    return render_scene(**fields)


def reversed_scene(scene: Scene | dict[str, Any], k: int | None = None) -> Scene:
    """The scene with its first ``k`` options reversed (default: all of ``impression_list``;
    an outside option stays last); the id gets ``~reversed``."""
    n = len(scene.get("impression_list", [])) if k is None else k
    return reorder_options(scene, range(n - 1, -1, -1), "reversed")
