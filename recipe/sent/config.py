"""The one definition of every ``entropy_rl.*`` knob: name, type, allowed values, default, doc.

The library's dataclasses are the schema (``entropy_rl.config``: :class:`SentKLConfig`,
:class:`AERConfig`, :class:`CurriculumConfig`,
:class:`ScoringConfig` below), plus the few switches that only the recipe has (``enable``,
``selection``, ``adaptive``). From them this module

- registers the ``entropy_rl`` defaults in Hydra's ConfigStore (``entropy_rl_schema``, the
  first entry of ``conf/entropy_rl.yaml``'s defaults): the YAML does not repeat them;
- checks the user's overrides before Hydra composes (an unknown key gets a did-you-mean, not
  Hydra's advice to add it with ``+``), and the composed section (types, allowed values, the
  dataclasses' own range checks), naming the key;
- writes ``--help`` (:func:`help_text`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from entropy_rl.config import AERConfig, CurriculumConfig, SentKLConfig


@dataclass(frozen=True)
class ScoringConfig:
    """The semantic-entropy scoring pass that orders the curriculum (recipe.sent.scoring).

    Attributes:
        enable: score the training set before training (default: whenever the curriculum is on).
        n_samples: M, answers sampled per prompt to estimate H_SE.
        temperature: sampling temperature of the scoring pass.
        top_p: nucleus sampling of the scoring pass.
        max_response_length: token budget of a scoring answer (default: data.max_response_length).
        estimator: ``likelihood`` (cluster probabilities from the rollout's sequence log-probs,
            counts where none are returned) or ``count`` (cluster sizes only).
        seed: sampling seed of the scoring pass.
        cache_dir: scores are cached here, keyed by dataset, model and these settings.
        output_file: scored dataset written by ``python -m recipe.sent.score`` (default: in cache_dir).
    """

    enable: bool = False
    n_samples: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_response_length: int = 2048
    estimator: Literal["likelihood", "count"] = "likelihood"
    seed: int = 1
    cache_dir: str = "~/.cache/entropy_rl/scores"
    output_file: str | None = None

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ValueError(f"n_samples (M) must be >= 2 to estimate an entropy, got {self.n_samples}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_response_length < 1:
            raise ValueError(f"max_response_length must be >= 1, got {self.max_response_length}")


@dataclass(frozen=True)
class Knob:
    """One ``entropy_rl.<section>.<name>`` setting."""

    section: str  # "" for the top level
    name: str
    type: Any
    default: Any  # what the composed config holds: a value or an interpolation string
    doc: str

    @property
    def key(self) -> str:
        return f"entropy_rl.{self.section}.{self.name}" if self.section else f"entropy_rl.{self.name}"

    @property
    def choices(self) -> tuple | None:
        t = _strip_optional(self.type)
        return get_args(t) if get_origin(t) is Literal else None


# Knobs of the recipe only (the library's dataclasses do not have them): (type, default, doc).
_TOP = {
    "method": (str, "grpo", "the method preset's name (set by method=...); names the experiment"),
    "backend": (
        Literal["gpu", "cpu"],
        "gpu",
        "gpu: veRL on CUDA; cpu: the whole loop on the CPU backend (set by backend=...)",
    ),
}
_RECIPE_ONLY = {
    "token_kl": {
        "enable": (bool, False, "turn on SENT's token-level selective KL-Cov"),
        "selection": (
            Literal["batch", "micro"],
            "batch",
            "batch: one token selection over the whole training batch (driver); micro: per "
            "micro-batch on current-policy statistics (the release)",
        ),
    },
    "aer": {"enable": (bool, False, "turn on AER's adaptive entropy bonus")},
    "curriculum": {
        "enable": (bool, False, "turn on SENT's low → high semantic-entropy curriculum"),
        "adaptive": (bool, False, "refresh H_SE and pass rates from every step's rollouts (EMA)"),
        "adaptive_ema": (float, 0.5, "EMA weight of the old value in the adaptive refresh"),
    },
}
_SECTIONS = {"token_kl": SentKLConfig, "aer": AERConfig, "curriculum": CurriculumConfig, "scoring": ScoringConfig}
# Fields the recipe fills itself (curriculum.seed is data.seed), not knobs.
_DERIVED = {("curriculum", "seed")}
# Where the recipe's default is not the library's, and why.
_RECIPE_DEFAULTS = {
    # the released scripts pass over every stage 5 times; the library's default is one pass
    ("curriculum", "stage_epochs"): 5,
    # follow other settings of the same run unless set
    ("scoring", "enable"): "${entropy_rl.curriculum.enable}",
    ("scoring", "max_response_length"): "${data.max_response_length}",
    ("scoring", "cache_dir"): "${oc.env:HOME}/.cache/entropy_rl/scores",
}


def _strip_optional(t: Any) -> Any:
    if get_origin(t) in (Union, types.UnionType):
        args = [a for a in get_args(t) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return t


def _optional(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType) and type(None) in get_args(t)


def _docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` entries of a dataclass docstring, one line each."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    part = doc.split("Attributes:", 1)
    if len(part) < 2:
        return out
    name = None
    for line in part[1].splitlines():
        m = re.match(r"^\s{8}([a-z_, ]+):\s*(.*)$", line)
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            for n in names:
                out[n] = m.group(2).strip()
            name = names
        elif name and line.strip() and line.startswith(" " * 12):
            for n in name:
                out[n] += " " + line.strip()
        elif not line.strip():
            name = None
    return {k: v.replace("``", "") for k, v in out.items()}


def knobs() -> list[Knob]:
    """Every ``entropy_rl.*`` knob, in the order ``--help`` shows them."""
    out = [Knob("", n, t, d, doc) for n, (t, d, doc) in _TOP.items()]
    for section, cls in _SECTIONS.items():
        for n, (t, d, doc) in _RECIPE_ONLY.get(section, {}).items():
            out.append(Knob(section, n, t, d, doc))
        hints = typing.get_type_hints(cls)
        docs = _docs(cls)
        for f in dataclasses.fields(cls):
            if (section, f.name) in _DERIVED:
                continue
            default = _RECIPE_DEFAULTS.get((section, f.name), f.default)
            out.append(Knob(section, f.name, hints[f.name], default, docs.get(f.name, "")))
    return out


def defaults() -> dict[str, Any]:
    """The ``entropy_rl`` section with every knob at its default (the ConfigStore node)."""
    tree: dict[str, Any] = {}
    for k in knobs():
        (tree.setdefault(k.section, {}) if k.section else tree)[k.name] = k.default
    return tree


def verl_config_searchpath() -> str:
    """Hydra search path of veRL's ``trainer/config`` directory, found without importing veRL
    (``pkg://`` would import the whole package just to read its YAML files)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("verl")
    for root in (spec.submodule_search_locations or []) if spec else []:
        d = os.path.join(root, "trainer", "config")
        if os.path.isfile(os.path.join(d, "ppo_trainer.yaml")):
            return f"file://{d}"
    return "pkg://verl.trainer.config"


def register() -> None:
    """Put :func:`defaults` into Hydra's ConfigStore as ``entropy_rl_schema``, and the
    ``entropy_rl_verl_config`` resolver the YAML's search path uses."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="entropy_rl_schema", node={"entropy_rl": defaults()})
    if not OmegaConf.has_resolver("entropy_rl_verl_config"):
        OmegaConf.register_new_resolver("entropy_rl_verl_config", verl_config_searchpath)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse help that shows each option's default, except where there is none to show
    (None, an off flag, an empty list) or the help text already says it."""

    def _get_help_string(self, action):
        d = action.default
        if d is None or d is False or d == [] or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ConfigError(ValueError):
    """One or more ``entropy_rl.*`` settings are wrong; the message names each key and the fix."""


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_name(t: Any) -> str:
    base = _strip_optional(t)
    if get_origin(base) is Literal:
        name = " | ".join(map(str, get_args(base)))
    else:
        name = getattr(base, "__name__", str(base))
    return name + (" or null" if _optional(t) else "")


def _type_problem(k: Knob, v: Any) -> str | None:
    if isinstance(v, str) and v.startswith("${"):
        return None  # an interpolation: checked once resolved
    if v is None:
        return None if _optional(k.type) else f"must be set ({_type_name(k.type)}), got null"
    base = _strip_optional(k.type)
    if k.choices is not None:
        if v not in k.choices:
            hint = _did_you_mean(str(v), [str(c) for c in k.choices])
            return f"must be one of {', '.join(map(str, k.choices))}, got {v!r}{hint}"
        return None
    if base is bool and not isinstance(v, bool):
        return f"must be true or false, got {v!r}"
    if base is int and (isinstance(v, bool) or not isinstance(v, int)):
        return f"must be an integer, got {v!r}"
    if base is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
        return f"must be a number, got {v!r}"
    if base is str and not isinstance(v, str):
        return f"must be a string, got {v!r}"
    return None


def problems(section_cfg: Any) -> list[str]:
    """Every wrong ``entropy_rl.*`` setting of a composed config's ``entropy_rl`` node (a
    DictConfig or a plain mapping), each naming the key, what is allowed and the fix."""
    from omegaconf import DictConfig, OmegaConf

    given_all = (
        OmegaConf.to_container(section_cfg, resolve=True) if isinstance(section_cfg, DictConfig) else dict(section_cfg)
    )
    by_section: dict[str, dict[str, Knob]] = {}
    for k in knobs():
        by_section.setdefault(k.section, {})[k.name] = k
    out: list[str] = []
    top = by_section[""]
    for name, value in given_all.items():
        if name in _SECTIONS:
            continue
        if name not in top:
            out.append(
                f"entropy_rl.{name}: no such knob{_did_you_mean(name, list(top) + list(_SECTIONS))} "
                "(python -m recipe.sent.main --help lists them)"
            )
        elif (why := _type_problem(top[name], value)) is not None:
            out.append(f"entropy_rl.{name} {why}")
    for section, cls in _SECTIONS.items():
        given = given_all.get(section) or {}
        if not isinstance(given, dict):
            out.append(f"entropy_rl.{section} must be a mapping of knobs, got {given!r}")
            continue
        known = by_section[section]
        bad = False
        for name, value in given.items():
            if name not in known:
                out.append(
                    f"entropy_rl.{section}.{name}: no such knob{_did_you_mean(name, list(known))} "
                    f"(entropy_rl.{section} has: {', '.join(known)})"
                )
                bad = True
            elif (why := _type_problem(known[name], value)) is not None:
                out.append(f"{known[name].key} {why}")
                bad = True
        if bad:
            continue
        # the dataclass's own range checks, with the key in front
        fields_ = {f.name for f in dataclasses.fields(cls)}
        try:
            cls(**{k: v for k, v in given.items() if k in fields_})
        except (TypeError, ValueError) as e:
            msg = str(e)
            for prefix in (f"{cls.__name__}.", f"{cls.__name__}: ", f"{section}.", "curriculum."):
                msg = msg.replace(prefix, "")
            out.append(f"entropy_rl.{section}: {msg}")
    return out


def validate(section_cfg: Any) -> None:
    """Raise :class:`ConfigError` listing :func:`problems`, if any."""
    found = problems(section_cfg)
    if found:
        raise ConfigError("invalid entropy_rl settings:\n  - " + "\n  - ".join(found))


def combination_problems(config: Any) -> list[str]:
    """Settings of a composed run config that are each valid but together would silently do
    something else (our loss replacing veRL's, AER replacing the fixed bonus), naming the keys."""
    from omegaconf import OmegaConf

    def get(key: str, default: Any = None) -> Any:
        v = OmegaConf.select(config, key, default=default)
        return default if v is None else v

    out = []
    if get("trainer.use_v1", True):
        out.append("entropy-rl builds on veRL's legacy driver: set trainer.use_v1=false")
    ours = bool(get("entropy_rl.token_kl.enable", False)) or bool(get("entropy_rl.aer.enable", False))
    mode = get("actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla")
    if ours and mode != "vanilla":
        out.append(
            f"entropy_rl.token_kl / entropy_rl.aer replace the policy loss, but "
            f"actor_rollout_ref.actor.policy_loss.loss_mode={mode!r}: use 'vanilla' (or pick the {mode} preset alone)"
        )
    if ours and not get("actor_rollout_ref.actor.calculate_entropy", False):
        out.append(
            "entropy_rl.token_kl / aer need the token entropy: set actor_rollout_ref.actor.calculate_entropy=true"
        )
    if get("entropy_rl.aer.enable", False) and get("actor_rollout_ref.actor.entropy_coeff", 0) != 0:
        out.append("entropy_rl.aer replaces the fixed bonus: set actor_rollout_ref.actor.entropy_coeff=0")
    return out


def config_problems(config: Any) -> list[str]:
    """Every wrong ``entropy_rl.*`` knob (:func:`problems`) of a composed run config, else
    every conflicting combination (:func:`combination_problems`), which reads valid knobs."""
    return problems(config.entropy_rl) or combination_problems(config)


def check_config(config: Any) -> None:
    """Raise :class:`ConfigError` listing :func:`config_problems`, if any."""
    found = config_problems(config)
    if found:
        raise ConfigError("invalid entropy_rl settings:\n  - " + "\n  - ".join(found))


def override_problems(overrides: list[str]) -> list[str]:
    """Command-line overrides of ``entropy_rl.*`` keys that no knob has, before Hydra composes
    (Hydra would say 'not in struct ... use +key'; for a typo that is the wrong advice)."""
    by_key = {k.key: k for k in knobs()}
    sections = {f"entropy_rl.{s}" for s in _SECTIONS}
    out = []
    for o in overrides:
        if "=" not in o:
            continue
        key = o.split("=", 1)[0].lstrip("+~")
        if not key.startswith("entropy_rl.") or key in by_key or key in sections:
            continue
        parent = key.rsplit(".", 1)[0]
        options = [k for k in by_key if k.rsplit(".", 1)[0] == parent] or list(by_key)
        close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " (python -m recipe.sent.main --help lists every knob)"
        out.append(f"{o!r}: {key} is not an entropy-rl knob{hint}")
    return out


def help_text(conf_dir: str) -> str:
    """``python -m recipe.sent.main --help``: what the recipe is, its presets, every knob."""
    import os

    def presets(group: str) -> list[str]:
        rows = []
        for f in sorted(os.listdir(os.path.join(conf_dir, group))):
            if not f.endswith(".yaml"):
                continue
            first = ""
            for line in open(os.path.join(conf_dir, group, f), encoding="utf-8"):
                line = line.strip()
                if line.startswith("#") and not line.startswith("# @package"):
                    first = line.lstrip("# ").strip()
                    break
            rows.append(f"  {f[:-5]:<24} {first}")
        return rows

    lines = [
        "entropy-rl: RL with verifiable rewards on veRL 0.9.1 (legacy driver) that keeps the policy's",
        "entropy from collapsing: SENT (semantic-entropy curriculum + token-level selective KL-Cov), AER",
        "(adaptive entropy bonus) and the baselines, each one method= override.",
        "",
        "usage: python -m recipe.sent.main [method=<preset>] [model=<preset>] [backend=gpu|cpu] [key=value ...]",
        "       bash launch/train.sh [same overrides]       (sets up .venv and the data first)",
        "",
        "Any veRL key works as in veRL (actor_rollout_ref.*, data.*, trainer.*, algorithm.*).",
        "The full composed config: python -m recipe.sent.main [overrides] --cfg job",
        "",
        "method= (conf/method/)",
        *presets("method"),
        "",
        "model= (conf/model/)",
        *presets("model"),
        "",
        "backend= (conf/backend/)",
        *presets("backend"),
        "",
        "entropy_rl knobs (key: type = default — doc)",
    ]
    section = None
    for k in knobs():
        if k.section != section:
            section = k.section
            if section:
                lines.append(f"  [{section}]")
        default = "null" if k.default is None else k.default
        lines.append(f"  {k.key}: {_type_name(k.type)} = {default}")
        if k.doc:
            lines.append(f"      {k.doc}")
    return "\n".join(lines) + "\n"
