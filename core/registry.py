"""Registry: (kind, name) -> factory + params model + where it came from."""

from __future__ import annotations

import difflib
import importlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from reasonrl.core import contracts
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.hookspecs import KINDS


class Params(BaseModel):
    """Base of every component's params model: unknown keys are errors, not silently ignored.

    A string under a field is its description (``reasonrl plugins --params``, the docs)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class NoParams(Params):
    """Params model for components that take none."""


class DuplicateComponentError(ReasonRLError):
    pass


class UnknownComponentError(ReasonRLError):
    pass


@dataclass(frozen=True)
class ComponentInfo:
    kind: str
    name: str
    factory: Callable[..., Any] | str
    params: type[BaseModel] | str
    plugin: str
    package: str
    summary: str

    def resolve_factory(self) -> Callable[..., Any]:
        return self._load(self.factory)

    def params_model(self) -> type[BaseModel]:
        """The params model; a ``"module:Class"`` string is imported on first use."""
        return self._load(self.params)

    @property
    def where(self) -> str:
        """``module:attribute`` of the factory: from a component's name to its file in one hop."""
        if isinstance(self.factory, str):
            return self.factory
        return f"{self.factory.__module__}:{getattr(self.factory, '__qualname__', type(self.factory).__name__)}"

    def _load(self, target: Any) -> Any:
        if not isinstance(target, str):
            return target
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise ReasonRLError(
                f"{self.kind[:-1]} {self.name!r} from plugin {self.plugin!r} points at "
                f"{target!r}, which cannot be loaded: {exc}. Install the missing "
                f"dependency or fix the plugin's register call."
            ) from exc


class Registry:
    def __init__(self) -> None:
        self._entries: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in KINDS}
        # plugin name -> error text, for plugins that failed to import or to register
        self.failed_plugins: dict[str, str] = {}
        # (kind, name) -> every claim, for names more than one plugin registered
        self.conflicts: dict[tuple[str, str], list[ComponentInfo]] = {}

    def add(self, info: ComponentInfo) -> None:
        """Record a component. A name already taken (by another plugin) becomes a conflict:
        both claims are kept for listing, and building that name fails with the reason."""
        self._check_kind(info.kind)
        key = (info.kind, info.name)
        existing = self._entries[info.kind].get(info.name)
        if existing is None and key not in self.conflicts:
            self._entries[info.kind][info.name] = info
            return
        if existing is not None:
            del self._entries[info.kind][info.name]
            self.conflicts[key] = [existing]
        self.conflicts[key].append(info)

    def conflict_message(self, kind: str, name: str) -> str:
        claims = self.conflicts[(kind, name)]
        who = " and ".join(f"plugin {c.plugin!r} ({c.package})" for c in claims)
        return (f"{kind} name {name!r} is registered by more than one plugin: {who}. Rename one, or disable "
                f"one with REASONRL_DISABLE_PLUGINS={claims[-1].plugin}.")

    def remove_plugin(self, plugin: str) -> None:
        for entries in self._entries.values():
            for name in [n for n, info in entries.items() if info.plugin == plugin]:
                del entries[name]
        for key, claims in list(self.conflicts.items()):
            rest = [c for c in claims if c.plugin != plugin]
            if len(rest) == len(claims):
                continue
            del self.conflicts[key]
            for claim in rest:
                self.add(claim)

    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(self._entries[kind])

    def all(self) -> list[ComponentInfo]:
        return [info for kind in KINDS for _, info in sorted(self._entries[kind].items())]

    def get(self, kind: str, name: str) -> ComponentInfo:
        self._check_kind(kind)
        if (kind, name) in self.conflicts:
            raise DuplicateComponentError(self.conflict_message(kind, name))
        try:
            return self._entries[kind][name]
        except KeyError:
            raise UnknownComponentError(self._unknown_message(kind, name)) from None

    def validate_params(self, kind: str, name: str, params: Mapping[str, Any] | BaseModel | None) -> BaseModel:
        model = self.get(kind, name).params_model()
        if isinstance(params, model):
            return params
        return model.model_validate(dict(params or {}))

    def build(self, kind: str, name: str, params: Mapping[str, Any] | BaseModel | None = None) -> Any:
        """Validate params and call the factory; check the result against the contract."""
        info = self.get(kind, name)
        try:
            validated = self.validate_params(kind, name, params)
        except ValidationError as exc:
            raise ReasonRLError(f"bad params for {kind} {name!r}: {exc}") from exc
        component = info.resolve_factory()(validated)
        contract = getattr(contracts, KINDS[kind])
        if not isinstance(component, contract):
            missing = [m for m in _protocol_members(contract) if not hasattr(component, m)]
            raise ReasonRLError(
                f"{kind} {name!r} from plugin {info.plugin!r} built a "
                f"{type(component).__name__} that does not satisfy {contract.__name__}: "
                f"missing {missing}"
            )
        return component

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ReasonRLError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")

    def _unknown_message(self, kind: str, name: str) -> str:
        known = sorted(self._entries[kind])
        message = f"unknown {kind} name {name!r}; known: {', '.join(known) or '(none registered)'}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f". Did you mean {close[0]!r}?"
        for plugin, error in self.failed_plugins.items():
            message += f"\nplugin {plugin!r} failed to load and may provide it: {error}"
        return message


def _protocol_members(protocol: type) -> list[str]:
    members = getattr(protocol, "__protocol_attrs__", None)
    if members is None:  # Python < 3.12
        members = [m for m in vars(protocol) if not m.startswith("_")] + (
            ["__call__"] if "__call__" in vars(protocol) else []
        )
    return sorted(members)


def describe_params(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None) -> list[dict[str, str]]:
    """One row per option (name, type, default, description). A nested params model is
    expanded with dotted names, with the defaults its parent gives it, so every option a
    config can set is listed with the value it gets when left out."""
    rows = []
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if defaults is not None:
            value = getattr(defaults, name)
        elif field.is_required():
            value = REQUIRED
        else:
            value = field.get_default(call_default_factory=True)
        expanded = nested is not None and isinstance(value, BaseModel)
        rows.append({"name": prefix + name, "type": type_name(field.annotation),
                     "default": "(below)" if expanded else _value_text(value),
                     "value": "(below)" if expanded else _plain_value(value),
                     "description": field.description or ""})
        if expanded:
            rows += describe_params(nested, f"{prefix}{name}.", value)
        elif nested is not None and value is None:
            rows += describe_params(nested, f"{prefix}{name}.")
    return rows


REQUIRED = object()


def _plain_value(value: Any) -> Any:
    """The default as plain data (what a config file would hold)."""
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    if value is REQUIRED:
        return "required"
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError:
        return repr(value)


def _value_text(value: Any) -> str:
    if value is REQUIRED:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return repr(value)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The params model a field holds directly (``X`` or ``X | None``), not in a list or dict."""
    candidates = [a for a in (typing.get_args(annotation) if _is_union(annotation) else (annotation,))
                  if a is not type(None)]
    if len(candidates) == 1 and isinstance(candidates[0], type) and issubclass(candidates[0], BaseModel) \
            and not getattr(candidates[0], "kind", ""):
        return candidates[0]
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def type_name(annotation: Any) -> str:
    """``int``, ``str | None``, ``'a' | 'b'``, ``list[str]``, ``dataset ref``: short and readable."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if _is_union(annotation):
        return " | ".join(type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if getattr(annotation, "kind", ""):  # a ComponentRef subclass: {name, params} of that kind
        return f"{annotation.kind[:-1]} ref"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))
