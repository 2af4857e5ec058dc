"""``--conf`` values of the app (``main.py`` lists them), read the same way by ``serve.py`` before the server starts
and by the app itself."""
from __future__ import annotations

TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


def conf_flag(conf: dict, key: str, default: bool) -> bool:
    """``--conf key true|false`` (1/0, yes/no alike); anything else is a ValueError naming the key, so a typo never
    serves the other mode silently."""
    if key not in conf:
        return default
    v = str(conf[key]).lower()
    if v not in TRUE + FALSE:
        raise ValueError(f"--conf {key} must be true or false, got {conf[key]!r}")
    return v in TRUE
