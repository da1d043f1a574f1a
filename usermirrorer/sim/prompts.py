"""Prompts that turn a scene into chat messages for the simulator (DESIGN.md §4).

A scene becomes a :class:`Prompt`: a system message (which depends on the mode), a user
message holding the profile, the history and the lettered exposure list, and an assistant
prefix the model continues:

- ``direct`` mode: prefix ``Behavior: [`` — the next token is the chosen option's letter.
- ``decision`` mode: prefix ``Thought:\\nStimulus:`` — the model writes a first-person thought in
  the three Engel–Kollat–Blackwell stages and stops at ``Behavior: [``; the thought is then
  scored like a direct prompt whose prefix is ``<thought>\\nBehavior: [``.

Every text is a field of the frozen :class:`PromptSet`; :func:`load_prompts` overrides any of
them from a YAML or JSON file, so a released checkpoint can be run with the exact prompt it was
trained on.

Override file format (YAML or JSON, chosen by the extension ``.yaml``/``.yml``/``.json``): one
mapping whose keys are :class:`PromptSet` field names and whose values are strings. Keys left
out keep their defaults. Example::

    direct_system: |
      You are a movie watcher. Answer with the letter of the movie you watch next.
    user_template: "Profile: {profile}\\nHistory: {history}\\nOptions:\\n{exposure_list}"

``user_template`` must contain the placeholders ``{profile}``, ``{history}`` and
``{exposure_list}``; ``option_template`` must contain ``{letter}`` and ``{item}``.

:func:`scene_id` and :func:`scene_text` live with the scene type in
:mod:`usermirrorer.data_pipeline.scene` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usermirrorer.data_pipeline.scene import scene_id, scene_text
from usermirrorer.errors import ConfigError, DataError

__all__ = [
    "LETTERS",
    "MAX_OPTIONS",
    "MODES",
    "LETTER_MODES",
    "PromptSet",
    "Prompt",
    "DEFAULT_PROMPTS",
    "load_prompts",
    "option_letters",
    "build_messages",
    "build_prompt",
    "build_likelihood_prompt",
    "clean_thought",
    "scene_id",
    "scene_text",
]

LETTERS = string.ascii_uppercase
MAX_OPTIONS = len(LETTERS)
MODES = ("direct", "decision", "likelihood")
# Modes that read a letter after the prompt (likelihood mode scores the option texts instead).
LETTER_MODES = ("direct", "decision")

_DECISION_SYSTEM = """\
You are a user simulator for a recommender system. You become the person described in the \
user profile, with the tastes and habits their history shows, and you react to an exposure \
list the platform has just shown you. Each option in the list carries a letter.

Reason in the first person, as that person, through the three stages a consumer goes through \
before acting (the Engel-Kollat-Blackwell decision model):

1. Stimulus - what makes you look at the list at this moment. Name one to three Stimulus \
Factors. They can be internal states (boredom, curiosity, your mood, a need to relax) or \
external cues (the time of day, what people around you talk about, advertising or a banner).
2. Knowledge - what you notice and already know about the options. Name two to four Knowledge \
Factors, taken from the product's own attributes (quality, novelty, how relevant it is to \
you), from how it is presented (rating score, popularity, social proof) and from your prior \
knowledge (past experience with similar items).
3. Evaluation - how you weigh the options against each other and settle. Name exactly one \
Evaluation Style: logical, intuitive, impulsive or habitual.

Write your answer in this shape:
Thought:
Stimulus: <your reasoning> Stimulus Factors: <factors>
Knowledge: <your reasoning> Knowledge Factors: <factors>
Evaluation: <your reasoning> Evaluation Style: <style>
Behavior: [X]

X is the letter of the single option you pick. The Behavior line comes once, at the very end, \
with nothing after it."""

_DIRECT_SYSTEM = """\
You are a user simulator for a recommender system. You become the person described in the \
user profile, with the tastes and habits their history shows, and you react to an exposure \
list the platform has just shown you. Each option in the list carries a letter.

Reply with the option this person picks, as a single line `Behavior: [X]` where X is the \
option's letter. Write nothing else."""

_LIKELIHOOD_SYSTEM = """\
You are a user simulator for a recommender system. You become the person described in the \
user profile, with the tastes and habits their history shows, and you name the next item this \
person chooses, exactly as it is listed."""


