"""Config files: the built-in recipes in ``numpycnn/configs/`` found by name, and YAML or
INI text read into the nested dict of the file schema, which ``configcheck`` checks into a
``config.Config``. Every problem is a ``ConfigError`` naming the file (and line, where the
reader knows it)."""

import configparser
import dataclasses
import os
import re
from pathlib import Path

import yaml

from .config import (
    EXTENSIONS,
    AugmentConfig,
    ConfigError,
    DataConfig,
    OutputConfig,
    TrainingConfig,
    _Problem,
)
from .configcheck import _close, _hint, _home_of, _parse

#: The built-in configs (recipes), installed with the package; the repository's configs/
#: folder links here.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def builtin_configs():
    """{name: path} of the built-in configs, sorted by name. A file's name is its stem
    (``best`` for best.yaml); a file whose stem a YAML file already has (the INI twin
    escontrela.ini) is named by its file name."""
    files = sorted(
        (p for p in CONFIG_DIR.iterdir() if p.suffix.lower() in EXTENSIONS),
        key=lambda p: (p.stem, p.suffix.lower() == ".ini", p.suffix),
    )
    found = {}
    for path in files:
        found[path.name if path.stem in found else path.stem] = path
    return found


def builtin_config(name):
    """(name, path) of the built-in config called ``name`` (or by its file name,
    ``best.yaml``); ``ConfigError`` naming the closest names if there is none."""
    known = builtin_configs()
    if name in known:
        return name, known[name]
    for known_name, path in known.items():
        if path.name == name:
            return known_name, path
    names = list(known)
    raise ConfigError(
        f"unknown config {name!r}{_close(name, names)}: no such file, nor a built-in "
        f"config (built-in: {', '.join(names)}; `numpycnn configs` describes them)"
    )


def find_config(config):
    """The config file ``config`` names: a path, when a file is there (a path always
    wins), else a built-in config's name (``best``, or its file name ``best.yaml``).
    Raises ``ConfigError`` for a bare name that is neither, with the closest names; a
    missing path (with a folder, or a file name that no built-in config has) is left for
    the reader to report."""
    source = os.fspath(config)
    path = Path(source)
    if path.is_file() or path.parent != Path("."):
        return path
    try:
        return builtin_config(source)[1]
    except ConfigError:
        if path.suffix.lower() in EXTENSIONS:  # a file name: "no such file", as before
            return path
        raise


def load_config(path):
    """The Config in a .yaml, .yml or .ini file, or of a built-in config by name
    (``find_config``: a file of that name wins)."""
    source = os.fspath(find_config(path))
    suffix = Path(source).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ConfigError(
            f"{source}: unknown config format {suffix or '(no extension)'!r} "
            f"(expected {', '.join(EXTENSIONS)})"
        )
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    ini = suffix == ".ini"
    try:
        raw = _read_ini(text, source) if ini else _read_yaml(text)
    except _Problem as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _parse(raw, source, ini)


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-7`` as a float (as YAML 1.2 does) and refuses duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(text):
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = " ".join(f"{exc.problem or ''} {exc.context or ''}".split())
        raise _Problem(f"line {mark.line + 1}, column {mark.column + 1}: {problem}") from None
    except yaml.YAMLError as exc:
        raise _Problem(" ".join(str(exc).split())) from None


def _ini_error(exc):
    """(line number, description) of a configparser error."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        key = re.split(r"[=:]", exc.line, maxsplit=1)[0].strip()
        home = _home_of(key, ini=True)
        if home:
            return exc.lineno, f"{key!r} belongs under {home}"
        return exc.lineno, "a key before the first [section]"
    if isinstance(exc, configparser.DuplicateSectionError):
        return exc.lineno, f"duplicate section [{exc.section}]"
    if isinstance(exc, configparser.DuplicateOptionError):
        return exc.lineno, f"duplicate key {exc.option!r} in [{exc.section}]"
    if isinstance(exc, configparser.ParsingError):
        lineno, line = exc.errors[0]
        return lineno, f"cannot parse {line} (expected 'key = value' or '[section]')"
    return None, " ".join(str(exc).split())


def _ini_scalar(text):
    """An INI value as null, int, float or, failing those, the text itself."""
    if text.lower() in ("null", "none"):
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _ini_value(cls, key, text):
    """An INI value parsed for the dataclass field it sets: str fields keep the text."""
    kind = {f.name: f.type for f in dataclasses.fields(cls)}.get(key)
    if kind is bool and text.lower() in configparser.ConfigParser.BOOLEAN_STATES:
        return configparser.ConfigParser.BOOLEAN_STATES[text.lower()]
    if kind is str or (kind == str | None and text.lower() not in ("null", "none")):
        return text
    if kind == tuple[str, ...]:
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == tuple[int, ...] | None and text.lower() not in ("null", "none"):
        return [_ini_scalar(part.strip()) for part in text.strip("[]").split(",")]
    return _ini_scalar(text)


_INI_SECTIONS = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "training": TrainingConfig,
    "output": OutputConfig,
}


def _read_ini(text, source):
    """The INI file as the nested dict a YAML file gives."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # keys are case-sensitive, as in YAML
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        lineno, problem = _ini_error(exc)
        raise _Problem(f"line {lineno}: {problem}" if lineno else problem) from None
    if parser.defaults():
        raise _Problem("a [DEFAULT] section is not supported")
    raw, layers = {}, {}
    for name in parser.sections():
        items = parser.items(name)
        number = name.removeprefix("layer.")
        if number != name and number.isdigit():
            layers[int(number)] = {k: _ini_scalar(v) for k, v in items}
        elif name in ("optimizer", "schedule"):
            raw.setdefault("training", {})[name] = {k: _ini_scalar(v) for k, v in items}
        elif name == "augment":
            raw.setdefault("data", {})["augment"] = {k: _ini_scalar(v) for k, v in items}
        elif name in _INI_SECTIONS:
            cls = _INI_SECTIONS[name]
            raw.setdefault(name, {}).update({k: _ini_value(cls, k, v) for k, v in items})
        else:
            known = [*_INI_SECTIONS, "optimizer", "schedule", "layer.N"]
            raise _Problem(f"unknown section [{name}]{_hint(name, known)}")
    if layers:
        if sorted(layers) != list(range(1, len(layers) + 1)):
            found = ", ".join(f"layer.{n}" for n in sorted(layers))
            raise _Problem(f"layer sections must be numbered 1, 2, 3, ... (found {found})")
        raw["network"] = [layers[n] for n in sorted(layers)]
    return raw
