"""mlperf-logging's compliance rules, evaluated while the log streams past.

The official checker re-reads the log for every YAML config in its chain and compiles every CHECK
string again for every line, which makes it the slowest part of scoring. This engine loads the same
YAML files from the installed mlperf-logging package (so the rules are theirs, not a transcription),
compiles each snippet once, and feeds every record to all configs the chain can reach for ResNet at
once; at the end it replays the official queue order to merge messages exactly as the checker does.
The verdict therefore matches `mlperf_logging.compliance_checker` on the same lines; the official
checker itself still runs as a subprocess for the reported compliance column (see compliance.py).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import CodeType
from typing import Any

USAGE = "training"
# Values that the ResNet chain can enqueue: division, benchmark, optimizer.
_CHAIN_VALUES = ("closed", "open", "resnet", "lars", "sgd")
_ENQUEUE = re.compile(r"enqueue_config\('([^']*)'")


def checker_dir() -> Path:
    """The installed mlperf_logging/compliance_checker folder holding the YAML rules."""
    import mlperf_logging.compliance_checker as package

    return Path(package.__file__).resolve().parent


@dataclass
class _KeyRule:
    req: str | None
    pre: CodeType | None
    checks: list[CodeType]
    post: CodeType | None
    first_checks: list[CodeType]
    atleast: CodeType | None
    atleast_src: str
    sources: list[str]  # PRE, POST and CHECK text, to tell whether the rule keeps state


@dataclass
class _Config:
    name: str
    begin: CodeType | None
    keys: dict[str, _KeyRule]
    end_pre: CodeType | None
    end_checks: list[CodeType]
    enqueue_patterns: list[str]


def _compile(src: Any, mode: str) -> CodeType:
    return compile(str(src).strip(), "<mlperf-rule>", mode)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


@cache
def load_config(name: str) -> _Config:
    """Load and compile one YAML rule file, e.g. 'training_4.0.0/common.yaml'."""
    import yaml

    text = (checker_dir() / name).read_text()
    records = yaml.load(text, Loader=yaml.BaseLoader) or []
    begin = end_pre = None
    end_checks: list[CodeType] = []
    keys: dict[str, _KeyRule] = {}
    for record in records:
        kind = next(iter(record))
        body = record[kind]
        if kind == "BEGIN":
            begin = _compile(body["CODE"], "exec")
        elif kind == "END":
            end_pre = _compile(body["PRE"], "exec") if "PRE" in body else None
            end_checks = [_compile(c, "eval") for c in _as_list(body.get("CHECK"))]
        elif kind == "KEY":
            keys[body["NAME"]] = _KeyRule(
                req=body.get("REQ"),
                pre=_compile(body["PRE"], "exec") if body.get("PRE") else None,
                checks=[_compile(c, "eval") for c in _as_list(body.get("CHECK"))],
                post=_compile(body["POST"], "exec") if body.get("POST") else None,
                first_checks=[_compile(c, "eval") for c in _as_list(body.get("FIRST_CHECK"))],
                atleast=_compile(body["ATLEAST_ONE_CHECK"], "eval")
                if body.get("ATLEAST_ONE_CHECK") else None,
                atleast_src=str(body.get("ATLEAST_ONE_CHECK", "")),
                sources=[str(body.get("PRE", "")), str(body.get("POST", "")),
                         *map(str, _as_list(body.get("CHECK")))],
            )
    return _Config(name, begin, keys, end_pre, end_checks, _ENQUEUE.findall(text))


@cache
def reachable_configs(ruleset: str) -> tuple[str, ...]:
    """Every config the ResNet chain can enqueue from `training_<ruleset>/common.yaml`."""
    found: list[str] = []
    todo = [f"{USAGE}_{ruleset}/common.yaml"]
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        found.append(name)
        for pattern in load_config(name).enqueue_patterns:
            for value in _CHAIN_VALUES:
                candidate = pattern.format(value)
                if (checker_dir() / candidate).is_file():
                    todo.append(candidate)
    return tuple(found)


class LogLine:
    """What the official rules see as `ll`: the same attribute names as mlp_parser's LogLine."""

    __slots__ = ("key", "lineno", "timestamp", "value")

    def __init__(self, timestamp: float, key: str, value: Any, metadata: Any, lineno: int) -> None:
        self.timestamp = timestamp
        self.key = key
        self.value = {"value": value, "metadata": metadata}
        self.lineno = lineno

    @property
    def full_string(self) -> str:
        """Only messages read it, so it is made on demand."""
        return f"line {self.lineno}"