@dataclass(frozen=True)
class PromptSet:
    """Every text the simulator sends to the model.

    Attributes:
        decision_system: system message of decision mode (thought, then behavior).
        direct_system: system message of direct mode (behavior only).
        user_template: user message; placeholders ``{profile}``, ``{history}``,
            ``{exposure_list}``.
        option_template: one exposure line; placeholders ``{letter}``, ``{item}``.
        option_separator: joins the exposure lines.
        direct_prefix: assistant prefix in direct mode; the next token is the letter.
        decision_prefix: assistant prefix that starts a thought in decision mode.
        behavior_marker: where a thought ends and the letter follows; generation stops at it.
        thought_separator: put between a thought and ``behavior_marker`` when scoring it.
        likelihood_system: system message of likelihood mode (the option texts are scored as
            the assistant's answer; no letters).
        likelihood_user_template: user message of likelihood mode; placeholders ``{profile}``,
            ``{history}``.
        likelihood_prefix: assistant prefix the option text follows in likelihood mode.
        neutral_profile, neutral_history: the profile and history of the *neutral* context that
            gives each option text its prior (PMI scoring divides it out).
    """

    decision_system: str = _DECISION_SYSTEM
    direct_system: str = _DIRECT_SYSTEM
    user_template: str = "# User Profile\n{profile}\n\n## History\n{history}\n\n# Exposure List\n{exposure_list}"
    option_template: str = "[{letter}] {item}"
    option_separator: str = "\n"
    direct_prefix: str = "Behavior: ["
    decision_prefix: str = "Thought:\nStimulus:"
    behavior_marker: str = "Behavior: ["
    thought_separator: str = "\n"
    likelihood_system: str = _LIKELIHOOD_SYSTEM
    likelihood_user_template: str = "# User Profile\n{profile}\n\n## History\n{history}\n\n# Next\nThe next item this person chooses:"
    likelihood_prefix: str = ""
    neutral_profile: str = "(nothing is known about this person)"
    neutral_history: str = "(no history)"

    def __post_init__(self) -> None:
        for name, needed in (
            ("user_template", ("profile", "history", "exposure_list")),
            ("option_template", ("letter", "item")),
            ("likelihood_user_template", ("profile", "history")),
        ):
            text = getattr(self, name)
            try:
                found = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as exc:
                raise ConfigError(f"prompt field {name!r} is not a valid format string ({exc}): {text!r}") from None
            missing = [p for p in needed if p not in found]
            unknown = sorted(found - set(needed))
            if missing or unknown:
                raise ConfigError(
                    f"prompt field {name!r} must use the placeholders {['{' + p + '}' for p in needed]}; "
                    f"missing {missing}, unknown {unknown} in {text!r} (write literal braces as '{{{{' and '}}}}')"
                )
        if not self.behavior_marker.endswith(self.direct_prefix[-1:]):
            raise ConfigError(
                f"behavior_marker {self.behavior_marker!r} and direct_prefix {self.direct_prefix!r} must end with the "
                "same character (the one the option letter follows)"
            )

    def system(self, mode: str) -> str:
        """The system message of ``mode`` (``"direct"``, ``"decision"`` or ``"likelihood"``)."""
        return {"direct": self.direct_system, "decision": self.decision_system,
                "likelihood": self.likelihood_system}[_check_mode(mode)]

    def with_overrides(self, **fields: str) -> PromptSet:
        """A copy with some fields replaced (unknown names raise :class:`ConfigError`)."""
        _check_fields(fields, "with_overrides")
        return dataclasses.replace(self, **fields)

    def __repr__(self) -> str:
        changed = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        return f"PromptSet(overridden={changed})"


DEFAULT_PROMPTS = PromptSet()


@dataclass(frozen=True)
class Prompt:
    """One model request: chat messages plus the assistant text the model continues.

    Attributes:
        messages: ``[{"role": "system", ...}, {"role": "user", ...}]``.
        assistant_prefix: text already "said" by the assistant; the model continues after it.
        scene_id: the scene it came from, for error messages (may be ``None``).
        n_options: number of lettered options in the user message.
    """

    messages: tuple[dict[str, str], ...]
    assistant_prefix: str
    scene_id: str | None = None
    n_options: int = 0
    letters: tuple[str, ...] = field(default=())

    def with_prefix(self, assistant_prefix: str) -> Prompt:
        """The same request continuing a different assistant prefix."""
        return dataclasses.replace(self, assistant_prefix=assistant_prefix)

    def __repr__(self) -> str:
        return (
            f"Prompt(scene_id={self.scene_id!r}, n_options={self.n_options}, "
            f"user_chars={len(self.messages[-1]['content'])}, assistant_prefix={self.assistant_prefix[-40:]!r})"
        )


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not known; expected one of {list(MODES)}")
    return mode


