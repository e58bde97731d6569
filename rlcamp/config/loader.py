"""Build an ``RLConfig`` from defaults <- an optional YAML file <- dotted CLI overrides.

Values parse as YAML (as Hydra/OmegaConf do for verl), so ``trainer.logger='["console"]'`` is a
list and ``optim.lr=1e-6`` is a float. Every problem found is reported at once, each naming the
key, the value and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from rlcamp.config.schema import RLConfig


class ConfigError(ValueError):
    """One or more config problems; ``problems`` holds one message each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} config problem(s):\n{lines}")


# ------------------------------------------------------------------------------- YAML values
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-6`` as a float (YAML 1.1 wants ``1.0e-6``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """Parse one override value as YAML; text that is not valid YAML stays a string."""
    if text == "":
        return ""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def load_yaml(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path} is not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path} must hold a mapping of sections, got {type(data).__name__}"])
    return data


# ----------------------------------------------------------------------------- schema index
@dataclass(frozen=True)
class FieldInfo:
    key: str
    hint: Any
    doc: str
    default: Any
    follows: str | None


def _walk(cls: type, prefix: str, out: dict[str, FieldInfo], sections: set[str], instance: Any = None) -> None:
    """Index leaves; defaults come from ``instance`` (a section's own default object, e.g. critic.optim
    with lr=1e-5), else from the class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if instance is not None:
            default = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        if dataclasses.is_dataclass(hint):
            sections.add(key)
            _walk(hint, key + ".", out, sections, default)
            continue
        out[key] = FieldInfo(key, hint, f.metadata.get("doc", ""), default, f.metadata.get("follows"))


def schema_index(cls: type = RLConfig) -> tuple[dict[str, FieldInfo], set[str]]:
    """All leaf keys of the schema (dotted) and all section keys."""
    out: dict[str, FieldInfo] = {}
    sections: set[str] = set()
    _walk(cls, "", out, sections)
    return out, sections


FIELDS, SECTIONS = schema_index()


def _is_dict_field(info: FieldInfo) -> bool:
    return typing.get_origin(info.hint) is dict


def suggest(key: str, limit: int = 3) -> list[str]:
    """Closest valid keys to a mistyped one, only when they are close: a leaf a typo away in the same
    section or one above or below it (``actor.lrr`` -> ``actor.optim.lr``), or the whole key a typo
    away (``actor_rollout_ref.actor.ppo_mini_batchsize``)."""
    leaf = key.rsplit(".", 1)[-1]
    section = key.rsplit(".", 1)[0] if "." in key else ""
    scored = []
    for candidate in FIELDS:
        cand_section, _, cand_leaf = candidate.rpartition(".")
        whole = difflib.SequenceMatcher(None, key, candidate).ratio()
        leaf_ratio = difflib.SequenceMatcher(None, leaf, cand_leaf).ratio()
        related = (difflib.SequenceMatcher(None, section, cand_section).ratio() >= 0.9
                   or cand_section.startswith(section + ".") or section.startswith(cand_section + "."))
        if whole >= 0.85 or (related and leaf_ratio >= 0.8):
            scored.append((max(whole, leaf_ratio), candidate))
    scored.sort(key=lambda t: -t[0])
    return [c for _, c in scored[:limit]]


# verl's keys whose section rlcamp keeps under another name
ALIASES = {"ray_kwargs.ray_init.": "ray_init.", "ray_kwargs.timeline_json_file": "ray_init.timeline_json_file"}


def alias_of(key: str) -> str:
    for old, new in ALIASES.items():
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]
    return key


def verl_key(key: str) -> str | None:
    """The key of verl's config (at the commit in verl_keys.py) that ``key`` is or lies under, if any."""
    from rlcamp.config.verl_keys import VERL_KEYS

    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in VERL_KEYS:
            return head
    return None


