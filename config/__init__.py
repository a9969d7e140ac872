"""Settings: the schema, its defaults and the example environment file."""

from config.settings import (
                             DEVELOPMENT,
                             PRODUCTION,
                             VARIABLES,
                             Settings,
                             SettingsError,
                             is_placeholder,
                             load_settings,
)

__all__ = ["DEVELOPMENT", "PRODUCTION", "VARIABLES", "Settings", "SettingsError", "is_placeholder",
           "load_settings"]