def _check_fields(fields: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(PromptSet)}
    unknown = sorted(str(k) for k in set(fields) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown prompt field(s) {unknown}; known fields are {sorted(names)}")
    bad = {k: type(v).__name__ for k, v in fields.items() if not isinstance(v, str)}
    if bad:
        raise ConfigError(f"{where}: prompt fields must be strings, got {bad}")


def load_prompts(path: str | os.PathLike, base: PromptSet = DEFAULT_PROMPTS) -> PromptSet:
    """Read prompt overrides from a YAML or JSON file (format in the module docstring).

    Args:
        path: ``.yaml``, ``.yml`` or ``.json`` file with a mapping of field name -> text.
        base: prompts whose fields are kept where the file is silent.

    Raises:
        ConfigError: missing file, unknown extension, not a mapping, unknown field, a
            template missing its placeholders.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"prompt file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"prompt file {str(path)!r}: expected a .yaml, .yml or .json file, got {suffix!r}")
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            try:
                data = yaml.safe_load(text)  # safe: no !!python/object tags
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
                what = " ".join(str(getattr(exc, "problem", None) or exc).split())
                raise ConfigError(f"prompt file {where}: not valid YAML ({what}); expected field: text lines") from None
    except (ValueError, ImportError, RecursionError) as exc:  # bad JSON, bad UTF-8, no yaml, deep nesting
        if isinstance(exc, ConfigError):
            raise
        what = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"prompt file {str(path)!r} could not be parsed: {what}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"prompt file {str(path)!r}: expected a mapping of field -> text, got {type(data).__name__}")
    _check_fields(data, f"prompt file {str(path)!r}")
    return dataclasses.replace(base, **data)


def option_letters(n_options: int, where: str = "") -> tuple[str, ...]:
    """Letters ``A``.. for ``n_options`` options; more than 26 or fewer than 1 is an error."""
    if n_options > MAX_OPTIONS:
        raise ConfigError(
            f"{where + ': ' if where else ''}{n_options} options in the exposure list, but options are lettered "
            f"A-Z so at most {MAX_OPTIONS} are possible; use a smaller exposure size"
        )
    if n_options < 1:
        raise DataError(f"{where + ': ' if where else ''}the exposure list (text.action_list) is empty; expected 1-26 items")
    return tuple(LETTERS[:n_options])


def build_messages(
    scene: dict[str, Any], mode: str = "direct", prompts: PromptSet = DEFAULT_PROMPTS
) -> list[dict[str, str]]:
    """System and user messages for one scene (no assistant turn).

    Args:
        scene: a scene record with ``text.profile``, ``text.history``, ``text.action_list``.
        mode: ``"direct"`` or ``"decision"`` (selects the system message).
        prompts: the prompt texts.
    """
    profile, history, actions = scene_text(scene)
    if _check_mode(mode) == "likelihood":
        return _likelihood_messages(profile, history, prompts)
    letters = option_letters(len(actions), f"scene {scene_id(scene)!r}")
    exposure = prompts.option_separator.join(
        prompts.option_template.format(letter=letter, item=item) for letter, item in zip(letters, actions)
    )
    user = prompts.user_template.format(profile=profile, history=history, exposure_list=exposure)
    return [{"role": "system", "content": prompts.system(mode)}, {"role": "user", "content": user}]


def build_prompt(
    scene: dict[str, Any],
    mode: str = "direct",
    prompts: PromptSet = DEFAULT_PROMPTS,
    thought: str | None = None,
) -> Prompt:
    """The full request for one scene.

    ``direct`` mode continues ``direct_prefix``; ``decision`` mode without a thought continues
    ``decision_prefix`` (for generating a thought); with a thought, it continues
    ``<thought><thought_separator><behavior_marker>`` (for scoring the thought).
    """
    if mode == "likelihood":
        return build_likelihood_prompt(scene, prompts)
    messages = tuple(build_messages(scene, mode, prompts))
    n = len(scene["text"]["action_list"])
    if mode == "direct":
        prefix = prompts.direct_prefix
    elif thought is None:
        prefix = prompts.decision_prefix
    else:
        prefix = clean_thought(thought, prompts) + prompts.thought_separator + prompts.behavior_marker
    return Prompt(messages, prefix, scene_id(scene), n, tuple(LETTERS[:n]))


def build_likelihood_prompt(scene: dict[str, Any] | None, prompts: PromptSet = DEFAULT_PROMPTS) -> Prompt:
    """The likelihood-mode request of a scene: profile and history, then the assistant's answer.

    The option texts are scored as continuations of it (no letters, so no letter bias).
    ``scene=None`` gives the *neutral* request (``neutral_profile`` / ``neutral_history``), the
    same for every scene, under which an option text has its prior likelihood.
    """
    if scene is None:
        profile, history, sid, n = prompts.neutral_profile, prompts.neutral_history, "neutral", 0
    else:
        profile, history, actions = scene_text(scene)
        option_letters(len(actions), f"scene {scene_id(scene)!r}")  # same 1..26 bound as letter modes
        sid, n = scene_id(scene), len(actions)
    return Prompt(tuple(_likelihood_messages(profile, history, prompts)), prompts.likelihood_prefix, sid, n, ())


def _likelihood_messages(profile: str, history: str, prompts: PromptSet) -> list[dict[str, str]]:
    user = prompts.likelihood_user_template.format(profile=profile, history=history)
    return [{"role": "system", "content": prompts.likelihood_system}, {"role": "user", "content": user}]


def clean_thought(thought: str, prompts: PromptSet = DEFAULT_PROMPTS) -> str:
    """A thought cut before any ``behavior_marker`` it contains, trailing space removed."""
    cut = thought.find(prompts.behavior_marker)
    if cut >= 0:
        thought = thought[:cut]
    return thought.rstrip()

