"""The registry of processor types: the built-ins plus entry-point plugins."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from foldermon.deadline import interrupts_agent
from foldermon.errors import OptionError
from foldermon.processors._base import Processor, ProcessorFactory, ProcessorSpec, SpecError
from foldermon.processors.builtin import Filter, LineSplitter, Lowercase, Replace, Strip, Uppercase
from foldermon.processors.stateful import CountBy, LineCounter, LineJoiner, Sum, TagRouter

__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "REGISTRY_PARAMETER", "Registry"]

ENTRY_POINT_GROUP = "foldermon.processors"
"""Entry-point group third-party processor types register under."""

REGISTRY_PARAMETER = "registry"
"""A factory parameter of this name receives the registry instead of an option."""

BUILTINS: Mapping[str, ProcessorFactory] = MappingProxyType(
    {
        "count_by": CountBy,
        "filter": Filter,
        "line_counter": LineCounter,
        "line_joiner": LineJoiner,
        "line_splitter": LineSplitter,
        "lowercase": Lowercase,
        "replace": Replace,
        "strip": Strip,
        "sum": Sum,
        "tag_router": TagRouter,
        "uppercase": Uppercase,
    }
)
"""The built-in processor types by name; plugins cannot replace them."""

_Problem = tuple[str, str]  # (key the problem is about, sentence)


class _Entry(NamedTuple):
    """A processor type and what its signature says about its options."""

    factory: ProcessorFactory
    options: tuple[str, ...] | None  # None: the factory takes **kwargs, any key goes
    required: tuple[str, ...]
    wants_registry: bool

    @classmethod
    def of(cls, factory: ProcessorFactory) -> _Entry:
        """Read the option names off the factory's signature."""
        import inspect  # only once a processor is checked or built

        try:
            params = list(inspect.signature(factory).parameters.values())
        except (TypeError, ValueError):
            return cls(factory, None, (), wants_registry=False)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        named = [p for p in params if p.kind in kinds and p.name != REGISTRY_PARAMETER]
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        return cls(
            factory,
            None if takes_any else tuple(sorted(p.name for p in named)),
            tuple(p.name for p in named if p.default is inspect.Parameter.empty),
            wants_registry=any(p.name == REGISTRY_PARAMETER for p in params),
        )

    def option_problems(self, kind: str, options: Mapping[str, object]) -> list[_Problem]:
        """Return the unknown and the missing options of ``options``."""
        problems: list[_Problem] = []
        known = self.options
        if known is not None:
            listing = f"options of {kind}: {', '.join(known)}" if known else f"{kind} takes no options"
            for key in options:
                if key not in known:
                    import difflib

                    close = difflib.get_close_matches(str(key), known, n=1)
                    hint = f' (did you mean "{close[0]}"?)' if close else ""
                    problems.append((str(key), f'unknown option "{key}"{hint}; {listing}'))
        problems.extend(
            (key, f'missing required option "{key}"') for key in self.required if key not in options
        )
        return problems


