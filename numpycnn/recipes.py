"""The built-in configs, installed with the package: what each is, for ``numpycnn configs``.

Each file in ``numpycnn/configs/`` (the repository's ``configs/`` links there) describes
itself in its header comment, so that the words live beside the settings they describe:

    # about: what the config is for, in one line
    # accuracy: its measured test accuracy, with the conditions that matter

``numpycnn.config.load_config`` and ``numpycnn.train`` take these names where a file path
goes (a file of that name wins). ``describe`` gives one config's summary, ``describe_all``
every one's; ``as_yaml`` a config's text to start a file of your own.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import builtin_config, builtin_configs, load_config
from .engine.model import Sequential

#: The header keys a built-in config describes itself with.
HEADER_KEYS = ("about", "accuracy")
_HEADER_LINE = re.compile(r"#\s*(\w+):\s*(.*?)\s*$")


@dataclass(frozen=True)
class Recipe:
    """One built-in config: its name, file, what it is for, its network in short, its
    parameter count and its measured test accuracy (as its header says)."""

    name: str
    path: Path
    about: str
    accuracy: str
    network: str
    parameters: int

    def to_dict(self):
        return {
            "name": self.name,
            "file": self.path.name,
            "network": self.network,
            "parameters": self.parameters,
            "accuracy": self.accuracy,
            "about": self.about,
        }


def header(path):
    """The ``# key: value`` lines of a config file's leading comment block, as a dict."""
    found = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = _HEADER_LINE.fullmatch(line)
        if match and match[1] in HEADER_KEYS:
            found[match[1]] = match[2]
    return found


def network_text(specs):
    """The layers with weights and the pooling layers in one short line, e.g.
    'conv8 5x5, conv8 5x5, maxpool2, dense128, dense10' (activations left out)."""
    parts = []
    for spec in specs:
        kind = spec["type"]
        if kind == "conv2d":
            k = spec["kernel"]
            extra = f" pad{spec['padding']}" if spec["padding"] else ""
            extra += f" stride{spec['stride']}" if spec["stride"] != 1 else ""
            parts.append(f"conv{spec['filters']} {k}x{k}{extra}")
        elif kind in ("maxpool2d", "avgpool2d"):
            parts.append(f"{kind[:-2]}{spec['size']}")
        elif kind == "dense":
            parts.append(f"dense{spec['units']}")
    return ", ".join(parts)


def describe(name):
    """The ``Recipe`` of the built-in config ``name`` (``ConfigError`` if there is none)."""
    name, path = builtin_config(name)
    config = load_config(path)
    t = config.training
    model = Sequential(
        config.network, loss=t.loss, init=t.init, dtype=t.dtype, input_shape=config.data.shape
    )
    meta = header(path)
    return Recipe(
        name=name,
        path=path,
        about=meta.get("about", ""),
        accuracy=meta.get("accuracy", ""),
        network=network_text(config.network),
        parameters=model.num_params,
    )


def describe_all():
    """Every built-in config's ``Recipe``, by name."""
    return [describe(name) for name in builtin_configs()]


def as_yaml(name):
    """The built-in config ``name`` as YAML text to start a file of your own: a YAML file
    as it is written, comments included; an INI file as the YAML of the same settings."""
    recipe = describe(name)
    if recipe.path.suffix.lower() in (".yaml", ".yml"):
        return recipe.path.read_text(encoding="utf-8")
    raw = load_config(recipe.path).to_dict()
    raw["output"] = {k: v for k, v in raw["output"].items() if v is not None}
    head = "".join(f"# {key}: {getattr(recipe, key)}\n" for key in HEADER_KEYS)
    head += f"# (the settings of {recipe.path.name}, written as YAML)\n"
    return head + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=100)