def _is_integer(value: float) -> bool:
    return abs(round(value) - value) < 0.00001


def _all_same(values: list[Any]) -> bool:
    return not values or len(values) == values.count(values[0])


class _ConfigPass:
    """One config's pass over the lines, with its own state `s`, as in configured_checks()."""

    def __init__(self, config: _Config) -> None:
        self.config = config
        self.enqueued: list[str] = []
        self.keyed: dict[str, str] = {}
        self.unkeyed: list[str] = []
        self.crash: str | None = None
        self.state: dict[str, Any] = {
            "enqueue_config": self.enqueued.append, "s": {}, "is_integer": _is_integer,
            "math": math,
        }
        if config.begin is not None:
            exec(config.begin, self.state)
        self.reported: dict[str, list[Any]] = {k: [] for k in config.keys}
        self.has_been_exec: set[str] = set()
        self.first_seen: set[str] = set()
        self.atleast: dict[str, list[Any]] = {}

    def feed(self, ll: LogLine) -> None:
        key = ll.key
        rule = self.config.keys[key]
        self.reported[key].append(ll.value["value"])
        scope = {"ll": ll, "v": ll.value}
        if key not in self.has_been_exec:
            if rule.pre is not None:
                self._exec(rule.pre, ll, scope, "PRE")
            state = self.state
            for check in rule.checks:  # _eval, inlined: this is the hot path
                try:
                    ok = eval(check, state, scope)
                except Exception:
                    ok = False
                if not ok:
                    self.keyed[key] = f"CHECK for '{key}' failed at {ll.full_string}"
            if rule.post is not None:
                self._exec(rule.post, ll, scope, "POST")
        if rule.first_checks and key not in self.first_seen:
            self.first_seen.add(key)
            for check in rule.first_checks:
                self._eval(check, ll, scope)
        if rule.atleast is not None:
            counter = self.atleast.setdefault(key, [0, rule.atleast_src])
            try:
                if eval(rule.atleast, self.state, scope):
                    counter[0] += 1
            except Exception as error:  # mlperf-logging does not catch this: it crashes
                self.crash = self.crash or f"ATLEAST_ONE_CHECK for '{key}' raised {error!r}"
        if "submission_" in key:
            self.has_been_exec.add(key)

    def _exec(self, code: CodeType | None, ll: LogLine, scope: dict[str, Any], what: str) -> None:
        if code is None:
            return
        try:
            exec(code, self.state, scope)
        except Exception:
            self.keyed[ll.key] = f"{what} code for '{ll.key}' failed at {ll.full_string}"

    def _eval(self, check: CodeType, ll: LogLine, scope: dict[str, Any]) -> None:
        try:
            ok = eval(check, self.state, scope)
        except Exception:
            ok = False
        if not ok:
            self.keyed[ll.key] = f"CHECK for '{ll.key}' failed at {ll.full_string}"

    def finish(self) -> None:
        for name, (hits, source) in self.atleast.items():
            if hits == 0:
                self.unkeyed.append(f"no '{name}' line satisfies {source.strip()}")
        alternatives: set[tuple[str, ...]] = set()
        for key, rule in self.config.keys.items():
            values = self.reported[key]
            req = rule.req or ""
            if req == "EXACTLY_ONE" and len(values) != 1 and not (values and _all_same(values)):
                self.keyed[key] = (f"Required EXACTLY_ONE occurrence of '{key}' "
                                   f"but found {len(values)}")
            elif req == "AT_LEAST_ONE" and not values:
                self.keyed[key] = f"Required AT_LEAST_ONE occurrence of '{key}' but found 0"
            elif req.startswith("AT_LEAST(") and len(values) < int(req[len("AT_LEAST("):-1]):
                self.keyed[key] = f"Required {req} occurrence of '{key}' but found {len(values)}"
            elif req.startswith("AT_LEAST_ONE_OR("):
                others = [s.strip() for s in req[len("AT_LEAST_ONE_OR("):-1].split(",")]
                alternatives.add(tuple({key, *others}))
        for alts in alternatives:
            if not any(self.reported.get(k) for k in alts):
                self.unkeyed.append("Required AT_LEAST_ONE occurrence of "
                                    + " or ".join(f"'{k}'" for k in sorted(alts)))
        if self.config.end_pre is not None:
            exec(self.config.end_pre, self.state)
        for check in self.config.end_checks:
            try:
                ok = eval(check, self.state)
            except Exception:
                ok = False
            if not ok:
                self.unkeyed.append(f"END check of {self.config.name} failed")


