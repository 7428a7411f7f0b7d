"""Load a user's YAML or JSON file with bounded size, depth, values and numbers, no alias bombs, one error class."""

from __future__ import annotations

import math
import re

import yaml
from yaml.events import AliasEvent, MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent, \
    SequenceStartEvent, StreamEndEvent

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_INT = 2**53
MAX_NUMBER_CHARS = 64  # longer int/float text is refused before it is converted (no big-number CPU bombs)

_TAG = "tag:yaml.org,2002:"
_AS_TEXT = {_TAG + "str", _TAG + "timestamp", _TAG + "value"}  # dates and "=" stay the text that was written
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})")  # fast path: within +-2**53 whatever the digits
# A long plain scalar that could only be a number: refused as one without running the resolver's regexes on it.
_LONG_NUMBER = re.compile(r"[-+]?[0-9.][0-9a-fA-FoOxX_:.+-]*")
# The C parser (libyaml) only scans and parses here; composing, resolving and construction are ours, below.
_Base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


class UnsafeYamlError(ValueError):
    """A file refused by load_yaml: `where` is the path of the value (None if unknown), `reason` one line,
    `source` the file."""

    source = "<input>"

    def __init__(self, where: str | None, reason: str):
        if where and len(where) > 160:
            where = where[:70] + "..." + where[-70:]
        self.where, self.reason = where, _one_line(reason)
        super().__init__(f"{where}: {self.reason}" if where else self.reason)


def _one_line(text: str, limit: int = 300) -> str:
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text)[:limit])
    return text if len(text) <= limit else text[:limit] + "..."


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_tag(tag: str) -> str:
    return _one_line("!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag, 60)


def key_path(path: str, key) -> str:
    """`path.key` for a plain key, `path['odd key']` otherwise; always one printable line."""
    if isinstance(key, str) and _BARE_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_short(key)}]"


class _Merge(str):
    """The `<<` merge key (only with aliases allowed)."""


class _Composer(_Base):
    """Builds plain data (dict, list, str, int, float, bool, None) straight from parser events, counting every
    value as it comes; an alias counts every value of what it names again, so nothing is ever expanded."""

    def __init__(self, text: str, max_depth: int, max_nodes: int, aliases: bool):
        super().__init__(text)
        self.max_depth, self.max_nodes, self.aliases = max_depth, max_nodes, aliases
        self.nodes, self.deepest, self.where = 0, -1, "(top level)"
        self.anchors: dict[str, tuple[object, int, int]] = {}  # name -> (value, values in it, its nesting)

    def fail(self, where: str, reason: str):
        raise UnsafeYamlError(where or "(top level)", reason)

    def document(self):
        self.get_event()  # stream start
        if self.check_event(StreamEndEvent):
            return None
        self.get_event()  # document start
        data = self.value("", 0)
        self.get_event()  # document end
        if not self.check_event(StreamEndEvent):
            self.fail("", "expected a single YAML document, found another one")
        return data

    def count(self, path: str, nodes: int):
        self.nodes += nodes
        if self.nodes > self.max_nodes:
            counted = " (every use of an alias counted)" if self.anchors else ""
            self.fail(path, f"more than {self.max_nodes} values in the file{counted}")

    def value(self, path: str, depth: int):
        """The next value; `depth` is the number of lists and mappings around it."""
        self.where = path or "(top level)"
        event = self.get_event()
        self.count(path, 1)
        if isinstance(event, AliasEvent):
            return self.alias(event.anchor, path, depth)
        anchor = event.anchor
        if anchor is not None:
            if not self.aliases:
                self.fail(path, f"anchors are not allowed (&{_one_line(anchor, 40)})")
            if anchor in self.anchors:
                self.fail(path, f"anchor &{_one_line(anchor, 40)} is defined twice")
            nodes, deepest, self.deepest = self.nodes - 1, self.deepest, -1
        result = self.build(event, path, depth)
        if anchor is not None:
            nesting = self.deepest - depth if self.deepest >= 0 else -1
            self.anchors[anchor] = (result, self.nodes - nodes, nesting)
            self.deepest = max(deepest, self.deepest)
        return result

    def alias(self, anchor: str, path: str, depth: int):
        if not self.aliases:
            self.fail(path, f"aliases are not allowed (*{_one_line(anchor, 40)})")
        if anchor not in self.anchors:  # also an alias inside its own anchor: no recursive data
            self.fail(path, f"alias *{_one_line(anchor, 40)} names no complete anchor before it")
        result, nodes, nesting = self.anchors[anchor]
        self.count(path, nodes - 1)
        if nesting >= 0 and depth + nesting >= self.max_depth:
            self.fail(path, f"nested deeper than {self.max_depth} levels (through alias *{_one_line(anchor, 40)})")
        if nesting >= 0:
            self.deepest = max(self.deepest, depth + nesting)
        return result

    def build(self, event, path: str, depth: int):
        if isinstance(event, ScalarEvent):
            return self.scalar(event, path)
        if depth >= self.max_depth:
            self.fail(path, f"nested deeper than {self.max_depth} levels")
        self.deepest = max(self.deepest, depth)
        if isinstance(event, SequenceStartEvent):
            self.collection_tag(event, path, "seq")
            items: list = []
            while not self.check_event(SequenceEndEvent):
                items.append(self.value(f"{path}[{len(items)}]", depth + 1))
            self.get_event()
            return items
        if isinstance(event, MappingStartEvent):
            self.collection_tag(event, path, "map")
            mapping: dict = {}
            merged: dict | None = None
            while not self.check_event(MappingEndEvent):
                key = self.key(path, depth)
                where = key_path(path, key)
                if key in mapping or (merged is not None and isinstance(key, _Merge)):
                    self.fail(where, "duplicate key")
                if isinstance(key, _Merge):
                    merged = self.merge(self.value(where, depth + 1), where)
                else:
                    mapping[key] = self.value(where, depth + 1)
            self.get_event()
            return mapping if merged is None else {**merged, **mapping}
        self.fail(path, f"unexpected {type(event).__name__}")

    def merge(self, value, where: str) -> dict:
        """`<<: *a` or `<<: [*a, *b]`: the keys of those mappings (the first wins), under the explicit ones."""
        out: dict = {}
        for part in value if isinstance(value, list) else [value]:
            if not isinstance(part, dict):
                self.fail(where, "merge (<<) expects a mapping or a list of mappings")
            out.update({k: v for k, v in part.items() if k not in out})
        return out

    def key(self, path: str, depth: int) -> str:
        if not self.check_event(ScalarEvent, AliasEvent):
            self.fail(path, "mapping keys must be strings, found a nested list or mapping as a key")
        event = self.peek_event()
        if self.aliases and isinstance(event, ScalarEvent) and event.value == "<<" and event.tag is None \
                and event.anchor is None and event.implicit[0]:
            self.get_event()
            self.count(path, 1)
            return _Merge("<<")
        key = self.value(path, depth + 1)
        if not isinstance(key, str):
            self.fail(path, f"mapping keys must be strings, got the {type(key).__name__} key {_short(key)}")
        return key

    def collection_tag(self, event, path: str, kind: str):
        if event.tag not in (None, "!", _TAG + kind):
            self.fail(path, f"tag {_show_tag(event.tag)} is not allowed")

    def scalar(self, event, path: str):
        tag, text = event.tag, event.value
        if tag is None and event.implicit[0] and _PLAIN_INT.fullmatch(text):
            return int(text)
        if tag is None and event.implicit[0] and len(text) > MAX_NUMBER_CHARS:
            tag = _TAG + ("int" if _LONG_NUMBER.fullmatch(text) else "str")
        elif tag is None or tag == "!":
            tag = self.resolve(yaml.ScalarNode, text, event.implicit)
        if tag in _AS_TEXT:
            return text
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            if text.lower() not in self.bool_values:
                self.fail(path, f"not a boolean: {_short(text)}")
            return self.bool_values[text.lower()]
        if tag not in (_TAG + "int", _TAG + "float"):
            self.fail(path, f"tag {_show_tag(tag)} is not allowed")
        if len(text) > MAX_NUMBER_CHARS:
            self.fail(path, f"number of more than {MAX_NUMBER_CHARS} characters: {_short(text)}")
        node = yaml.ScalarNode(tag, text)
        try:
            number = self.construct_yaml_int(node) if tag.endswith("int") else self.construct_yaml_float(node)
        except (ValueError, IndexError, OverflowError):
            self.fail(path, f"not a valid {tag[len(_TAG):]}: {_short(text)}")
        if isinstance(number, int) and not -MAX_INT <= number <= MAX_INT:
            self.fail(path, f"integer {_short(text)} is beyond +-2**53")
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(path, f"number {_short(text)} is not finite")
        return number


