"""Settings: the typed, validated schema and the shipped configuration files."""

from config.loader import DEFAULT_CONFIG, ENV_PREFIX, ConfigError, load_settings
from config.schema import Settings

__all__ = ["DEFAULT_CONFIG", "ENV_PREFIX", "ConfigError", "Settings", "load_settings"]