@dataclass
class Verdict:
    """The compliance verdict for one log and the messages that explain it."""

    valid: bool
    messages: list[str] = field(default_factory=list)
    official_crash: str | None = None  # mlperf-logging's checker would crash instead of answering


def _copy_safe(rule: _KeyRule, key: str) -> bool:
    """Whether another identical line of `key` (at another time) cannot change the verdict: the
    rule keeps no state and reads no timestamp, and counts only matter as 'one, or several
    identical' (EXACTLY_ONE tolerates identical repeats). submission_* code runs only once."""
    if "submission_" in key:
        return True
    if rule.pre or rule.post or rule.first_checks or (rule.req or "").startswith("AT_LEAST("):
        return False
    return not any("s[" in src or "ll." in src for src in rule.sources)


@cache
def _copy_unsafe_keys(ruleset: str) -> frozenset[str]:
    return frozenset(key for name in reachable_configs(ruleset)
                     for key, rule in load_config(name).keys.items() if not _copy_safe(rule, key))


_S_ITEM = re.compile(r"\bs\['(\w+)'\]")


def _s_item(node: ast.expr) -> str | None:
    """'k' for the expression `s['k']`, else None."""
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == "s" and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)):
        return node.slice.value
    return None


def _is_timestamp(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "timestamp"
            and isinstance(node.value, ast.Name) and node.value.id == "ll")


def _repeat_guard(rule: _KeyRule) -> tuple[tuple[str, bool], ...] | None:
    """When feeding a rank's copy right after its original is provably a no-op (beyond the count
    of the key): the rule has no PRE, its checks (no `:=`, no method call on `s` entries) read
    neither `ll` nor any `s` entry its POST writes, and its POST only sets `s` entries to
    constants or to min/max(itself, ll.timestamp).
    Returns the (entry, is_min) pairs to test against the copy's timestamp, or None when the
    rule does not have that shape (then every copy is fed)."""
    if rule.pre is not None:
        return None
    tests = [*rule.sources[2:], rule.atleast_src]
    reads: set[str] = set()
    for text in tests:
        found = _S_ITEM.findall(text)
        if re.search(r"\bll\b|:=", text) or len(re.findall(r"\bs\b", text)) != len(found) \
                or re.search(r"\bs\['\w+'\]\s*\.", text):  # a method call may change `s`
            return None
        reads.update(found)
    guards: list[tuple[str, bool]] = []
    for statement in ast.parse(rule.sources[1].strip()).body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            return None
        entry = _s_item(statement.targets[0])
        value = statement.value
        if entry is None or entry in reads:
            return None
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) \
                and value.func.id in ("min", "max") and len(value.args) == 2 \
                and not value.keywords and {_s_item(a) for a in value.args} == {entry, None} \
                and any(_is_timestamp(a) for a in value.args):
            guards.append((entry, value.func.id == "min"))
        elif not isinstance(value, ast.Constant):
            return None
    return tuple(guards)


@cache
def _config_guards(name: str) -> dict[str, tuple[tuple[str, bool], ...] | None]:
    return {key: _repeat_guard(rule) for key, rule in load_config(name).keys.items()}


@dataclass(frozen=True)
class _Layout:
    """What a ruleset's rules say about each key, worked out once per ruleset."""

    by_key: dict[str, tuple[str, ...]]  # key -> configs with a rule for it, in chain order
    mutating: frozenset[str]  # keys whose rules may change `s` (see _may_change_state)
    guards: dict[str, tuple[tuple[str, str, bool], ...]]  # key -> (config, s entry, is_min)


def _may_change_state(rule: _KeyRule) -> bool:
    """PRE/POST code, and (to be safe) any check that touches `s` or runs only once."""
    return bool(rule.pre or rule.post or rule.first_checks
                or any(re.search(r"\bs\b", text) for text in [*rule.sources, rule.atleast_src]))


@cache
def _ruleset_layout(ruleset: str) -> _Layout:
    by_key: dict[str, list[str]] = {}
    for name in reachable_configs(ruleset):
        for key in load_config(name).keys:
            by_key.setdefault(key, []).append(name)
    mutating = set()
    guards: dict[str, tuple[tuple[str, str, bool], ...]] = {}
    for key, names in by_key.items():
        if any(_may_change_state(load_config(name).keys[key]) for name in names):
            mutating.add(key)
        found = [(name, _config_guards(name)[key]) for name in names]
        if all(guard is not None for _, guard in found):
            guards[key] = tuple((name, entry, is_min) for name, guard in found
                                for entry, is_min in guard or ())
    return _Layout({k: tuple(v) for k, v in by_key.items()}, frozenset(mutating), guards)


