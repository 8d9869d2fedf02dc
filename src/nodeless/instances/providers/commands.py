"""How a simulated container behaves, read from the command its manifest gives it.

The simulated provider runs no processes, yet Jobs, restart policies and
CrashLoopBackOff must behave as they would on real containers. So the
``command``/``args`` a manifest already carries are read the way a very small
shell would read them, for timing only: ``sleep 5; exit 3`` runs five seconds
and exits 3, ``until nslookup db; do sleep 2; done`` (an init container
waiting for a dependency) finishes at once, ``while true; do ...; done`` and
any program we cannot see (a server binary, ``nginx``) run until stopped, and
``echo hi`` exits 0 at once. Nothing is executed and no variable is expanded.

What this shell understands: ``;``, newlines, ``&&``, ``||`` (``|`` and ``&``
are read as ``;``), redirections (skipped), comments, quotes, ``{ }``,
``( )``, ``if``/``elif``/``else``, ``while``/``until`` (a loop whose
condition holds runs forever, unless its body exits or breaks), ``for ... in``,
``exit``, ``exec``, ``sleep``, ``true``/``false``/``:``, ``timeout``,
``tail -f``, nested ``sh -c`` and wrappers such as ``env``, ``nohup``,
``busybox``, ``tini --``. Not understood: ``set -e``, pipes' timing,
background jobs, functions, here-documents, the time command substitutions
take. A script it cannot parse runs forever, the safe guess for something we
cannot see. Anything else can be spelled out with env
``NODELESS_SIM_EXIT="code=3,after=5s"``, which overrides the command.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nodeless.api import durations

EXIT_ENV = "NODELESS_SIM_EXIT"
IGNORE_SIGTERM_ENV = "NODELESS_SIM_IGNORE_SIGTERM"

FOREVER = math.inf


@dataclasses.dataclass(frozen=True, slots=True)
class ExitBehaviour:
    """When a simulated container exits on its own, and with which code.

    ``after`` is seconds of running before the exit; ``math.inf`` means the
    container runs until it is stopped (and ``code`` is then meaningless).
    """

    code: int = 0
    after: float = 0.0
    ignores_sigterm: bool = False

    @property
    def forever(self) -> bool:
        return math.isinf(self.after)


RUNS_FOREVER = ExitBehaviour(0, FOREVER)


# --- durations ---

# GNU sleep's day beside Go's units
_UNITS = {**durations.GO_UNITS, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: plain seconds ("5", "0.5"), Go-style ("5s", "1m30s",
    "250ms") or GNU sleep's ("2d"); "inf"/"infinity" is ``math.inf``."""
    text = text.strip()
    if text.lower() in ("inf", "infinity"):
        return FOREVER
    try:
        seconds = float(text)
    except ValueError:
        return durations.seconds(text, _UNITS)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}")
    return seconds


# --- the explicit form ---


def parse_exit_spec(spec: str) -> ExitBehaviour:
    """Read ``code=3,after=5s`` (both optional; ``after=never`` runs forever)."""
    code, after = 0, 0.0
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep:
            raise ValueError(f"{EXIT_ENV}: expected key=value, got {part!r}")
        if key == "code":
            try:
                code = int(value)
            except ValueError:
                raise ValueError(f"{EXIT_ENV}: code must be an integer, got {value!r}") from None
            if not 0 <= code <= 255:
                raise ValueError(f"{EXIT_ENV}: code must be 0..255, got {code}")
        elif key == "after":
            after = FOREVER if value.lower() == "never" else parse_duration(value)
        else:
            raise ValueError(f"{EXIT_ENV}: unknown key {key!r} (expected code, after)")
    return ExitBehaviour(code, after)


