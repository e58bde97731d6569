"""One launch line = one config: typed schema, loader (defaults <- YAML <- CLI), validation, derived values."""

from rlcamp.config.loader import (
           ConfigError,
           LoadedConfig,
           build_config,
           config_to_dict,
           config_to_yaml,
           get_key,
)
from rlcamp.config.schema import RLConfig
from rlcamp.config.validate import Derived, ResolvedConfig, resolve

__all__ = ["ConfigError", "Derived", "LoadedConfig", "RLConfig", "ResolvedConfig", "build_config", "config_to_dict",
           "config_to_yaml", "get_key", "resolve"]
