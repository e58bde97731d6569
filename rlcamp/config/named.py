"""``--config-path/--config-name``: verl's named configs and a user's own Hydra-style YAML.

verl's launch lines say ``--config-path=./config --config-name=ppo_megatron_trainer``, a path that
Hydra resolves next to verl's own ``main_ppo.py``. rlcamp answers the two names verl ships with its
built-in equivalents: ``ppo_trainer`` is rlcamp's defaults, ``ppo_megatron_trainer`` selects
``strategy=megatron`` for every role (and verl's other default that differs there). A YAML file of
that name in the given folder, when there is one, is the user's own and wins.

A user's YAML is read the way Hydra reads it, for the part of Hydra a config file uses: a
``defaults:`` list of other files in the same folder (``- base``), config groups (``- actor: dp``
loads ``actor/dp.yaml`` under ``actor``; ``- actor@actor_rollout_ref.actor: dp`` under that key),
the built-in names above, and ``_self_`` (last unless placed); then ``${a.b}`` interpolations,
``${oc.env:VAR}``, ``${oc.select:key,default}`` are resolved by OmegaConf against the whole config,
rlcamp's defaults included. The keys the files set then go through rlcamp's checks as CLI keys do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlcamp.config.loader import ConfigError, config_to_dict, load_yaml
from rlcamp.config.schema import RLConfig

NAMED: dict[str, dict[str, Any]] = {
    "ppo_trainer": {},
    "ppo_megatron_trainer": {
        "actor_rollout_ref": {"actor": {"strategy": "megatron"}, "ref": {"strategy": "megatron"},
                              "model": {"use_remove_padding": False}},
        "critic": {"strategy": "megatron"},
        "reward_model": {"strategy": "megatron"},
    },
}


def _under(package: str, tree: Any) -> dict:
    for part in reversed([p for p in package.split(".") if p and p not in ("_global_", "_here_")]):
        tree = {part: tree}
    return tree


def _entry(entry: Any, folder: Path, source: str, seen: tuple[Path, ...]) -> list[dict]:
    """The trees one ``defaults:`` entry contributes."""
    if isinstance(entry, str):
        path = folder / f"{entry}.yaml"
        if path.is_file():
            return _compose(path, seen)
        if entry in NAMED:
            return [NAMED[entry]]
        raise ConfigError([f"{source}: defaults entry '{entry}': no {path}, and it is not a built-in "
                           f"config ({', '.join(NAMED)})"])
    if isinstance(entry, dict) and len(entry) == 1:
        (group, option), = entry.items()
        group = group.removeprefix("override ").strip()
        group, _, package = group.partition("@")
        if option is None:
            return []
        path = folder / group / f"{option}.yaml"
        if not path.is_file():
            raise ConfigError([f"{source}: defaults entry '{group}: {option}' needs {path}, which does not exist"])
        return [_under(package or group.replace("/", "."), tree) for tree in _compose(path, seen)]
    raise ConfigError([f"{source}: defaults entry {entry!r} is not a file name, `group: option` or _self_"])


def _compose(path: Path, seen: tuple[Path, ...] = ()) -> list[dict]:
    """The layers of ``path`` in merge order: its defaults, with its own keys where ``_self_`` is."""
    path = path.resolve()
    if path in seen:
        raise ConfigError([f"config file {path}: its defaults include it again ({' -> '.join(map(str, seen))})"])
    tree = load_yaml(path)
    defaults = tree.pop("defaults", None) or []
    if not isinstance(defaults, list):
        raise ConfigError([f"config file {path}: 'defaults' must be a list"])
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    layers: list[dict] = []
    for entry in defaults:
        layers += [tree] if entry == "_self_" else _entry(entry, path.parent, f"config file {path}", seen + (path,))
    return layers


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for name, value in tree.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def _pick(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _put(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def load_named(config_path: str | None, config_name: str) -> tuple[dict, str]:
    """The settings a ``--config-path/--config-name`` pair makes, as a nested tree of the keys it
    sets (interpolations resolved), and a line saying where they came from."""
    name = config_name.removesuffix(".yaml").removesuffix(".yml")
    path = Path(config_path or ".").expanduser() / f"{name}.yaml"
    if not path.is_file():
        if name in NAMED:
            return NAMED[name], f"--config-name={name}: rlcamp's built-in equivalent of verl's {name}.yaml"
        raise ConfigError([f"--config-name={config_name}: {path} does not exist, and it is not one of the built-in "
                           f"configs ({', '.join(NAMED)})"])
    return load_file(path), f"--config-name={name}: {path}"


def load_file(path: Path) -> dict:
    """The settings of one Hydra-style YAML file (its defaults composed, interpolations resolved)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    layers = _compose(path)
    user = OmegaConf.merge(*[OmegaConf.create(layer) for layer in layers]) if layers else OmegaConf.create({})
    whole = OmegaConf.merge(OmegaConf.create(config_to_dict(RLConfig())), user)
    try:
        resolved = OmegaConf.to_container(whole, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError([f"config file {path}: an interpolation does not resolve: {exc}".splitlines()[0]]) from None
    out: dict = {}
    for key in _leaves(OmegaConf.to_container(user, resolve=False)):
        _put(out, key, _pick(resolved, key))
    return out
