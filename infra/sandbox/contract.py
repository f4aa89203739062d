"""The script contract (spec §4.5) as both sides of the sandbox need it: the run's inputs, limits and
outcome, the JavaScript installed in every fresh context before the script, the event object scripts
see, and the frames the pool and its workers exchange.

Only the standard library here: the worker imports this module, and every worker start pays for it.

Frames are a 4-byte big-endian length and that many bytes of JSON. The pool sends a run
(``{"function", "script", "event"}``) and, while the script waits in a host function, the host's answer
(the JSON value itself). A worker sends ``{"ready": pid}`` once, then per run any number of
``{"console": level, "line": text}`` and ``{"call": name, "args": [...]}`` and one
``{"done": {"ok", "result", "error"}}``. Text the pool sends is ASCII JSON: the QuickJS binding crashes
the process on a lone surrogate handed to JavaScript, and ASCII JSON cannot carry one unescaped.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chainloom.infra.timefmt import format_datetime

# The host functions a script can call, with the logger level of each console method.
HOST_FUNCTIONS = frozenset({"sendEvent", "executeTask", "executeTaskChain", "callTaskChain"})
CONSOLE_LEVELS = {"log": "INFO", "info": "INFO", "warn": "WARNING", "error": "ERROR", "debug": "DEBUG"}
# Console output of one run: longer lines are cut, later lines dropped (a loop logging must not flood the log).
MAX_CONSOLE_LINE_CHARS = 8 * 1024
MAX_CONSOLE_LINES = 1000
# The largest arguments (as JSON) of one host call; larger ones fail the call, as a host failure does.
MAX_HOST_ARGUMENT_BYTES = 16 * 2**20

FRAME_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class Limits:
    timeout: float = 5.0  # wall-clock seconds of the script's own running; time inside host calls excluded
    memory_bytes: int = 64 * 2**20  # QuickJS memory limit of the run's runtime
    stack_bytes: int = 1 * 2**20  # QuickJS max stack size (deep recursion → "stack overflow")
    host_call_timeout: float = 30.0  # each host call → {success:false, error:"operation timed out"}
    max_result_bytes: int = 1 * 2**20  # a larger result (as JSON) fails the run


@dataclass(frozen=True)
class Run:
    function: str  # the function's name: the global that is called if it exists
    script: str
    event: dict[str, Any]  # the event object as scripts see it (build it with event_object)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    result: dict[str, Any] | None  # the script's result object (None: no result)
    error: str  # "" when ok; else what failed ("Error: boom", "script timed out after 5s", …)
    duration_ms: float  # wall time of the whole run, host calls included


# (host function, JSON arguments) → a JSON-able answer; raising is a failed call.
Host = Callable[[str, list[Any]], Awaitable[Any]]


def event_object(event: Mapping[str, Any]) -> dict[str, Any]:
    """The public event envelope (snake_case, as the log and REST give it) → the object scripts get.

    Raises ``ValueError`` when ``data`` or ``metadata`` is not a JSON object: the spec fails such a run
    before the script starts. Missing ones are ``{}``.
    """
    created_at = event.get("created_at", "")
    if isinstance(created_at, datetime):
        created_at = format_datetime(created_at)
    fields = {"data": event.get("data", {}), "metadata": event.get("metadata", {})}
    for name, value in fields.items():
        if not isinstance(value, dict):
            raise ValueError(f"event {name} is not a JSON object")
    return {
        "id": event.get("id", ""),
        "nid": event.get("nid", 0),
        "createdAt": created_at,
        "eventType": event.get("event_type", ""),
        "eventSource": event.get("event_source", ""),
        "aggregateID": event.get("aggregate_id", ""),
        "aggregateType": event.get("aggregate_type", ""),
        "version": event.get("version", 0),
        "data": fields["data"],
        "metadata": fields["metadata"],
    }


# Evaluated first in every context; its value is the run's control function, which only the worker holds.
# It takes the two callables the worker installed (and removes them from the globals, so a script can
# reach the host only through the functions below), defines the host functions and console, and keeps
# references to the builtins it uses: a script that replaces JSON or Promise breaks only itself.
#
# control("start", eventJSON)  sets the globals `event` and `result = null`.
# control("call", nameJSON)    calls the function (or reads `result`) and answers the outcome:
#                              "n" no result, "r" + JSON of the result, "e" + JSON of the error message,
#                              "p" a promise the worker settles by running pending jobs, then asks
# control("settled", "")       for the same answer, or an error if the promise is still pending.
PRELUDE = r"""
(function (host, print) {
  "use strict";
  var global = globalThis, stringify = JSON.stringify, parse = JSON.parse, globalEval = eval;
  var apply = Reflect.apply, isArray = Array.isArray, NativePromise = Promise, then = Promise.prototype.then;
  var text = String, TypeErrorOf = TypeError, ReferenceErrorOf = ReferenceError;
  var IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
  var RESERVED = ("await break case catch class const continue debugger default delete do else enum export " +
    "extends false finally for function if implements import in instanceof interface let new null package " +
    "private protected public return static super switch this throw true try typeof var void while with yield").split(" ");
  var MAX_LINE = %(max_line)d, MAX_LINES = %(max_lines)d;
  delete global.__chainloom_host;
  delete global.__chainloom_console;

  function stringArgument(value) {
    return stringify(value === undefined || value === null ? "" : text(value));
  }
  // data and input must be objects; undefined (and null) send null. JSON must make an object of it too
  // (a Date, or a toJSON answering a string, would not).
  function objectArgument(value, fn, what) {
    if (value === undefined || value === null) return "null";
    var json = typeof value === "object" && !isArray(value) ? stringify(value) : undefined;
    if (typeof json !== "string" || json[0] !== "{") throw new TypeErrorOf(fn + ": " + what + " must be an object");
    return json;
  }
  function call(name, argumentsJSON) {
    return parse(host(name, argumentsJSON));
  }
  global.sendEvent = function sendEvent(eventType, data) {
    return call("sendEvent", "[" + stringArgument(eventType) + "," + objectArgument(data, "sendEvent", "data") + "]");
  };
  global.executeTask = function executeTask(prompt, modelName, modelProvider) {
    return call("executeTask",
      "[" + stringArgument(prompt) + "," + stringArgument(modelName) + "," + stringArgument(modelProvider) + "]");
  };
  global.executeTaskChain = function executeTaskChain(chainID, input) {
    return call("executeTaskChain",
      "[" + stringArgument(chainID) + "," + objectArgument(input, "executeTaskChain", "input") + "]");
  };
  global.callTaskChain = function callTaskChain(chainID, input) {
    return call("callTaskChain",
      "[" + stringArgument(chainID) + "," + objectArgument(input, "callTaskChain", "input") + "]");
  };

  var lines = 0;
  function show(value) {
    if (typeof value === "string") return value;
    if (value instanceof Error) return text(value);
    if (typeof value === "object" && value !== null) {
      try { var json = stringify(value); if (typeof json === "string") return json; } catch (e) {}
    }
    return text(value);
  }
  function logger(level) {
    return function () {
      if (lines > MAX_LINES) return;
      var line;
      if (++lines > MAX_LINES) {
        line = "... more console output dropped (at most " + MAX_LINES + " lines a run)";
      } else {
        var parts = [];
        for (var i = 0; i < arguments.length; i++) parts[i] = show(arguments[i]);
        line = parts.join(" ");
        if (line.length > MAX_LINE) line = line.slice(0, MAX_LINE) + "...";
      }
      print(level, stringify(line));
    };
  }
  global.console = {log: logger("log"), info: logger("info"), warn: logger("warn"), error: logger("error"),
                    debug: logger("debug")};

  function errorText(error) {
    try { return text(error); } catch (e) { return "uncaught exception"; }
  }
  function failed(message) {
    return "e" + stringify(message);
  }
  // A global the script made: a property of the global object, or a top-level let/const/class.
  function lookup(name) {
    if (IDENTIFIER.test(name) && RESERVED.indexOf(name) < 0) {
      try { return [true, globalEval(name)]; }
      catch (e) { if (e instanceof ReferenceErrorOf) return [false]; throw e; }
    }
    return name in global ? [true, global[name]] : [false];
  }
  function kind(value) {
    return isArray(value) ? "array" : value === null ? "null" : typeof value;
  }
  function answer(value) {
    if (value === undefined || value === null) return "n";
    if (value instanceof NativePromise) {
      apply(then, value, [function (v) { settled = answer(v); }, function (e) { settled = failed(errorText(e)); }]);
      return "p";
    }
    if (kind(value) !== "object") return failed("result must be an object, got " + kind(value));
    var json = stringify(value);
    if (typeof json !== "string" || json[0] !== "{") {
      return failed("result must be an object, got " + (json === undefined ? "undefined" : kind(parse(json))));
    }
    return "r" + json;
  }

  var event, settled = "";
  return function control(op, argument) {
    try {
      if (op === "start") {
        event = parse(argument);
        global.event = event;
        global.result = null;
        return "";
      }
      if (op === "settled") return settled || failed("the result promise never settled");
      var name = parse(argument), found = lookup(name);
      if (!found[0]) return answer(lookup("result")[1]);
      if (typeof found[1] !== "function") return failed(name + " is not a function");
      return answer(apply(found[1], undefined, [event]));
    } catch (e) {
      return failed(errorText(e));
    }
  };
})(__chainloom_host, __chainloom_console)
""" % {"max_line": MAX_CONSOLE_LINE_CHARS, "max_lines": MAX_CONSOLE_LINES}