def container_behaviour(container: Mapping[str, Any]) -> ExitBehaviour:
    """The behaviour of one container of a pod spec: its env override, else its
    command and args (``args`` alone replace the image's CMD, so they are read
    as the command line). Raises ``ValueError`` for a malformed override."""
    env = {
        str(e.get("name")): str(e.get("value", ""))
        for e in container.get("env") or ()
        if isinstance(e, Mapping) and "value" in e
    }
    argv = tuple(str(a) for a in (container.get("command") or ()))
    argv += tuple(str(a) for a in (container.get("args") or ()))
    ignores = env.get(IGNORE_SIGTERM_ENV, "").strip().lower() in ("true", "1", "yes")
    return _behaviour(argv, env.get(EXIT_ENV), ignores)


@functools.lru_cache(maxsize=1024)
def _behaviour(
    argv: tuple[str, ...], exit_spec: str | None, ignores_sigterm: bool
) -> ExitBehaviour:
    """Cached: the replicas of one workload share their command, and a scale
    test creates thousands of them."""
    parsed = parse_exit_spec(exit_spec) if exit_spec is not None else parse_command(argv)
    return ExitBehaviour(parsed.code, parsed.after, ignores_sigterm)


def parse_command(argv: Sequence[str]) -> ExitBehaviour:
    """The behaviour of a container whose command line is ``argv``; an empty
    command (the image's own entrypoint, which we cannot see) runs forever."""
    if not argv:
        return RUNS_FOREVER
    try:
        result = _run_simple(list(argv), 0)
    except _Unparseable:
        return RUNS_FOREVER
    if math.isinf(result.seconds):
        return RUNS_FOREVER
    return ExitBehaviour(result.status & 0xFF, result.seconds)


# --- a tiny shell, for timing only ---


class _Unparseable(Exception):
    pass


class _Control(enum.Enum):
    NONE = enum.auto()
    EXIT = enum.auto()
    BREAK = enum.auto()


@dataclasses.dataclass(frozen=True, slots=True)
class _Result:
    status: int
    seconds: float
    control: _Control = _Control.NONE


_NEVER_ENDS = _Result(0, FOREVER)

_OPERATORS = (
    "&&",
    "||",
    ";;",
    ">>",
    "<<",
    ">&",
    "<&",
    "&>",
    "\n",
    ";",
    "&",
    "|",
    "<",
    ">",
    "(",
    ")",
)
_REDIRECTIONS = frozenset({">>", "<<", ">&", "<&", "&>", "<", ">"})


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    text: str
    operator: bool


def _tokenize(script: str) -> list[_Token]:
    """Words and operators of ``script`` with quotes removed."""
    tokens: list[_Token] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(script)

    def flush() -> None:
        nonlocal in_word
        if in_word:
            tokens.append(_Token("".join(word), False))
        word.clear()
        in_word = False

    while i < n:
        ch = script[i]
        if ch in " \t\r":
            flush()
            i += 1
        elif ch == "\\":
            if script.startswith("\\\n", i):  # line continuation
                i += 2
                continue
            word.append(script[i + 1 : i + 2])
            in_word = True
            i += 2
        elif ch == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise _Unparseable("unterminated '")
            word.append(script[i + 1 : end])
            in_word = True
            i = end + 1
        elif ch == '"':
            i += 1
            while i < n and script[i] != '"':
                if script[i] == "\\" and i + 1 < n and script[i + 1] in '"\\$`':
                    i += 1
                word.append(script[i])
                i += 1
            if i >= n:
                raise _Unparseable('unterminated "')
            in_word = True
            i += 1
        elif ch == "#" and not in_word:
            end = script.find("\n", i)
            i = n if end < 0 else end
        elif ch == "`" or script.startswith("$(", i):
            end = _substitution_end(script, i)
            word.append(script[i:end])
            in_word = True
            i = end
        elif ch in ";&|<>()\n":
            op = next(o for o in _OPERATORS if script.startswith(o, i))
            if op in _REDIRECTIONS and in_word and "".join(word).isdigit():
                word.clear()  # the fd number of "2>&1"
                in_word = False
            flush()
            tokens.append(_Token(op, True))
            i += len(op)
        else:
            word.append(ch)
            in_word = True
            i += 1
    flush()
    return tokens