def load_yaml(data: bytes | str, source: str = "<input>", max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES, aliases: bool = False) -> object:
    """Parse one YAML (or JSON) document from an untrusted file into dicts with string keys, lists, str, int,
    float, bool and None; anything else - too big or deep, bad UTF-8, tags, odd keys or numbers, anchors and
    aliases (unless `aliases`: then each use counts all its values again, so an alias bomb is refused without
    being expanded, and `<<` merges work) - raises UnsafeYamlError. `source` names the file for the caller."""
    try:
        return _load(data, max_bytes, max_depth, max_nodes, aliases)
    except UnsafeYamlError as exc:
        exc.source = source
        raise


def _load(data: bytes | str, max_bytes: int, max_depth: int, max_nodes: int, aliases: bool) -> object:
    if isinstance(data, str):
        if len(data) > max_bytes:
            raise UnsafeYamlError(None, f"at most {max_bytes} bytes expected, got more")
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UnsafeYamlError(None, f"not UTF-8 text: unencodable character at offset {exc.start}") from None
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeYamlError(None, f"expected bytes or text, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise UnsafeYamlError(None, f"at most {max_bytes} bytes expected, got {len(data)}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeYamlError(None, f"not UTF-8: invalid byte 0x{data[exc.start]:02x} at byte offset {exc.start}") \
            from None
    loader = None
    try:
        loader = _Composer(text.removeprefix("\ufeff"), max_depth, max_nodes, aliases)
        return loader.document()
    except UnsafeYamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise UnsafeYamlError(None, f"valid YAML expected ({problem}{at})") from None
    except yaml.reader.ReaderError as exc:
        raise UnsafeYamlError(None, f"valid YAML expected ({exc.reason} at offset {exc.position})") from None
    except yaml.YAMLError as exc:
        raise UnsafeYamlError(None, f"valid YAML expected ({exc})") from None
    except Exception as exc:  # a last resort (RecursionError, MemoryError...): the checks above leave nothing
        raise UnsafeYamlError(loader and loader.where, f"unreadable ({type(exc).__name__}: {exc})") from None
    finally:
        if loader is not None:
            loader.dispose()
