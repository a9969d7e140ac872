"""Settings: the schema, its defaults, the example environment file, and their checks."""

from config.checks import (
                           Problem,
                           SettingsCheck,
                           check_settings,
                           load_settings,
                           readiness_problems,
                           validate,
                           value_problems,
)
from config.settings import (
                             DEVELOPMENT,
                             PRODUCTION,
                             VARIABLES,
                             Settings,
                             SettingsError,
                             is_placeholder,
)

__all__ = ["DEVELOPMENT", "PRODUCTION", "VARIABLES", "Problem", "Settings", "SettingsCheck", "SettingsError",
           "check_settings", "is_placeholder", "load_settings", "readiness_problems", "validate", "value_problems"]
