"""Label selectors and field selectors, parsed once and matched fast.

The watch cache evaluates a selector against every object of every event, so
parsing (with upstream's exact grammar and error messages, from
``k8s.io/apimachinery/pkg/labels`` and ``.../fields``) happens once and
matching is a short loop over precomputed requirements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from nodeless.api import errors

# --- label key/value validation (k8s.io/apimachinery/pkg/util/validation) ---

_QUALIFIED_NAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT: Final = f"({_QUALIFIED_NAME_FMT})?"
_LABEL_VALUE_MSG: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT: Final = f"{_DNS1123_LABEL_FMT}(\\.{_DNS1123_LABEL_FMT})*"
_DNS1123_SUBDOMAIN_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_QUALIFIED_NAME_RE: Final = re.compile(_QUALIFIED_NAME_FMT, re.ASCII)
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT, re.ASCII)
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT, re.ASCII)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Upstream's ``validation.RegexError``, double space before "or" included."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _qualified_name_errors(value: str) -> list[str]:
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        errs: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        errs = []
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errs.append("prefix part must be no more than 253 characters")
            if not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
                errs.append(
                    "prefix part "
                    + _regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com")
                )
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def _label_value_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def _field_invalid(path: str, value: object, detail: str) -> str:
    """The text of a ``field.Invalid`` error, as Go prints it."""
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else _go_list(value)
    return f"{path}: Invalid value: {shown}: {detail}"


def _go_list(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return str(value)


def _aggregate(messages: list[str]) -> str:
    """``utilerrors.NewAggregate(...).Error()``: one message bare, several bracketed."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# --- label selectors ---------------------------------------------------------

IN: Final = "in"
NOT_IN: Final = "notin"
EQUALS: Final = "="
DOUBLE_EQUALS: Final = "=="
NOT_EQUALS: Final = "!="
EXISTS: Final = "exists"
DOES_NOT_EXIST: Final = "!"
GREATER_THAN: Final = "gt"
LESS_THAN: Final = "lt"

_BINARY_OPERATORS: Final = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)
_POSITIVE: Final = frozenset({IN, EQUALS, DOUBLE_EQUALS})
_NEGATIVE: Final = frozenset({NOT_IN, NOT_EQUALS})


def _requirement_errors(key: str, operator: str, values: tuple[str, ...]) -> list[str]:
    """``labels.NewRequirement``'s validation, with its field paths."""
    errs: list[str] = []
    key_errs = _qualified_name_errors(key)
    if key_errs:
        errs.append(_field_invalid("key", key, "; ".join(key_errs)))
    if operator in (IN, NOT_IN):
        if not values:
            errs.append(
                _field_invalid(
                    "values", list(values), "for 'in', 'notin' operators, values set can't be empty"
                )
            )
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(values) != 1:
            errs.append(
                _field_invalid(
                    "values", list(values), "exact-match compatibility requires one single value"
                )
            )
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if values:
            errs.append(
                _field_invalid(
                    "values", list(values), "values set must be empty for exists and does not exist"
                )
            )
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            errs.append(
                _field_invalid(
                    "values",
                    list(values),
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                )
            )
        for i, v in enumerate(values):
            if _parse_int(v) is None:
                errs.append(
                    _field_invalid(
                        f"values[{i}]", v, "for 'Gt', 'Lt' operators, the value must be an integer"
                    )
                )
    else:
        supported = ", ".join(f'"{o}"' for o in (*_BINARY_OPERATORS, EXISTS, DOES_NOT_EXIST))
        errs.append(f'operator: Unsupported value: "{operator}": supported values: {supported}')
    for i, v in enumerate(values):
        value_errs = _label_value_errors(v)
        if value_errs:
            errs.append(_field_invalid(f"values[{i}][{key}]", v, "; ".join(value_errs)))
    return errs


def _parse_int(text: str) -> int | None:
    """Go's ``strconv.ParseInt(s, 10, 64)``: optional sign, decimal digits, 64-bit range."""
    if not re.fullmatch(r"[+-]?[0-9]+", text, re.ASCII):
        return None
    n = int(text)
    return n if -(2**63) <= n < 2**63 else None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``key op values`` term of a label selector; values are sorted and unique."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in _POSITIVE:
            value = labels.get(self.key)
            return value is not None and value in self.values
        if op in _NEGATIVE:
            value = labels.get(self.key)
            return value is None or value not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        if op in (GREATER_THAN, LESS_THAN):
            value = labels.get(self.key)
            if value is None or len(self.values) != 1:
                return False
            have, want = _parse_int(value), _parse_int(self.values[0])
            if have is None or want is None:
                return False
            return have > want if op == GREATER_THAN else have < want
        return False

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return f"!{self.key}"
        joined = ",".join(self.values)
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({joined})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(op, op)
        return f"{self.key}{symbol}{joined}"


