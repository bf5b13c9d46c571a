"""The JSON Schema of config.json, generated from the validator's own table (``config.SCHEMA``), so an
editor completes and checks keys with the rules the bot applies.

    python config_schema.py            # rewrites config.schema.json

The schema says what each key may hold on its own (type, range, choices, pattern); the rules between
keys (the bounds' order, auto_price with price_range, the key pair) are the bot's to check on load. A
test keeps the committed file equal to what this writes, and the schema in agreement with the validator.
"""
from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

from gridbot.ops.config import REQUIRED, REQUIRED_SECTIONS, SCHEMA

# config.schema.json stands beside config.json at the top of the checkout.
PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "config.schema.json")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, tuple):
        return [_default(v) for v in value]
    if isinstance(value, dict):
        return {k: _default(v) for k, v in value.items()}
    return value


def json_schema() -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        props: dict[str, Any] = {}
        required = []
        for key, (check, default) in keys.items():
            prop = dict(check.schema)  # type: ignore[attr-defined]
            if default is REQUIRED:
                required.append(key)
            else:
                prop["default"] = _default(default)
            props[key] = prop
        sections[section] = {"type": "object", "additionalProperties": False, "properties": props}
        if required:
            sections[section]["required"] = required
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "grid_bot config.json",
        "description": "Every key, as the bot checks it; see README.md, Configuration.",
        "type": "object",
        "additionalProperties": False,
        "properties": {"$schema": {"type": "string"}, **sections},
        "required": list(REQUIRED_SECTIONS),
    }


def render() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    with open(PATH, "w") as fh:
        fh.write(render())
    print(f"wrote {PATH}")
