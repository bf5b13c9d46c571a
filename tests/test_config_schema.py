"""config.schema.json: generated from the validator's table, committed in sync, and in agreement with the
validator on every key (a value the bot accepts, the schema accepts; a wrong type, a value outside a
range or a choice, both refuse)."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

import gridbot.ops.config_schema as config_schema
from gridbot.ops.config import REQUIRED, SCHEMA, ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DOC = config_schema.json_schema()


def test_the_committed_schema_is_the_generated_one():
    assert (ROOT / "config.schema.json").read_text() == config_schema.render(), \
        "config.schema.json is stale: run python -m gridbot.ops.config_schema"
    Draft202012Validator.check_schema(SCHEMA_DOC)


@pytest.mark.parametrize("path", ["config.json", "docs/example_config.json"])
def test_the_shipped_configs_follow_the_schema(path):
    data = json.loads((ROOT / path).read_text())
    assert list(Draft202012Validator(SCHEMA_DOC).iter_errors(data)) == []
    assert json.loads((ROOT / "config.json").read_text())["$schema"] == "./config.schema.json"


def samples(prop: dict) -> tuple[list, list]:
    """(values the key accepts, values of the wrong kind) for a key's schema fragment."""
    kind = prop["type"]
    kinds = kind if isinstance(kind, list) else [kind]
    good: list = []
    bad: list = [{"an": "object"}] if "object" not in kinds else [[1]]
    if "enum" in prop:
        return list(prop["enum"]), ["not-a-choice", 3, True]
    if kinds == ["boolean"]:
        return [True, False], ["true", 1, None]
    if kinds == ["integer"]:
        lo = prop.get("minimum", 0)
        hi = prop.get("maximum", lo + 1000)
        return [lo, hi], [lo - 1] + ([hi + 1] if "maximum" in prop else []) + [str(lo), True, None, 2.5]
    if kinds == ["number"]:
        span = prop if "minimum" in prop else prop["anyOf"][0]
        lo, hi = span["minimum"], span["maximum"]
        good = [lo, hi, (lo + hi) / 2] + ([0] if "anyOf" in prop else [])
        return good, [hi + 1, str(lo), True, None] + ([] if "anyOf" in prop or lo <= 0 else [lo - 0.5])
    if "number" in kinds:                     # a decimal: a number or a decimal string
        good = ["0.001", 0.002] if "exclusiveMaximum" in prop else ["0.5", 1, 2.5]
        if "exclusiveMaximum" in prop:
            bad.append(prop["exclusiveMaximum"])
        if "null" in kinds:
            good.append(None)
        bounded = "exclusiveMinimum" in prop or "minimum" in prop
        return good, bad + ["abc", "١٥٠", True] + ([] if "null" in kinds else [None]) + ([-1] if bounded else [])
    if kinds == ["string"]:
        if "anyOf" in prop:                   # the heartbeat URL
            return ["", "https://hc-ping.com/abc"], ["ftp://x/y", 5, None]
        if "pattern" in prop:
            return [], [5, None, True, "has space"]
        return ["anything"], [5, None, True]
    if kinds == ["array"]:
        item = prop["items"]
        if "enum" in item:
            return [[], [item["enum"][0]]], [[1], "start", [item["enum"][0], "nope"]]
        return [[], ["tgram://123:abc/456"]], ["tgram://x/y", [5], ["no url"]]
    if kinds == ["object"]:
        return [{}, {"USDC": "10", "SOL": 2}], [{"usdc": "1"}, {"SOL": "abc"}, {"SOL": -1}, "USDC", [1]]
    raise AssertionError(f"no samples for {prop}")


CASES = [(s, k) for s, keys in SCHEMA.items() for k in keys]


@pytest.mark.parametrize("section,key", CASES, ids=[f"{s}.{k}" for s, k in CASES])
def test_the_schema_agrees_with_the_validator(section, key):
    check, default = SCHEMA[section][key]
    prop = SCHEMA_DOC["properties"][section]["properties"][key]
    validate = Draft202012Validator(prop)
    good, bad = samples(prop)
    if default is not REQUIRED:
        good.append(json.loads(json.dumps(config_schema._default(default))))
    for v in good:
        as_read = Decimal(str(v)) if isinstance(v, float) else v   # the config is read with parse_float=Decimal
        check(f"{section}.{key}", as_read)                          # the bot accepts it
        assert validate.is_valid(v), (v, list(validate.iter_errors(v)))
    for v in bad:
        as_read = Decimal(str(v)) if isinstance(v, float) else v
        with pytest.raises(ConfigError):
            check(f"{section}.{key}", as_read)
        assert not validate.is_valid(v), v