class LabelSelector:
    """A conjunction of requirements; the empty selector matches everything.

    ``LabelSelector.nothing()`` (from a nil metav1.LabelSelector) matches nothing.
    """

    __slots__ = ("_nothing", "requirements")

    def __init__(self, requirements: Iterable[Requirement] = (), *, nothing: bool = False) -> None:
        self.requirements: tuple[Requirement, ...] = tuple(
            sorted(requirements, key=lambda r: r.key)
        )
        self._nothing = nothing

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(nothing=True)

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything (lists can skip matching)."""
        return not self.requirements and not self._nothing

    @property
    def matches_nothing(self) -> bool:
        return self._nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self._nothing:
            return False
        if labels is None:
            labels = {}
        for requirement in self.requirements:
            if not requirement.matches(labels):
                return False
        return True

    def exact_value(self, key: str) -> str | None:
        """The one value ``key`` must have, if the selector pins it (upstream RequiresExactMatch)."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in _POSITIVE and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "LabelSelector(<nothing>)" if self._nothing else f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return self.requirements == other.requirements and self._nothing == other._nothing

    def __hash__(self) -> int:
        return hash((self.requirements, self._nothing))


# Lexer tokens, named as upstream's.
_ERROR = "error"
_EOS = "end of string"
_CLOSED_PAR = ")"
_COMMA = ","
_NOT = "!"
_DOUBLE_EQUALS = "=="
_EQUALS = "="
_GREATER = ">"
_IDENTIFIER = "identifier"
_IN = "in"
_LESS = "<"
_NOT_EQUALS = "!="
_NOT_IN = "notin"
_OPEN_PAR = "("

_STRING_TO_TOKEN: Final = {
    ")": _CLOSED_PAR,
    ",": _COMMA,
    "!": _NOT,
    "==": _DOUBLE_EQUALS,
    "=": _EQUALS,
    ">": _GREATER,
    "in": _IN,
    "<": _LESS,
    "!=": _NOT_EQUALS,
    "notin": _NOT_IN,
    "(": _OPEN_PAR,
}
_SPECIAL: Final = frozenset("=!(),><")
_WHITESPACE: Final = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[str, str]]:
    """Upstream's Lexer, run to the end: (token, literal) pairs ending with EOS."""
    items: list[tuple[str, str]] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= n:
            items.append((_EOS, ""))
            return items
        if text[pos] in _SPECIAL:
            buffer = ""
            last: tuple[str, str] | None = None
            while pos < n and text[pos] in _SPECIAL:
                buffer += text[pos]
                token = _STRING_TO_TOKEN.get(buffer)
                if token is not None:
                    last = (token, buffer)
                elif last is not None:
                    break
                pos += 1
            if last is None:
                items.append((_ERROR, f"error expected: keyword found '{buffer}'"))
            else:
                items.append(last)
            continue
        start = pos
        while pos < n and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
            pos += 1
        literal = text[start:pos]
        items.append((_STRING_TO_TOKEN.get(literal, _IDENTIFIER), literal))


class _ParseError(Exception):
    pass