def _substitution_end(script: str, start: int) -> int:
    """The index just past the `...` or $(...) starting at ``start``."""
    if script[start] == "`":
        end = script.find("`", start + 1)
        if end < 0:
            raise _Unparseable("unterminated `")
        return end + 1
    depth = 0
    for i in range(start + 1, len(script)):
        if script[i] == "(":
            depth += 1
        elif script[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise _Unparseable("unterminated $(")


# The syntax tree: a list is [(connector, node)], connector one of ";", "&&", "||".
@dataclasses.dataclass(slots=True)
class _Simple:
    words: list[str]


@dataclasses.dataclass(slots=True)
class _List:
    items: list[tuple[str, _Node]]
    subshell: bool = False


@dataclasses.dataclass(slots=True)
class _Loop:
    condition: _List
    body: _List
    until: bool


@dataclasses.dataclass(slots=True)
class _For:
    iterations: int
    body: _List


@dataclasses.dataclass(slots=True)
class _If:
    branches: list[tuple[_List, _List]]
    otherwise: _List | None


_Node = _Simple | _List | _Loop | _For | _If

_SEPARATORS = frozenset({";", "\n", "&", "|", ";;"})


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def at_word(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and not token.operator and token.text in words

    def expect(self, word: str) -> None:
        if not self.at_word(word):
            raise _Unparseable(f"expected {word!r}")
        self.pos += 1

    def skip_separators(self) -> None:
        while (token := self.peek()) is not None and token.operator and token.text in _SEPARATORS:
            self.pos += 1

    def parse_list(self, stop: frozenset[str] = frozenset()) -> _List:
        items: list[tuple[str, _Node]] = []
        connector = ";"
        while True:
            self.skip_separators()
            token = self.peek()
            if token is None or (token.text in stop and (not token.operator or token.text == ")")):
                return _List(items)
            items.append((connector, self.parse_command()))
            token = self.peek()
            if token is not None and token.operator and token.text in ("&&", "||"):
                connector = token.text
                self.pos += 1
                while self.at_operator("\n"):
                    self.pos += 1
            else:
                connector = ";"

    def at_operator(self, op: str) -> bool:
        token = self.peek()
        return token is not None and token.operator and token.text == op

    def parse_command(self) -> _Node:
        token = self.peek()
        assert token is not None
        if token.operator and token.text == "(":
            self.pos += 1
            body = self.parse_list(frozenset({")"}))
            if not self.at_operator(")"):
                raise _Unparseable("expected )")
            self.pos += 1
            body.subshell = True
            return body
        if token.operator:
            raise _Unparseable(f"unexpected {token.text!r}")
        if token.text in ("while", "until"):
            self.pos += 1
            condition = self.parse_list(frozenset({"do"}))
            self.expect("do")
            body = self.parse_list(frozenset({"done"}))
            self.expect("done")
            return _Loop(condition, body, until=token.text == "until")
        if token.text == "for":
            self.pos += 1
            self.pos += 1  # the loop variable
            iterations = 0
            if self.at_word("in"):
                self.pos += 1
                while (t := self.peek()) is not None and not t.operator:
                    iterations += 1
                    self.pos += 1
            self.skip_separators()
            self.expect("do")
            body = self.parse_list(frozenset({"done"}))
            self.expect("done")
            return _For(iterations, body)
        if token.text == "if":
            self.pos += 1
            branches: list[tuple[_List, _List]] = []
            otherwise: _List | None = None
            while True:
                condition = self.parse_list(frozenset({"then"}))
                self.expect("then")
                branches.append((condition, self.parse_list(frozenset({"elif", "else", "fi"}))))
                if self.at_word("elif"):
                    self.pos += 1
                    continue
                if self.at_word("else"):
                    self.pos += 1
                    otherwise = self.parse_list(frozenset({"fi"}))
                self.expect("fi")
                return _If(branches, otherwise)
        if token.text == "{":
            self.pos += 1
            group = self.parse_list(frozenset({"}"}))
            self.expect("}")
            return group
        words: list[str] = []
        while (t := self.peek()) is not None:
            if not t.operator:
                words.append(t.text)
                self.pos += 1
            elif t.text in _REDIRECTIONS:
                self.pos += 2  # the operator and its target
            else:
                break
        return _Simple(words)


def _run_script(script: str) -> _Result:
    parser = _Parser(_tokenize(script))
    tree = parser.parse_list()
    if parser.peek() is not None:
        raise _Unparseable(f"unexpected {parser.peek()}")
    return _run(tree, 0)


def _run(node: _Node, status: int) -> _Result:
    """Run ``node`` after a command that ended with ``status``."""
    if isinstance(node, _Simple):
        return _run_simple(node.words, status)
    if isinstance(node, _List):
        result = _run_list(node, status)
        if node.subshell and result.control is not _Control.NONE:
            return _Result(result.status, result.seconds)
        return result
    if isinstance(node, _Loop):
        return _run_loop(node, status)
    if isinstance(node, _For):
        elapsed = 0.0
        for _ in range(node.iterations):
            result = _run_list(node.body, status)
            elapsed += result.seconds
            status = result.status
            if math.isinf(elapsed):
                return _NEVER_ENDS
            if result.control is _Control.EXIT:
                return _Result(result.status, elapsed, _Control.EXIT)
            if result.control is _Control.BREAK:
                break
        return _Result(status if node.iterations else 0, elapsed)
    for condition, body in node.branches:
        tested = _run_list(condition, status)
        if tested.control is not _Control.NONE or math.isinf(tested.seconds):
            return tested
        if tested.status == 0:
            taken = _run_list(body, tested.status)
            return _Result(taken.status, tested.seconds + taken.seconds, taken.control)
        status = tested.status
    if node.otherwise is not None:
        taken = _run_list(node.otherwise, status)
        return _Result(taken.status, taken.seconds, taken.control)
    return _Result(0, 0.0)


def _run_list(node: _List, status: int) -> _Result:
    elapsed = 0.0
    for connector, child in node.items:
        if (connector == "&&" and status != 0) or (connector == "||" and status == 0):
            continue
        result = _run(child, status)
        elapsed += result.seconds
        if math.isinf(elapsed):
            return _NEVER_ENDS
        status = result.status
        if result.control is not _Control.NONE:
            return _Result(status, elapsed, result.control)
    return _Result(status, elapsed)


def _run_loop(node: _Loop, status: int) -> _Result:
    """A loop's condition and body do the same every time (nothing here has
    state), so a loop that runs its body once runs it forever unless the body
    exits or breaks."""
    tested = _run_list(node.condition, status)
    if tested.control is not _Control.NONE or math.isinf(tested.seconds):
        return tested
    if (tested.status == 0) == node.until:
        return _Result(0, tested.seconds)
    body = _run_list(node.body, tested.status)
    if math.isinf(body.seconds):
        return _NEVER_ENDS
    if body.control is _Control.EXIT:
        return _Result(body.status, tested.seconds + body.seconds, _Control.EXIT)
    if body.control is _Control.BREAK:
        return _Result(body.status, tested.seconds + body.seconds)
    return _NEVER_ENDS


_SHELLS = frozenset({"sh", "bash", "ash", "dash", "ksh", "mksh", "zsh"})
_INSTANT = frozenset(
    {
        "echo", "printf", "cat", "printenv", "date", "ls", "mkdir", "cp", "mv", "rm",
        "touch", "chmod", "chown", "ln", "export", "set", "unset", "cd", "test", "[",
        "[[", "hostname", "id", "pwd", "whoami", "uname", "grep", "sed", "awk", "head",
        "wc", "sort", "cut", "tr", "sync", "wait", "trap", "ulimit", "umask", "source",
        ".", "shift", "local", "readonly", "kill", "nslookup", "wget", "curl", "df",
        "du", "ps", "stat", "basename", "dirname", "tee", "xargs", "seq", "mkfifo",
        "continue", "getent", "dig", "nc", "sysctl", "logger", "tar", "gzip", "find",
    }
)  # fmt: skip
_WRAPPERS = frozenset({"nohup", "time", "command", "nice", "busybox", "setsid", "stdbuf"})
_INIT_WRAPPERS = frozenset({"tini", "dumb-init", "catatonit"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _run_simple(words: list[str], status: int) -> _Result:
    """One command line; ``status`` is ``$?`` (what a bare ``exit`` returns)."""
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return _Result(status, 0.0)
    name, args = posixpath.basename(words[0]), words[1:]
    if name in ("exit", "return"):
        if not args:
            return _Result(status, 0.0, _Control.EXIT)
        try:
            return _Result(int(args[0]) & 0xFF, 0.0, _Control.EXIT)
        except ValueError:
            return _Result(2, 0.0, _Control.EXIT)
    if name == "break":
        return _Result(0, 0.0, _Control.BREAK)
    if name in ("true", ":"):
        return _Result(0, 0.0)
    if name == "false":
        return _Result(1, 0.0)
    if name == "sleep":
        try:
            return _Result(0, sum(parse_duration(a) for a in args) if args else 0.0)
        except ValueError:
            return _Result(1, 0.0)
    if name == "exec":
        if not args:
            return _Result(status, 0.0)
        replaced = _run_simple(args, status)
        return _Result(replaced.status, replaced.seconds, _Control.EXIT)
    if name in _SHELLS:
        return _run_shell(args)
    if name in _WRAPPERS:
        return _run_simple(args, status) if args else _Result(0, 0.0)
    if name == "env":
        rest = [a for a in args if not a.startswith("-")]
        return _run_simple(rest, status) if rest else _Result(0, 0.0)
    if name in ("su-exec", "gosu"):
        return _run_simple(args[1:], status) if len(args) > 1 else _Result(1, 0.0)
    if name in _INIT_WRAPPERS:
        rest = args[args.index("--") + 1 :] if "--" in args else args
        while rest and rest[0].startswith("-"):
            rest = rest[1:]
        return _run_simple(rest, status) if rest else _Result(1, 0.0)
    if name == "timeout":
        return _run_timeout(args, status)
    if name == "tail":
        follows = any(
            a in ("-f", "-F")
            or a.startswith("--follow")
            or (a[:1] == "-" and "f" in a[1:] and a[1:2] != "-")
            for a in args
        )
        return _NEVER_ENDS if follows else _Result(0, 0.0)
    if name in _INSTANT:
        return _Result(0, 0.0)
    return _NEVER_ENDS  # a program we cannot see: a server, until stopped


def _run_shell(args: list[str]) -> _Result:
    """``sh [options] -c SCRIPT``: the script runs in a child shell, so its
    ``exit`` ends only the child."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-o", "+o"):
            i += 2
            continue
        if arg[:1] in "-+" and arg not in ("-", "--") and "c" in arg[1:]:
            if i + 1 >= len(args):
                return _Result(2, 0.0)
            result = _run_script(args[i + 1])
            return _Result(result.status, result.seconds)
        if arg[:1] in "-+" and arg != "--":
            i += 1
            continue
        if arg == "--":
            i += 1
        break
    if i >= len(args):
        return _Result(0, 0.0)  # reads its (empty) stdin and exits
    return _NEVER_ENDS  # a script file we cannot see


def _run_timeout(args: list[str], status: int) -> _Result:
    """``timeout [options] DURATION COMMAND...``: the command, cut off with 124."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-s", "-k", "--signal", "--kill-after") and rest:
            rest.pop(0)
    if not rest:
        return _Result(125, 0.0)
    try:
        limit = parse_duration(rest[0])
    except ValueError:
        return _Result(125, 0.0)
    result = _run_simple(rest[1:], status) if len(rest) > 1 else _Result(125, 0.0)
    if limit > 0 and result.seconds > limit:
        return _Result(124, limit)
    return _Result(result.status, result.seconds)
