"""Configuration: pydantic models of the YAML file, its loader (with line numbers) and checks."""

from escalator.config.load import ConfigError, Problem, check_config, load_config
from escalator.config.models import Config

__all__ = ["Config", "ConfigError", "Problem", "check_config", "load_config"]