class _Parser:
    """Upstream's recursive-descent selector parser, message for message."""

    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.position = 0

    def _at(self, index: int, values: bool) -> tuple[str, str]:
        token, literal = self.items[min(index, len(self.items) - 1)]
        if values and token in (_IN, _NOT_IN):
            token = _IDENTIFIER
        return token, literal

    def lookahead(self, values: bool = True) -> tuple[str, str]:
        return self._at(self.position, values)

    def consume(self, values: bool = True) -> tuple[str, str]:
        self.position += 1
        return self._at(self.position - 1, values)

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token, literal = self.lookahead()
            if token in (_IDENTIFIER, _NOT):
                try:
                    requirements.append(self.parse_requirement())
                except _ParseError as exc:
                    raise _ParseError(f"unable to parse requirement: {exc}") from None
                token, literal = self.consume()
                if token == _EOS:
                    return requirements
                if token == _COMMA:
                    token2, literal2 = self.lookahead()
                    if token2 not in (_IDENTIFIER, _NOT):
                        raise _ParseError(f"found '{literal2}', expected: identifier after ','")
                else:
                    raise _ParseError(f"found '{literal}', expected: ',' or 'end of string'")
            elif token == _EOS:
                return requirements
            else:
                raise _ParseError(f"found '{literal}', expected: !, identifier, or 'end of string'")

    def parse_requirement(self) -> Requirement:
        key, operator = self.parse_key_and_infer_operator()
        if operator in (EXISTS, DOES_NOT_EXIST):
            return _new_requirement(key, operator, ())
        operator = self.parse_operator()
        if operator in (IN, NOT_IN):
            values = self.parse_values()
        else:
            values = self.parse_exact_value()
        return _new_requirement(key, operator, tuple(sorted(values)))

    def parse_key_and_infer_operator(self) -> tuple[str, str]:
        operator = ""
        token, literal = self.consume()
        if token == _NOT:
            operator = DOES_NOT_EXIST
            token, literal = self.consume()
        if token != _IDENTIFIER:
            raise _ParseError(f"found '{literal}', expected: identifier")
        key_errs = _qualified_name_errors(literal)
        if key_errs:
            raise _ParseError(_field_invalid("<nil>", literal, "; ".join(key_errs)))
        if self.lookahead()[0] in (_EOS, _COMMA) and operator != DOES_NOT_EXIST:
            operator = EXISTS
        return literal, operator

    def parse_operator(self) -> str:
        token, literal = self.consume(values=False)
        operator = {
            _IN: IN,
            _EQUALS: EQUALS,
            _DOUBLE_EQUALS: DOUBLE_EQUALS,
            _GREATER: GREATER_THAN,
            _LESS: LESS_THAN,
            _NOT_IN: NOT_IN,
            _NOT_EQUALS: NOT_EQUALS,
        }.get(token)
        if operator is None:
            raise _ParseError(f"found '{literal}', expected: {', '.join(_BINARY_OPERATORS)}")
        return operator

    def parse_values(self) -> set[str]:
        token, literal = self.consume()
        if token != _OPEN_PAR:
            raise _ParseError(f"found '{literal}' expected: '('")
        token, literal = self.lookahead()
        if token in (_IDENTIFIER, _COMMA):
            values = self.parse_identifiers_list()
            if self.consume()[0] != _CLOSED_PAR:
                raise _ParseError(f"found '{literal}', expected: ')'")
            return values
        if token == _CLOSED_PAR:
            self.consume()
            return {""}
        raise _ParseError(f"found '{literal}', expected: ',', ')' or identifier")

    def parse_identifiers_list(self) -> set[str]:
        values: set[str] = set()
        while True:
            token, literal = self.consume()
            if token == _IDENTIFIER:
                values.add(literal)
                token2, literal2 = self.lookahead()
                if token2 == _COMMA:
                    continue
                if token2 == _CLOSED_PAR:
                    return values
                raise _ParseError(f"found '{literal2}', expected: ',' or ')'")
            if token == _COMMA:
                if not values:
                    values.add("")
                token2, _ = self.lookahead()
                if token2 == _CLOSED_PAR:
                    values.add("")
                    return values
                if token2 == _COMMA:
                    values.add("")
                continue
            raise _ParseError(f"found '{literal}', expected: ',', or identifier")

    def parse_exact_value(self) -> set[str]:
        token, _ = self.lookahead()
        if token in (_EOS, _COMMA):
            return {""}
        token, literal = self.consume()
        if token == _IDENTIFIER:
            return {literal}
        raise _ParseError(f"found '{literal}', expected: identifier")