# what to do about a verl key rlcamp does not run, by the first pattern found in the key
_VERL_HINTS = (
    ("._target_", "it names the Python class verl builds the section with; rlcamp has no such setting: remove it"),
    ("lora", "LoRA is not implemented in rlcamp (full fine-tuning only): remove it"),
    ("rollout.agent.", "agent-loop rollouts are not implemented (rlcamp generates single-turn responses): remove it"),
    ("multi_turn", "multi-turn rollouts are not implemented: remove it"),
    ("rollout.profiler.", "the rollout engine is not profiled; profile the actor (actor_rollout_ref.actor.profiler.*) "
                          "in the same steps instead"),
    ("router_replay", "MoE routing replay is not implemented: remove it"),
    ("routing_replay", "MoE routing replay is not implemented: remove it"),
    ("mtp", "multi-token prediction (MTP) layers are not trained by rlcamp: remove it"),
    ("transfer_queue", "verl's TransferQueue data path does not exist in rlcamp: batches move through the driver"),
    ("checkpoint_engine", "weights reach the rollout engine through rlcamp's own sync: remove it"),
    ("prometheus", "rollout-server metrics are not exported: remove it"),
    ("rollout.trace", "rollout tracing (weave / mlflow) is not implemented: remove it"),
    ("quantization", "quantised rollouts are not implemented: remove it"),
    ("tiled_mlp", "tiled MLP computation is not implemented: remove it"),
    ("optim.", "rlcamp's optimizer is AdamW (lr, weight_decay, betas, eps) with verl's LR schedules: warm-up "
               "(lr_warmup_steps[_ratio]), then lr_scheduler_type (warmup_style) with min_lr_ratio and num_cycles, or "
               "Megatron's lr_decay_style with lr_decay_steps, min_lr, lr_wsd_decay_steps, lr_wsd_decay_style: "
               "remove it"),
    ("fsdp_config.", "rlcamp's FSDP2 settings are listed by `rlcamp config keys fsdp_config`: remove it"),
)


def _verl_message(key: str, head: str) -> str:
    from rlcamp.config.verl_keys import VERL_COMMIT, VERL_KEYS

    what = next((hint for pattern, hint in _VERL_HINTS if pattern in key),
                f"remove it (verl's default is {VERL_KEYS[head]!r}); if you need it, please open an issue")
    return f"verl's `{key}` is not supported by rlcamp yet (verl {VERL_COMMIT}): {what}"


def _unknown_key(key: str) -> str:
    if key in SECTIONS:
        return f"'{key}' is a section, not a value; set one of its keys, e.g. '{key}.{_first_leaf(key)}=...'"
    head = verl_key(key)
    if head is not None:
        return _verl_message(key, head)
    hints = suggest(key)
    tail = f"; did you mean {' or '.join(repr(h) for h in hints)}?" if hints else "; see `rlcamp config keys` for all keys"
    return f"unknown key '{key}'{tail}"


def _first_leaf(section: str) -> str:
    return next(k for k in FIELDS if k.startswith(section + ".")).removeprefix(section + ".")


# ------------------------------------------------------------------------------- type checks
def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "mapping"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    """Return ``value`` as ``hint`` or raise _Mismatch. Lenient only where nothing is lost."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, item) for v in value]
        if item is str and isinstance(value, str):  # verl accepts a single path for a file list
            return [value]
        raise _Mismatch
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    raise TypeError(f"schema type {hint!r} is not handled by the config loader")


def check_value(key: str, value: Any) -> Any:
    """Coerce a user value for ``key`` or raise ConfigError naming key, value and expected type."""
    info = FIELDS[key]
    if isinstance(value, str) and "${" in value:
        raise ConfigError([f"{key}={value!r}: interpolations (${{...}}) are not supported; write the value itself"])
    try:
        return _coerce(value, info.hint)
    except _Mismatch:
        expected = _type_name(info.hint)
        kind = "one of" if typing.get_origin(info.hint) is Literal else "expected"
        raise ConfigError([f"{key}={value!r} ({type(value).__name__}) is not valid: {kind} {expected}"]) from None


# ------------------------------------------------------------------------------ assembling
def _flatten(tree: dict, prefix: str, out: dict[str, Any], problems: list[str], source: str) -> None:
    for name, value in tree.items():
        key = alias_of(f"{prefix}{name}")
        if key in SECTIONS:
            if isinstance(value, dict):
                _flatten(value, key + ".", out, problems, source)
            elif value is not None:
                problems.append(f"{source}: '{key}' is a section and needs a mapping, got {value!r}")
        elif key in FIELDS or _dict_field_of(key) is not None:
            out[key] = value
        else:
            problems.append(f"{source}: {_unknown_key(key)}")


def _dict_field_of(key: str) -> str | None:
    """The dict-typed field that ``key`` reaches into (``model.override_config.x`` -> ``model.override_config``)."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in FIELDS and _is_dict_field(FIELDS[head]):
            return head
    return None


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["a.b=1", "+c.d=x"]`` -> ``{"a.b": 1, "c.d": "x"}``; Hydra's ``+``/``++`` prefixes accepted."""
    out: dict[str, Any] = {}
    problems = []
    for arg in args:
        if "=" not in arg:
            if arg.startswith("~"):
                problems.append(f"'{arg}': deleting keys is not supported; set the key to a value instead")
            else:
                problems.append(f"'{arg}' is not a key=value override")
            continue
        key, text = arg.split("=", 1)
        key = alias_of(key.lstrip("+").strip())
        out[key] = parse_value(text)
    if problems:
        raise ConfigError(problems)
    return out


