"""Command-line options generated from the config's fields and the method registries.

A ``Flag`` binds one option to one dotted config key; its type, choices (a ``Literal`` field or
a section's methods), default and help come from the field that key names, so ``--help`` cannot
drift from the config. An option the user did not give is None and leaves the config (file,
resumed run or saved model) as it is. ``<method>`` in a key stands for the section's chosen
method: the help lists the methods that take the setting and each one's default."""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape

from sketchshot.config import (
    ENCODER_NAMES,
    METHOD,
    SECTION_METHODS,
    Config,
    EvaluateConfig,
    MethodSettings,
    resolve_config,
)
from sketchshot.errors import ConfigError

# Help panels, in the order commands list them.
MODEL = "Model"
DATA = "Data"
TRAINING = "Training"
VIEWS = "Views (augmentation)"
EVALUATION = "Evaluation"
RUN = "Run"
OUTPUT = "Output"

ModelT = TypeVar("ModelT", bound=BaseModel)
# lower-case names that may start a help text and stay as they are
NAMES = {
    *ENCODER_NAMES,
    *(name for methods in SECTION_METHODS.values() for name in methods),
    *get_args(EvaluateConfig.model_fields["protocol"].annotation),
}


def shown(value: Any) -> str:
    """A default as the help shows it: as typed on the command line, ``none`` for unset."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, MethodSettings):
        return value.name
    if isinstance(value, tuple | list):
        return " ".join(shown(v) for v in value)
    return str(value)


def sentence(text: str) -> str:
    """``text`` capitalised (unless it starts with a name: "knn and linear: ...") with a full
    stop."""
    text = text.strip()
    first = re.match(r"\w*", text).group(0)  # type: ignore[union-attr]
    if text and first not in NAMES:
        text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def option(*decls: str, help: str, default: str, panel: str, **extra: Any) -> Any:
    """A typer option whose help ends with ``[default: ...]`` (escaped for rich markup)."""
    return typer.Option(
        *decls,
        help=escape(f"{sentence(help)} [default: {default}]"),
        show_default=False,
        rich_help_panel=panel,
        **extra,
    )


@dataclass(frozen=True)
class Described:
    """What the help says about a config field: its command-line type and default, and help."""

    annotation: Any
    default: str
    help: str


def _first_sentence(cls: type) -> str:
    doc = " ".join((inspect.getdoc(cls) or cls.__name__).split())
    return re.split(r"\.\s+(?=[A-Z])", doc)[0].rstrip(".")


def describe(root: BaseModel, key: str) -> Described:
    """The field ``key`` names under ``root`` (a default instance, so that a section's own
    defaults, like pretraining's 0.6 crop, are the ones shown)."""
    *parents, leaf = key.split(".")
    node: Any = root
    for i, part in enumerate(parents):
        if part == METHOD:
            return _method_setting(SECTION_METHODS[parents[i - 1]], leaf)
        node = getattr(node, part)
    info = type(node).model_fields[leaf]
    value = getattr(node, leaf)
    if isinstance(value, MethodSettings):  # a section's method: choose among the registry
        methods = SECTION_METHODS[parents[-1]]
        each = "; ".join(f"{name}: {_first_sentence(cls)}" for name, cls in methods.items())
        return Described(Literal[tuple(methods)], value.name, f"{info.description}. {each}")
    return Described(info.annotation, shown(value), info.description or "")


def _method_setting(methods: Mapping[str, type[MethodSettings]], field: str) -> Described:
    takes = {name: cls for name, cls in methods.items() if field in cls.model_fields}
    infos = {name: cls.model_fields[field] for name, cls in takes.items()}
    texts = {info.description or "" for info in infos.values()}
    if len(texts) == 1:
        help = f"{texts.pop()} ({', '.join(takes)}{' only' if len(takes) == 1 else ''})"
    else:
        help = "; ".join(f"{info.description} ({name})" for name, info in infos.items())
    default = ", ".join(f"{name} {shown(getattr(cls(), field))}" for name, cls in takes.items())
    annotation = next(iter(infos.values())).annotation
    return Described(annotation, default, help)


def _cli_type(annotation: Any) -> tuple[Any, bool]:
    """The option type of a field's annotation (``X | None`` -> ``X``) and whether it is a
    repeatable option (``tuple[str, ...]``, given as a list)."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    args = get_args(annotation)
    if get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[args[0]], True
    return annotation, False


@dataclass(frozen=True)
class Flag:
    """One command-line option that sets the config key ``key``.

    ``decls`` as typer takes them; ``note`` is added to the field's description; ``default``
    replaces the config's default in the help where another source decides (evaluate's data:
    the model's). A boolean key is set by one switch, ``--flip`` or (``invert``) ``--no-...``:
    a ``--x/--no-x`` pair would take a column of its own that cuts option names at 80
    columns."""

    decls: str
    key: str
    panel: str
    note: str = ""
    default: str | None = None
    invert: bool = False  # a switch that sets the key to False ("--no-channels-last")

    @property
    def name(self) -> str:
        """The Python parameter name: ``--augment-strength`` -> ``augment_strength``."""
        return self.decls.split("/")[0].lstrip("-").replace("-", "_")

    @property
    def flag(self) -> str:
        """What the user types, as error messages name it."""
        return self.decls.split("/")[0]

    def parameter(self, root: BaseModel) -> inspect.Parameter:
        field = describe(root, self.key)
        annotation, repeatable = _cli_type(field.annotation)
        help = field.help + self.note + ("; repeatable" if repeatable else "")
        info = option(
            self.decls,
            help=help,
            default=self.default if self.default is not None else field.default,
            panel=self.panel,
            **({"metavar": "<str>"} if repeatable else {}),
        )
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[annotation | None, info],
        )


def given_value(value: Any) -> Any:
    """A typer value as the config takes it: lists as tuples, an empty list as not given."""
    if isinstance(value, list):
        return tuple(value) or None
    return value


@dataclass(frozen=True)
class Given:
    """The values of a command's ``Flag`` options that the user gave (config key -> value),
    and the option each key came from, so that errors name what was typed."""

    values: Mapping[str, Any]
    names: Mapping[str, str]

    def config(
        self,
        file: Path | None,
        base: Config | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        """Defaults (or ``base``) < ``file`` < ``overrides`` (dotted keys; by default these
        options)."""
        values = self.values if overrides is None else overrides
        return resolve_config(file, values, base=base, names=self.names)

    def model(self, model: type[ModelT], **extra: Any) -> ModelT:
        """A frozen options model (``PredictConfig``) from these options and ``extra``."""
        values = {**self.values, **{k: v for k, v in extra.items() if v is not None}}
        try:
            return model(**values)
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                key = ".".join(str(p) for p in e["loc"])
                problems.append(f"{self.names.get(key, key)}: {e['msg']}")
            raise ConfigError("; ".join(problems)) from None


def collect(flags: Sequence[Flag], values: Mapping[str, Any]) -> Given:
    """The ``Given`` of ``flags`` from the parsed ``values`` (parameter name -> value)."""
    given = {f.key: given_value(values[f.name]) for f in flags}
    given |= {f.key: not given[f.key] for f in flags if f.invert and given[f.key] is not None}
    return Given({k: v for k, v in given.items() if v is not None}, {f.key: f.flag for f in flags})


# ---- options shared by several commands -------------------------------------------------

# --threads of every command that computes
THREADS = Flag("--threads", "threads", RUN)
RUN_FLAGS = (Flag("--seed", "seed", RUN), Flag("--device", "device", RUN), THREADS)
# --device of enroll and predict, whose option models leave its description to Config's
DEVICE = Flag("--device", "device", RUN)
DATA_FLAGS = (
    Flag("--data", "data.source", DATA),
    Flag("--image-size", "data.image_size", DATA),
    Flag("--fit", "data.fit", DATA),
    Flag("--classes", "data.classes", DATA, note=", e.g. 'Sanskrit/*'"),
    Flag("--exclude-classes", "data.exclude_classes", DATA),
    Flag("--train-classes", "data.train_classes", DATA),
    Flag("--val-classes", "data.val_classes", DATA),
    Flag("--test-classes", "data.test_classes", DATA),
    Flag("--split-fractions", "data.split_fractions", DATA),
    Flag("--split-by", "data.split_by", DATA),
    Flag("--subsample", "data.subsample", DATA),
    Flag("--small-classes", "data.small_classes", DATA),
    Flag("--max-per-class", "data.max_per_class", DATA),
    Flag("--line-width", "data.line_width", DATA),
    Flag("--on-error", "data.on_error", DATA),
    Flag("--recognized", "data.recognized", DATA),
    Flag("--countries", "data.countries", DATA),
    Flag("--trust-npz", "data.trust_npz", DATA),
)

_SECTIONS = ", ".join(
    f"[{name}]"
    for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)
ConfigFile = Annotated[
    Path | None,
    option(
        "--config",
        help=f"TOML file with any of the sections {_SECTIONS}; command-line options override it",
        default="none",
        panel=RUN,
    ),
]
Json = Annotated[
    bool,
    option(
        "--json",
        help="print the result as JSON on stdout; human output goes to stderr",
        default="off",
        panel=OUTPUT,
    ),
]
Quiet = Annotated[
    bool,
    option(
        "--quiet",
        "-q",
        help="no progress bars or notes on stderr (errors are still printed)",
        default="off",
        panel=OUTPUT,
    ),
]
Verbose = Annotated[
    bool,
    option(
        "--verbose",
        "-v",
        help="on an error, print its traceback as well as the one-line message",
        default="off",
        panel=OUTPUT,
    ),
]