def _new_requirement(key: str, operator: str, values: tuple[str, ...]) -> Requirement:
    errs = _requirement_errors(key, operator, values)
    if errs:
        raise _ParseError(_aggregate(errs))
    return Requirement(key, operator, values)


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a ``labelSelector`` query parameter; a syntax error is a 400 BadRequest."""
    try:
        return LabelSelector(_Parser(text).parse())
    except _ParseError as exc:
        raise errors.bad_request(str(exc)) from None


_OBJECT_OPERATORS: Final = {
    "In": IN,
    "NotIn": NOT_IN,
    "Exists": EXISTS,
    "DoesNotExist": DOES_NOT_EXIST,
}


def label_selector_from_object(sel: Mapping[str, Any] | None) -> LabelSelector:
    """Convert a metav1.LabelSelector; None selects nothing and ``{}`` selects everything.

    Mirrors ``metav1.LabelSelectorAsSelector`` so controllers agree with upstream
    about which Pods a Deployment or Service owns.
    """
    if sel is None:
        return LabelSelector.nothing()
    match_labels = sel.get("matchLabels") or {}
    match_expressions = sel.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(match_expressions, list):
        raise errors.bad_request(
            "invalid label selector: matchLabels must be a map and matchExpressions a list"
        )
    requirements: list[Requirement] = []
    try:
        for key, value in match_labels.items():
            requirements.append(_new_requirement(str(key), EQUALS, (str(value),)))
        for expression in match_expressions:
            if not isinstance(expression, Mapping):
                raise _ParseError(
                    "invalid label selector: matchExpressions entries must be objects"
                )
            raw_operator = expression.get("operator", "")
            operator = (
                _OBJECT_OPERATORS.get(raw_operator) if isinstance(raw_operator, str) else None
            )
            if operator is None:
                raise _ParseError(f'"{raw_operator}" is not a valid label selector operator')
            values = expression.get("values") or []
            if not isinstance(values, list):
                raise _ParseError("invalid label selector: values must be a list")
            requirements.append(
                _new_requirement(
                    str(expression.get("key", "")),
                    operator,
                    tuple(sorted({str(v) for v in values})),
                )
            )
    except _ParseError as exc:
        raise errors.bad_request(str(exc)) from None
    return LabelSelector(requirements)


# --- field selectors -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """``field=value`` (``==`` normalises to ``=``) or ``field!=value``."""

    field: str
    operator: str
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        equal = fields.get(self.field, "") == self.value
        return equal if self.operator == "=" else not equal

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_field_value(self.value)}"


class FieldSelector:
    """A conjunction of field equality terms; the empty selector matches everything."""

    __slots__ = ("requirements",)

    def __init__(self, requirements: Iterable[FieldRequirement] = ()) -> None:
        self.requirements: tuple[FieldRequirement, ...] = tuple(requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        for requirement in self.requirements:
            if not requirement.matches(fields):
                return False
        return True

    def exact_value(self, field: str) -> str | None:
        """The value ``field`` must equal, so the server can narrow to one name or namespace."""
        for r in self.requirements:
            if r.field == field and r.operator == "=":
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self.requirements == other.requirements

    def __hash__(self) -> int:
        return hash(self.requirements)


def escape_field_value(value: str) -> str:
    """Escape ``\\``, ``,`` and ``=`` so a value round-trips through the selector syntax."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(value: str) -> str:
    if "\\" not in value and "," not in value and "=" not in value:
        return value
    out: list[str] = []
    in_slash = False
    for c in value:
        if in_slash:
            if c not in "\\,=":
                raise errors.bad_request(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c in ",=":
            # Upstream formats the rune with %v, i.e. as its code point.
            raise errors.bad_request(
                f"invalid field selector: unescaped character in value: {ord(c)}"
            )
        else:
            out.append(c)
    if in_slash:
        raise errors.bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    """Split on commas not escaped by a backslash, keeping the escapes."""
    if not text:
        return []
    terms: list[str] = []
    start = 0
    in_slash = False
    for i, c in enumerate(text):
        if in_slash:
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


_TERM_OPERATORS: Final = ("!=", "==", "=")


def _split_term(term: str) -> tuple[str, str, str] | None:
    """Split at the first operator; upstream supports no escaping on the left-hand side."""
    for i in range(len(term)):
        for op in _TERM_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def parse_field_selector(text: str, allowed: Collection[str]) -> FieldSelector:
    """Parse a ``fieldSelector`` query parameter against the kind's selectable fields."""
    requirements: list[FieldRequirement] = []
    for part in sorted(_split_terms(text)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise errors.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, raw_value = split
        value = _unescape_field_value(raw_value)
        requirements.append(FieldRequirement(field, "!=" if op == "!=" else "=", value))
    for r in requirements:
        if r.field not in allowed:
            raise errors.bad_request(f"field label not supported: {r.field}")
    return FieldSelector(requirements)


# --- selectable fields of objects ------------------------------------------------

_META_FIELDS: Final = ("metadata.name", "metadata.namespace")
_POD_FIELDS: Final = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_OBJECT_REFERENCE_FIELDS: Final = (
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
)
_CORE_EVENT_FIELDS: Final = (
    *(f"involvedObject.{f}" for f in _OBJECT_REFERENCE_FIELDS),
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_EVENTS_EVENT_FIELDS: Final = (
    *(f"regarding.{f}" for f in _OBJECT_REFERENCE_FIELDS),
    "reason",
    "reportingController",
    "type",
)

_KIND_FIELDS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("", "Pod"): _POD_FIELDS,
    ("", "Event"): _CORE_EVENT_FIELDS,
    ("events.k8s.io", "Event"): _EVENTS_EVENT_FIELDS,
    ("", "Secret"): ("type",),
    ("", "Namespace"): ("status.phase",),
    ("", "Node"): ("spec.unschedulable",),
    ("", "ReplicationController"): ("status.replicas",),
    ("apps", "ReplicaSet"): ("status.replicas",),
    ("batch", "Job"): ("status.successful",),
}


def selectable_fields(group: str, kind: str) -> frozenset[str]:
    """The field labels a ``fieldSelector`` may use for this kind."""
    return _SELECTABLE.get((group, kind), _META_ONLY)


_META_ONLY: Final = frozenset(_META_FIELDS)
_SELECTABLE: Final = {
    gk: frozenset((*_META_FIELDS, *fields)) for gk, fields in _KIND_FIELDS.items()
}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dig(obj: Mapping[str, Any], *path: str) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _text(value: Any) -> str:
    """A field value as upstream prints it: missing is "", booleans lower-case."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bool_text(value: Any) -> str:
    return "true" if value is True else "false"


def _int_text(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "0"


def _reference_fields(prefix: str, ref: Any) -> dict[str, str]:
    ref = ref if isinstance(ref, Mapping) else {}
    return {f"{prefix}.{f}": _text(ref.get(f)) for f in _OBJECT_REFERENCE_FIELDS}


def field_values(group: str, kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The selectable field values of ``obj``, missing ones as "" (upstream semantics)."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    out = {
        "metadata.name": _text(metadata.get("name")),
        "metadata.namespace": _text(metadata.get("namespace")),
    }
    key = (group, kind)
    if key == ("", "Pod"):
        spec = _mapping(obj.get("spec"))
        status = _mapping(obj.get("status"))
        pod_ips = status.get("podIPs")
        pod_ip = status.get("podIP")
        if isinstance(pod_ips, list) and pod_ips and isinstance(pod_ips[0], Mapping):
            pod_ip = pod_ips[0].get("ip")
        out.update(
            {
                "spec.nodeName": _text(spec.get("nodeName")),
                "spec.restartPolicy": _text(spec.get("restartPolicy")),
                "spec.schedulerName": _text(spec.get("schedulerName")),
                "spec.serviceAccountName": _text(spec.get("serviceAccountName")),
                "spec.hostNetwork": _bool_text(spec.get("hostNetwork")),
                "status.phase": _text(status.get("phase")),
                "status.podIP": _text(pod_ip),
                "status.nominatedNodeName": _text(status.get("nominatedNodeName")),
            }
        )
    elif key == ("", "Event"):
        out.update(_reference_fields("involvedObject", obj.get("involvedObject")))
        out["reason"] = _text(obj.get("reason"))
        out["reportingComponent"] = _text(obj.get("reportingComponent"))
        out["source"] = _text(_dig(obj, "source", "component"))
        out["type"] = _text(obj.get("type"))
    elif key == ("events.k8s.io", "Event"):
        out.update(_reference_fields("regarding", obj.get("regarding")))
        out["reason"] = _text(obj.get("reason"))
        out["reportingController"] = _text(obj.get("reportingController"))
        out["type"] = _text(obj.get("type"))
    elif key == ("", "Secret"):
        out["type"] = _text(obj.get("type"))
    elif key == ("", "Namespace"):
        out["status.phase"] = _text(_dig(obj, "status", "phase"))
    elif key == ("", "Node"):
        out["spec.unschedulable"] = _bool_text(_dig(obj, "spec", "unschedulable"))
    elif key in (("", "ReplicationController"), ("apps", "ReplicaSet")):
        out["status.replicas"] = _int_text(_dig(obj, "status", "replicas"))
    elif key == ("batch", "Job"):
        out["status.successful"] = _int_text(_dig(obj, "status", "succeeded"))
    return out