def _set_nested(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _instantiate(cls: type, tree: dict) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _instantiate(hints[f.name], tree.get(f.name, {}))
        elif f.name in tree:
            kwargs[f.name] = tree[f.name]
    return cls(**kwargs)


@dataclass(frozen=True)
class LoadedConfig:
    config: RLConfig
    user_keys: frozenset[str]  # keys the user set (file or CLI), after resolution


def build_config(overrides: list[str] | dict[str, Any] | None = None, yaml_file: str | Path | None = None,
                 tree: dict | None = None) -> LoadedConfig:
    """defaults <- yaml_file (or an already loaded ``tree``) <- overrides, type-checked, links
    resolved, frozen; raises ConfigError listing every problem."""
    loaded, problems = assemble(overrides, yaml_file, tree)
    if problems:
        raise ConfigError(problems)
    return loaded


def assemble(overrides: list[str] | dict[str, Any] | None = None, yaml_file: str | Path | None = None,
             tree: dict | None = None) -> tuple[LoadedConfig, list[str]]:
    """As build_config, but returns the problems beside a config built without the settings that had
    them, so the later checks can still run and every problem of a launch line comes out at once."""
    problems: list[str] = []
    user: dict[str, Any] = {}
    if yaml_file is not None:
        try:
            _flatten(load_yaml(yaml_file), "", user, problems, f"config file {yaml_file}")
        except ConfigError as exc:
            problems += exc.problems
    if tree is not None:
        _flatten(tree, "", user, problems, "config file")
    if overrides:
        try:
            flat = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides)
        except ConfigError as exc:
            problems += exc.problems
            flat = {}
        for key, value in flat.items():
            key = alias_of(key)
            if key in SECTIONS and isinstance(value, dict):
                _flatten(value, key + ".", user, problems, "override")
            elif key in FIELDS or _dict_field_of(key) is not None:
                user[key] = value
            else:
                problems.append(_unknown_key(key))

    values: dict[str, Any] = {k: copy.deepcopy(info.default) for k, info in FIELDS.items()}
    good: set[str] = set()
    for key, value in user.items():
        try:
            if key in FIELDS:
                values[key] = check_value(key, value)
            else:  # a sub-key of a free-form mapping such as model.override_config.attn_implementation
                head = _dict_field_of(key)
                values[head] = copy.deepcopy(values[head])
                _set_nested(values[head], key[len(head) + 1:], value)
            good.add(key)
        except ConfigError as exc:
            problems.extend(exc.problems)

    set_keys = {k if k in FIELDS else _dict_field_of(k) for k in good}

    def resolve(key: str, seen: tuple[str, ...] = ()) -> Any:
        info = FIELDS[key]
        if info.follows is None or key in set_keys:
            return values[key]
        if key in seen:
            raise ConfigError([f"config links form a cycle: {' -> '.join(seen + (key,))}"])
        return resolve(info.follows, seen + (key,))

    resolved = {k: resolve(k) for k in FIELDS}
    if resolved["trainer.default_local_dir"] is None:
        resolved["trainer.default_local_dir"] = (
            f"checkpoints/{resolved['trainer.project_name']}/{resolved['trainer.experiment_name']}")

    nested: dict = {}
    for key, value in resolved.items():
        _set_nested(nested, key, value)
    return LoadedConfig(_instantiate(RLConfig, nested), frozenset(set_keys)), problems


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def with_key(cfg: Any, key: str, value: Any) -> Any:
    """A copy of the frozen config ``cfg`` with ``key`` (dotted) set to ``value``."""
    head, _, rest = key.partition(".")
    return dataclasses.replace(cfg, **{head: with_key(getattr(cfg, head), rest, value) if rest else value})


def get_key(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node
