"""Options from a file: ``--config FILE.toml`` (or a run's ``config.json``) for any argparse parser.

Generic on purpose: the parser's own actions give the keys (their ``dest``, or a long option
spelled with ``_`` or ``-``), the types (each value goes through the option's ``type`` callable,
the same check as on the command line) and the choices. File values become the parser's
defaults, so flags given on the command line override them. Any problem is one
:class:`CuvaeError` naming the file, the key and what is allowed.

An option whose action has ``axis`` set (``cuvae-sweep``'s training options) takes one value or
a list of them, each checked as the single value is (``axis = "list"``: the value is itself a list,
so several are a list of lists).

``--print-config`` writes the effective options back as TOML that ``--config`` reads.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
import textwrap
from pathlib import Path

from cuvae.errors import CuvaeError

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

SKIP = ("help", "config", "print_config")


def add_config_options(p: argparse.ArgumentParser, print_config: bool = True) -> argparse.ArgumentParser:
    g = p.add_argument_group("config file")
    g.add_argument("--config", type=Path, metavar="FILE",
                   help="read options from a TOML file (keys are the long options: latent = 8, batch_size = 100) "
                        "or a run's config.json; options given on the command line win")
    if print_config:
        g.add_argument("--print-config", action="store_true",
                       help="print the effective options as TOML (a complete file for --config) and exit")
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the values of ``--config FILE`` as defaults."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        apply_file(parser, known.config)
    if "--print-config" in (argv if argv is not None else sys.argv[1:]):
        for action in parser._actions:
            action.required = False  # printing a file to fill in needs none of them yet
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is not None and args.config != known.config:  # an abbreviation (--conf)
        apply_file(parser, args.config)
        args = parser.parse_args(argv)
    return args


def apply_file(parser: argparse.ArgumentParser, path: Path) -> dict:
    """Check the file's values against the parser and install them as its defaults; returns them."""
    values = read_file(parser, path)
    for action in parser._actions:
        if action.dest in values and action.required:
            action.required = False  # given by the file
    parser.set_defaults(**values)
    return values


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every settable option by key: its dest and its long option names (``--batch-size``: batch_size, batch-size)."""
    keys = {}
    for a in parser._actions:
        if a.dest in SKIP or not a.option_strings:
            continue
        keys[a.dest] = a
        for s in a.option_strings:
            if s.startswith("--"):
                keys.setdefault(s[2:], a)
                keys.setdefault(s[2:].replace("-", "_"), a)
    return keys


def read_file(parser: argparse.ArgumentParser, path: Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise CuvaeError(f"--config {path}: cannot read it ({err.strerror or err}); pass a TOML file or a run's config.json") from None
    is_json = path.suffix.lower() == ".json"
    try:
        raw = json.loads(text) if is_json else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        kind = "JSON" if is_json else "TOML"
        raise CuvaeError(f"{path}: not valid {kind} ({err}); fix the file or print a fresh one with --print-config") from None
    if not isinstance(raw, dict):
        raise CuvaeError(f"{path}: expected a table of options (key = value), found {type(raw).__name__}")
    if is_json:
        raw.pop("data", None)  # a run's record of the data it used (checked on resume), not an option
    raw = _flatten(path, raw)
    keys = options(parser)
    derived = _derived_keys(keys) if is_json else set()
    values = {}
    for key, value in raw.items():
        if value is None or key in derived:
            continue  # JSON null: not set; a config.json field no option sets (image_shape: from the dataset)
        action = keys.get(key)
        if action is None:  # hidden options are known: the tool's own check names the right one
            near = difflib.get_close_matches(key, [k for k, a in keys.items() if a.help != argparse.SUPPRESS], 3)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise CuvaeError(f"{path}: unknown key {key!r} for {parser.prog}; {hint}the keys are its long options "
                             f"({', '.join(sorted(a.dest for a in set(keys.values()) if a.help != argparse.SUPPRESS))})")
        values[action.dest] = _convert(path, key, action, value)
    return values


def _derived_keys(keys: dict) -> set:
    from dataclasses import fields

    from cuvae.engine.config import TrainConfig

    return {f.name for f in fields(TrainConfig)} - set(keys)


def _flatten(path: Path, raw: dict) -> dict:
    """Tables are only grouping (``[model]``, ``[sweep]``, ``[axes]``): their keys are options like the rest."""
    flat = {}
    for key, value in raw.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if isinstance(v, dict):
                raise CuvaeError(f"{path}: [{key}.{k}] nests too deep; tables only group options (key = value)")
            if k in flat:
                raise CuvaeError(f"{path}: key {k!r} is given twice; keep one")
            flat[k] = v
    return flat


def _allowed(action: argparse.Action) -> str:
    axis = getattr(action, "axis", None)
    if action.choices is not None:
        one = "one of: " + ", ".join(map(str, action.choices))
        return f"{one}, or a list of them (one run each)" if axis else one
    if action.nargs == 0:
        return "true or false"
    what = {"positive_int": "a positive integer", "nonneg_int": "an integer >= 0", "int": "an integer",
            "positive_float": "a positive number", "nonneg_float": "a number >= 0", "float": "a number",
            "Path": "a path (a string)", "dataset_arg": "a dataset name (mnist, fashion-mnist, cifar10, folder:PATH)",
            }.get(getattr(action.type, "__name__", "str"), "a string")
    if axis == "value":
        return f"{what}, or a list of them (one run each)"
    if axis == "list":
        return f"a list, each {what}, or a list of such lists (one run each)"
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return f"a list, each {what}"
    return what


def _convert(path: Path, key: str, action: argparse.Action, value):
    def bad(why: str = ""):
        shown = json.dumps(value) if isinstance(value, (str, bool, int, float, list)) else repr(value)
        raise CuvaeError(f"{path}: {key} = {shown}: {why + '; ' if why else ''}expected {_allowed(action)}")

    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            bad()
        return action.const if value else action.default
    if action.nargs == "?" and isinstance(value, bool):
        return action.const if value else action.default
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, list):
        if not many:
            bad("one value, not a list")
        if not value and action.nargs == "+":
            bad("an empty list")
        if getattr(action, "axis", None) == "list" and all(isinstance(v, list) for v in value):
            if not all(value):
                bad("an empty list")
            return [[_one(action, x, bad) for x in v] for v in value]  # several values, each a list
        return [_one(action, v, bad) for v in value]
    return [_one(action, value, bad)] if many else _one(action, value, bad)


def _one(action: argparse.Action, value, bad):
    if isinstance(value, (bool, list, dict)) or (isinstance(value, float) and not math.isfinite(value)):
        bad()
    convert = action.type or str
    try:
        out = convert(str(value))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
        bad(str(err))
    if isinstance(value, str) and isinstance(out, (int, float)):
        bad()  # "8" where 8 is meant: a wrong type in the file, even if it would parse
    if isinstance(value, (int, float)) and isinstance(out, (str, Path)):
        bad()
    if action.choices is not None and out not in action.choices:
        bad()
    return out


# ---- writing ----------------------------------------------------------------------------------------
def to_toml(parser: argparse.ArgumentParser, values: dict, header: str = "") -> str:
    """The parser's options with ``values`` as TOML, one commented key each, grouped as in ``--help``.

    Options without a value (``None``) are written commented out, so the file stays complete."""
    lines = [f"# {line}" for line in header.splitlines()]
    for group in parser._action_groups:
        acts = [a for a in group._group_actions if a.dest not in SKIP and a.option_strings and a.help != argparse.SUPPRESS]
        if not acts:
            continue
        lines += ["", f"# ---- {group.title} ----"]
        for a in acts:
            if a.help:
                lines += textwrap.wrap(" ".join(a.help.split()).replace("%%", "%"), 110, initial_indent="# ",
                                       subsequent_indent="#   ")
            value = values.get(a.dest)
            if getattr(a, "axis", None) == "value" and isinstance(value, list) and len(value) == 1:
                value = value[0]  # one value of an axis-capable option: written as the option itself
            lines.append(f"# {a.dest} =" if value is None else f"{a.dest} = {_toml_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string: JSON's escapes are TOML's


def train_values(args) -> dict:
    """cuvae-train's effective options: the command line and file, with the recipe's values filled in
    (or, with --resume, the run's stored config with the given changes)."""
    from cuvae.engine.options import MODEL_FLAGS, TRAIN_FLAGS, config_from_args, resumed_config

    if getattr(args, "resume", None):
        from cuvae.engine.checkpoint import load_checkpoint

        config = resumed_config(args, load_checkpoint(args.resume).config)
    else:
        config = config_from_args(args)
    values = dict(vars(args))
    stored = config.to_dict()
    for k in ("recipe",) + MODEL_FLAGS + TRAIN_FLAGS:
        values[k] = stored[k]
    return values