class Registry:
    """Known processor types by name; checks specs and builds processors from them.

    Build one with :meth:`load` (built-ins plus the plugins installed under the
    ``foldermon.processors`` entry-point group) or :meth:`builtin`. The installed plugins are
    looked up the first time a type that is not built in is asked for (reading every
    installed package's metadata costs more than the rest of a short command), and a type's
    signature is read the first time it is used.
    """

    __slots__ = ("_broken", "_entries", "_factories", "_plugins_pending")

    def __init__(
        self,
        factories: Mapping[str, ProcessorFactory],
        broken: Mapping[str, str] | None = None,
        *,
        plugins: bool = False,
    ) -> None:
        """Register ``factories``; ``broken`` maps plugin types that failed to load to why;
        ``plugins`` adds the installed plugins when first needed."""
        self._factories = dict(factories)
        self._entries: dict[str, _Entry] = {}
        self._broken = dict(broken or {})
        self._plugins_pending = plugins

    @classmethod
    def builtin(cls) -> Registry:
        """Return a registry of the built-in types only."""
        return cls(BUILTINS)

    @classmethod
    def load(cls) -> Registry:
        """Return the built-ins plus every plugin of the ``foldermon.processors`` group.

        A plugin that fails to import is not an error here: its type is known,
        and :meth:`check` reports why it cannot be used.
        """
        return cls(BUILTINS, plugins=True)

    def _load_plugins(self) -> None:
        if not self._plugins_pending:
            return
        self._plugins_pending = False
        from importlib.metadata import entry_points  # only when a plugin is wanted

        for point in entry_points(group=ENTRY_POINT_GROUP):
            if point.name in self._factories or point.name in self._broken:
                continue  # built-ins, then the first plugin to claim a name, win
            try:
                loaded = point.load()
            except BaseException as exc:  # a broken plugin, even one calling sys.exit(), stops nothing
                if interrupts_agent(exc):
                    raise
                self._broken[point.name] = f"{type(exc).__name__}: {exc}"
                continue
            if callable(loaded):
                self._factories[point.name] = loaded
            else:
                self._broken[point.name] = f"{point.value} is a {type(loaded).__name__}, not callable"

    def _entry(self, kind: str) -> _Entry | None:
        if kind not in self._factories:
            self._load_plugins()
        entry = self._entries.get(kind)
        if entry is None and kind in self._factories:
            entry = self._entries[kind] = _Entry.of(self._factories[kind])
        return entry

    def types(self) -> list[str]:
        """Return the known type names, sorted (plugins that failed to load included)."""
        self._load_plugins()
        return sorted({*self._factories, *self._broken})

    def check(self, spec: ProcessorSpec) -> list[str]:
        """Return every problem with ``spec`` as a sentence; ``[]`` when it is valid."""
        return self.try_build(spec)[1]

    def build(self, spec: ProcessorSpec) -> Processor:
        """Return a fresh processor for ``spec``; raise ``OptionError`` if it is invalid."""
        processor, problems = self._attempt(spec)
        if processor is None:
            raise SpecError(problems[0][0], [sentence for _, sentence in problems])
        return processor

    def try_build(self, spec: ProcessorSpec) -> tuple[Processor | None, list[str]]:
        """Return a fresh processor and ``[]``, or ``None`` and every problem with ``spec``."""
        processor, problems = self._attempt(spec)
        return processor, [sentence for _, sentence in problems]

    def _attempt(self, spec: ProcessorSpec) -> tuple[Processor | None, list[_Problem]]:
        entry = self._entry(spec.type)
        if entry is None:
            return None, [("type", self._type_problem(spec.type))]
        if not isinstance(spec.options, Mapping):
            return None, [("options", "options must be a table")]
        problems = entry.option_problems(spec.type, spec.options)
        if any(key in entry.required for key, _ in problems):
            return None, problems  # the factory cannot even be called
        known = entry.options
        kwargs = {k: v for k, v in spec.options.items() if known is None or k in known}
        processor, more = self._call(entry, spec.type, kwargs)
        problems.extend(more)
        return (None if problems else processor), problems

    def _call(
        self, entry: _Entry, kind: str, kwargs: dict[str, object]
    ) -> tuple[Processor | None, list[_Problem]]:
        if entry.wants_registry:
            kwargs[REGISTRY_PARAMETER] = self
        try:
            made = entry.factory(**kwargs)
        except SpecError as exc:
            return None, [(exc.key, problem) for problem in exc.problems]
        except OptionError as exc:
            message = str(exc).removeprefix(f"option {exc.key!r}: ")
            return None, [(exc.key, f'option "{exc.key}": {message}')]
        except BaseException as exc:  # check() reports whatever a plugin raises, sys.exit() included
            if interrupts_agent(exc):
                raise
            return None, [("type", f"{kind} could not be built: {type(exc).__name__}: {exc}")]
        if not isinstance(made, Processor):
            what = type(made).__name__
            return None, [("type", f"{kind} gave a {what}, which lacks process() and finish()")]
        return made, []

    def _type_problem(self, kind: str) -> str:
        if kind in self._broken:
            return f'plugin for type "{kind}" could not be loaded: {self._broken[kind]}'
        known = self.types()
        import difflib

        close = difflib.get_close_matches(kind, known, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        return f'unknown type "{kind}"{hint}; known types: {", ".join(known)}'