class StreamingChecker:
    """Feed records in log order, then call `verdict()`."""

    def __init__(self, ruleset: str) -> None:
        self.ruleset = ruleset
        self.passes = {name: _ConfigPass(load_config(name)) for name in reachable_configs(ruleset)}
        layout = _ruleset_layout(ruleset)
        self.by_key: dict[str, list[_ConfigPass]] = {
            key: [self.passes[name] for name in names] for key, names in layout.by_key.items()}
        self.mutating = layout.mutating
        self.guards: dict[str, list[tuple[dict[str, Any], str, bool]]] = {
            key: [(self.passes[name].state["s"], entry, is_min) for name, entry, is_min in specs]
            for key, specs in layout.guards.items()}
        self.mutations = 0  # records of `mutating` keys fed: `s` changes only when this grows
        # key -> (value, metadata, mutations, guards, its `reported` lists) of its last record
        self.last_fed: dict[str, tuple[Any, Any, int, list[Any], list[list[Any]]]] = {}
        self.lines = 0
        self.parse_errors = 0
        self.crash: str | None = None

    @property
    def keys(self) -> frozenset[str]:
        """Every key some reachable rule reads."""
        return frozenset(self.by_key)

    def feed(self, time_ms: float, key: str, value: Any, metadata: Any, lineno: int) -> None:
        """Run the rules of every pass on the record with index `lineno` among the official ones.
        Records in between that were not fed (rank copies that `_copy_safe` lets skip, keys no
        rule reads) are counted all the same. A rank's copy (the very same decoded value and
        metadata) of the last record of its key, with nothing that may change `s` fed since, is
        only counted when `_repeat_guard` proves it a no-op for this timestamp."""
        self.lines = lineno + 1
        last = self.last_fed.get(key)
        if last is not None and last[1] is metadata and last[0] is value \
                and last[2] == self.mutations:
            for state, entry, is_min in last[3]:
                try:
                    if not (state[entry] <= time_ms if is_min else state[entry] >= time_ms):
                        break
                except (KeyError, TypeError):
                    break
            else:
                for reported in last[4]:
                    reported.append(value)
                return
        interested = self.by_key.get(key)
        if not interested:
            return
        ll = LogLine(time_ms, key, value, metadata, lineno)
        for config_pass in interested:
            config_pass.feed(ll)
        if key in self.mutating:
            self.mutations += 1
        guards = self.guards.get(key)
        if guards is not None:
            self.last_fed[key] = (value, metadata, self.mutations, guards,
                                  [config_pass.reported[key] for config_pass in interested])

    @property
    def copy_unsafe(self) -> frozenset[str]:
        """Keys whose repeated identical lines may change the verdict (see `_copy_safe`)."""
        return _copy_unsafe_keys(self.ruleset)

    def parse_error(self, crashes_official: bool, message: str) -> None:
        """A line mlperf-logging's parser rejects (or, for missing keys, crashes on)."""
        self.parse_errors += 1
        if crashes_official and self.crash is None:
            self.crash = message

    def verdict(self) -> Verdict:
        messages: dict[str, str] = {}
        unkeyed: list[str] = []
        crash = self.crash
        if self.parse_errors:
            unkeyed.append(f"Log lines had parsing errors ({self.parse_errors}).")
        if self.lines == 0:
            unkeyed.append("No log lines detected")
        queue = [f"{USAGE}_{self.ruleset}/common.yaml"]
        runs = 0
        finished: set[str] = set()
        while queue and runs < 50:
            name = queue.pop(0)
            runs += 1
            config_pass = self.passes.get(name)
            if config_pass is None:
                exists = (checker_dir() / name).is_file()
                problem = (f"the log asks for rules {name}, which are not ResNet rules" if exists
                           else f"the log asks for rules {name}, which do not exist")
                unkeyed.append(problem)
                crash = crash or (None if exists else f"missing config {name}")
                continue
            if name not in finished:
                config_pass.finish()
                finished.add(name)
            for key in config_pass.config.keys:
                messages.pop(key, None)
            messages.update(config_pass.keyed)
            unkeyed.extend(config_pass.unkeyed)
            crash = crash or config_pass.crash
            queue.extend(config_pass.enqueued)
        all_messages = [*messages.values(), *unkeyed]
        return Verdict(not all_messages and crash is None, all_messages, crash)
