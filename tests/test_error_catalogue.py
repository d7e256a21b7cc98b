"""The error catalogue: every bad input a user can give, and the exact message they get.

One table, one row per case: how to trigger it, the exit code (CLI) or exception type
(``Runner``), and a regex the message must match. docs/errors.md shows the same cases
with their real output; keep the two in step.

How the cases run:

- ``Cli(...)``: the real ``inputkit`` command line, in-process through typer's CliRunner
  on ``inputkit.cli.app`` (about 0.1 s a case). ``bench`` cases get ``bench.seconds=1``.
- ``Sub(...)``: the same, as ``python -m inputkit`` in a subprocess, for a few cases, to
  show the in-process runs report what the real entry point reports.
- ``Run(...)``: ``inputkit.Runner(cfg)`` iterated in-process (bad fetch outputs, plugins,
  process workers); the exception's type, message, attributes and notes are checked.

Rows marked xfail(strict=True) hold the message a user *should* get; today's output is
in the reason and in the report that came with this file. They turn into failures the
day inputkit is fixed, so the row can become a plain one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from inputkit import ConfigError, SourceError, WorkerFailure
from inputkit.planning.memory import MemoryBudgetError  # not exported by inputkit itself

TESTS = Path(__file__).resolve().parent
SYN = "inputkit.sources.synthetic.SyntheticSource"
UNKNOWN_KEY_HINT = r"unknown key; check the spelling, or run `inputkit bench --cfg job`"
SIZE_HINT = r"write e\.g\. 4096, 64MiB, 1\.5GB"
OVERRIDE_FORMS = r"write key=value \(\+key=value adds a key, ~key deletes one\)"
GRAMMAR = r"https://hydra\.cc/docs/1\.2/advanced/override_grammar/basic"
# Deterministic budget for the over-budget rows: 50% of this machine's RAM could, on a
# machine with more than 650 GB free, let the 323.6 GB plan fit.
BUDGET = "memory.budget=64GiB"


@dataclass(frozen=True)
class Cli:
    """``inputkit ARGS`` in-process; ``files`` are written to the working folder first."""

    args: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sub(Cli):
    """``python -m inputkit ARGS`` in a subprocess."""


@dataclass(frozen=True)
class Run:
    """``with Runner(cfg) as r: for batch in r.device(0)`` (``overrides`` go through compose)."""

    cfg: dict[str, Any] | None = None
    overrides: tuple[str, ...] = ()


def cli(*args: str, files: dict[str, str] | None = None) -> Cli:
    return Cli(tuple(args), files or {})


def plugin(target: str, *args: str, files: dict[str, str] | None = None) -> Cli:
    """``inputkit bench ~source +source._target_=TARGET ARGS devices=cpu`` (docs/plugins.md)."""
    return cli("bench", "~source", f"+source._target_={target}", *args, "devices=cpu", files=files)


def run(source: dict[str, Any], **top: Any) -> Run:
    cfg: dict[str, Any] = {"source": source, "devices": "cpu", "batch_size": 4,
                           "workers": {"count": 1}}
    cfg.update(top)
    return Run(cfg=cfg)


def returns(kind: str, **top: Any) -> Run:
    """fakes.Returns: one good chunk ({x: float32[4,2], y: int64[4]}), then BAD_OUTPUTS[kind]."""
    return run({"_target_": "fakes:Returns", "kind": kind}, **top)


def processes(source: dict[str, Any], **workers: Any) -> Run:
    return run(source, workers={"kind": "process", "count": 1, "start_method": "forkserver",
                                **workers}, memory={"probe": False})


def case(id: str, trigger: Cli | Run, expect: int | type[BaseException], message: str, *,
         note: str | None = None, attrs: dict[str, Any] | None = None,
         marks: Any = ()) -> Any:
    """One row. ``message``: a regex searched (multi-line) in stderr+stdout, or in str(exc).

    ``note``: a regex the worker's note (the lines after ``error: ...`` on stderr, or
    ``exc.__notes__``) must match; without it, a CLI case must print no traceback at all.
    ``attrs``: attributes the exception must have (``key``, ``source``, ``field``).
    """
    return pytest.param(trigger, expect, message, note, attrs or {}, id=id, marks=marks)


def poor(reason: str) -> Any:
    """The message below is what it should say; today it does not (see the reason)."""
    return pytest.mark.xfail(strict=True, reason=reason)


CASES = [
    # --- bad configs and overrides: exit 2, one line naming the key -------------------
    case("unknown-key", cli("bench", "batch_sze=3"), 2,
         rf"^error: batch_sze: {UNKNOWN_KEY_HINT}"),
    case("unknown-nested-key", cli("bench", "workers.cont=3"), 2,
         rf"^error: workers\.cont: {UNKNOWN_KEY_HINT}"),
    case("wrong-type", cli("bench", "batch_size=abc"), 2,
         r"^error: batch_size: Value 'abc' of type 'str' could not be converted to Integer$"),
    case("wrong-type-bool", cli("bench", "drop_last=maybe"), 2,
         r"^error: drop_last: Value 'maybe' is not a valid bool"),
    case("batch-size-0", cli("bench", "batch_size=0"), 2,
         r"^error: batch_size: must be at least 1, got 0$"),
    case("workers-count-0", cli("bench", "workers.count=0"), 2,
         r"^error: workers\.count: must be at least 1, got 0$"),
    case("device-prefetch-0", cli("bench", "device.prefetch=0"), 2,
         r"^error: device\.prefetch: must be at least 1, got 0$"),
    case("device-prefetch-null", cli("bench", "device.prefetch=null"), 2,
         r"^error: device\.prefetch: must be set \(null is not allowed\)$"),
    case("delete-schema-key", cli("bench", "~device.prefetch"), 2,
         r"^error: device\.prefetch: is part of inputkit's schema and cannot be deleted; set a value"),
    case("unknown-source-option", cli("bench", "source=nope"), 2,
         r"^error: source: no config named 'nope' in group 'source' \(available: .*synthetic.*\); "
         r"add source/nope\.yaml to your --config-dir$"),
    case("unknown-workers-option", cli("bench", "workers=nope"), 2,
         r"^error: workers: no config named 'nope' in group 'workers' "
         r"\(available: (?![^)]*base_)[^)]*processes[^)]*\); add workers/nope\.yaml"),
    case("unknown-experiment", cli("bench", "experiment=nope"), 2,
         r"^error: experiment: no config named 'nope' in group 'experiment' \(available: caffe2_oom,"),
    case("bad-device", cli("bench", "devices=gpu"), 2,
         r"^error: devices: unknown device 'gpu'; use auto, cpu, cuda:N or a list"),
    case("empty-device-list", cli("bench", "devices=[]"), 2,
         r"^error: devices: expected auto, cpu, cuda:N or a non-empty list of them, got \[\]$"),
    case("auto-in-a-list", cli("bench", "devices=[auto,cpu]"), 2,
         r"^error: devices: 'auto' picks the devices itself and cannot be combined with others; "
         r"use devices=auto or a list such as devices=\[cuda:0,cuda:1\]$"),
    case("cuda-without-gpu", cli("bench", "devices=cuda"), 2,
         r"^error: devices: cuda:0 requested, but torch\.cuda\.is_available\(\) is False"),
    case("unknown-worker-kind", cli("bench", "workers.kind=fiber"), 2,
         r"^error: workers\.kind: Invalid value 'fiber', expected one of "
         r"\[thread, inline, process, ray, auto\]$"),
    case("unknown-start-method", cli("bench", "workers.start_method=thread"), 2,
         r"^error: workers\.start_method: Invalid value 'thread', expected one of "
         r"\[fork, forkserver, spawn\]$"),
    case("bench-seconds-negative", cli("bench", "bench.seconds=-1"), 2,
         r"^error: bench\.seconds: must be positive or null, got -1"),
    case("bench-steps-0", cli("bench", "bench.steps=0"), 2,
         r"^error: bench\.steps: must be a positive number of batches or null, got 0$"),
    case("missing-target", cli("bench", "~source._target_"), 2,
         r"^error: source\._target_: missing; name the fetch plugin to use, "
         r"e\.g\. source\._target_=mypkg\.data:fetch$"),
    case("unknown-bench-input", cli("bench", "bench.input=nope"), 2,
         r"^error: bench\.input: no input named 'nope'; this config declares: main$"),
    case("override-without-value", cli("bench", "batch_size"), 2,
         rf"^error: override: cannot parse 'batch_size': no '='; {OVERRIDE_FORMS}; see {GRAMMAR}$"),
    case("override-unclosed-bracket", cli("bench", "batch_size=["), 2,
         r"^error: override: cannot parse 'batch_size=\[' \(its brackets do not balance\): "
         rf"no viable alternative at input '\['; see {GRAMMAR}$"),
    case("override-unclosed-bracket-among-others",
         cli("bench", "workers.count=2", "queue.capacity={a:[1,2]", "devices=cpu"), 2,
         r"^error: override: cannot parse 'queue\.capacity=\{a:\[1,2\]' \(its brackets do not "
         r"balance\): "),
    case("override-without-key", cli("bench", "=3"), 2,
         rf"^error: override: '=3' has no key; {OVERRIDE_FORMS}$"),
    case("override-only-a-tilde", cli("bench", "~"), 2,
         rf"^error: override: '~' has no key; {OVERRIDE_FORMS}$"),
    case("compose-override-without-key", Run(overrides=("=3",)), ConfigError,
         rf"^override: '=3' has no key; {OVERRIDE_FORMS}$",
         attrs={"key": "override"}),
    case("input-name-not-identifier", cli("bench", "+inputs={9val:{}}"), 2,
         r"^error: inputs\.9val: input names must be identifiers \(e\.g\. train, val\)$"),
    case("input-not-a-mapping", cli("bench", "+inputs.val=5"), 2,
         r"^error: inputs\.val: expected a mapping of input keys, got 5$"),
    case("named-input-out-of-range", cli("bench", "experiment=train_val", "inputs.val.batch_size=0"), 2,
         r"^error: inputs\.val\.batch_size: must be at least 1, got 0$"),
    case("missing-config-dir", cli("bench", "--config-dir", "no-such-folder"), 2,
         r"^error: --config-dir: folder .*no-such-folder does not exist$"),
    case("plan-unknown-key", cli("plan", "batch_sze=3"), 2,
         rf"^error: batch_sze: {UNKNOWN_KEY_HINT}"),
    case("unknown-key-subprocess", Sub(("bench", "batch_sze=3")), 2,
         rf"^error: batch_sze: {UNKNOWN_KEY_HINT}"),
    case("compose-unknown-key", Run(overrides=("batch_sze=3",)), ConfigError,
         rf"^batch_sze: {UNKNOWN_KEY_HINT}", attrs={"key": "batch_sze"}),
    case("plain-dict-unknown-key", Run(cfg={"source": {"_target_": SYN}, "wokers": {"count": 2}}),
         ConfigError, rf"^wokers: {UNKNOWN_KEY_HINT}", attrs={"key": "wokers"}),

    # --- bad sizes: exit 2 -------------------------------------------------------------
    case("capacity-bad-unit", cli("bench", "queue.capacity=12XB"), 2,
         rf"^error: queue\.capacity: cannot read '12XB' as a size; {SIZE_HINT}"),
    case("capacity-0", cli("bench", "queue.capacity=0"), 2,
         r"^error: queue\.capacity: must be at least 1, got 0$"),
    case("capacity-fraction", cli("bench", "queue.capacity=1.5"), 2,
         r"^error: queue\.capacity: expected a whole count \(16\) or a size \(256MiB\), got 1\.5$"),
    case("capacity-bool", cli("bench", "queue.capacity=true"), 2,
         r"^error: queue\.capacity: expected a count \(16\) or a size \(256MiB\), got True$"),
    case("batch-capacity-0", cli("bench", "queue.batch_capacity=0"), 2,
         r"^error: queue\.batch_capacity: must be at least 1, got 0$"),
    case("slot-bytes-words", cli("bench", "workers.slot_bytes=lots"), 2,
         rf"^error: workers\.slot_bytes: cannot read 'lots' as a size; {SIZE_HINT}"),
    case("slot-bytes-0", cli("bench", "workers.slot_bytes=0"), 2,
         r"^error: workers\.slot_bytes: must be a positive size, got 0$"),
    case("budget-over-100-percent", cli("bench", "memory.budget=150%"), 2,
         r"^error: memory\.budget: must be a percentage in \(0, 100\], got '150%'$"),
    case("budget-negative", cli("bench", "memory.budget=-1GiB"), 2,
         rf"^error: memory\.budget: cannot read '-1GiB' as a size; {SIZE_HINT}"),
    case("gpu-budget-words", cli("bench", "memory.gpu_budget=abc"), 2,
         rf"^error: memory\.gpu_budget: cannot read 'abc' as a size; {SIZE_HINT}"),
    case("sample-larger-than-slot",
         cli("bench", "workers=processes", "workers.count=1", "workers.slot_bytes=1000",
             "devices=cpu"), 2,
         r"^error: workers\.slot_bytes: one sample needs 12,296 bytes of shared memory but a slot "
         r"holds 1,000; raise workers\.slot_bytes$",
         note=r"raised in worker 0 \(pid \d+\) of input 'main'"),

    # --- over budget: exit 3, the plan and the fix ---------------------------------------
    case("plan-over-budget", cli("plan", "experiment=caffe2_oom", BUDGET), 3,
         r"^over budget: 323\.6 GB > .*\n"
         r"largest term: input 'main' chunk queue: 500 chunks x 128 samples x 618,348 B = 39\.6 GB "
         r"per device, x 8 devices = 316\.6 GB\nfix: Set queue\.capacity=\d+ or less"),
    case("bench-over-budget", cli("bench", "experiment=caffe2_oom", BUDGET), 3,
         r"fix: Set queue\.capacity=\d+ or less[^\n]*\n(.*\n)*"
         r"error: refused to start: the memory plan is over memory\.budget \(see `inputkit plan`\)$"),
    case("runner-over-budget",
         Run(overrides=("experiment=caffe2_oom", "devices=[cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu]", BUDGET)),
         MemoryBudgetError,
         r"^memory\.budget: the pipeline may hold 321\.7 GB of host memory but the budget is "
         r"68\.7 GB \(64GiB\); the largest term is input 'main' chunk queue: 500 chunks x 128 "
         r"samples x 618,348 B = 39\.6 GB per device\. Set queue\.capacity=\d+ or less .*"
         r"\(set memory\.allow_over_budget=true to run anyway\)$"),

    # --- plugins: a _target_ that cannot be built: exit 2 naming source / source._target_ --
    case("target-missing-module", cli("bench", "source._target_=no_such_pkg.mod:fetch"), 2,
         r"^error: source\._target_: cannot import module 'no_such_pkg\.mod' for "
         r"'no_such_pkg\.mod:fetch': No module named 'no_such_pkg'\. Is the package installed"),
    case("target-missing-attribute", plugin("fakes:nope"), 2,
         r"^error: source\._target_: module 'fakes' has no attribute 'nope' \(from 'fakes:nope'\)$"),
    case("target-not-a-name", plugin("fakes"), 2,
         r"^error: source\._target_: 'fakes' is neither an importable name \(pkg\.module:fn, "
         r"pkg\.module\.Class\) nor a known source \(arrays, hf, image_folder, "
         r"image_list, image_shards, mixture, parquet, shards, synthetic, tokens, torch_dataset\); "
         r"`inputkit sources` lists them$"),
    case("target-import-raises",
         plugin("catalogue_broken:fetch", files={"catalogue_broken.py": "RATE = 1 / 0\n"}), 2,
         r"^error: source\._target_: importing module 'catalogue_broken' for "
         r"'catalogue_broken:fetch' failed: ZeroDivisionError: division by zero$"),
    case("target-not-callable", plugin("fakes:NOT_CALLABLE"), 2,
         r"^error: source\._target_: fakes:NOT_CALLABLE is a int, not a class, function or object "
         r"with fetch\(worker_id, batch_size_hint\)$"),
    case("class-without-fetch", plugin("threading:Event"), 2,
         r"^error: source\._target_: threading:Event has neither fetch\(worker_id, batch_size_hint\) "
         r"nor read\(indices\) with __len__; see docs/plugins\.md$"),
    case("constructor-raises", plugin("fakes:NeedsFiles"), 2,
         r"^error: source: constructing fakes:NeedsFiles failed: FileNotFoundError: "
         r"no files match '/no/such/shards/\*\.npz'$"),
    case("constructor-unknown-argument", cli("bench", "+source.colour=red"), 2,
         rf"^error: source: {SYN} rejected its arguments: "
         r"SyntheticSource\.__init__\(\) got an unexpected keyword argument 'colour'$"),
    case("constructor-missing-argument", plugin("fakes:Returns"), 2,
         r"^error: source: fakes:Returns rejected its arguments: Returns\.__init__\(\) missing 1 "
         r"required positional argument: 'kind'$"),
    case("constructor-rejects-value", cli("bench", "source.chunk_size=-1"), 2,
         rf"^error: source: {SYN}: chunk_size: must be >= 0 or null \(the batch size\), got -1$"),
    case("function-unknown-argument", plugin("fakes:fetch_ones", "+source.colour=1"), 2,
         r"^error: source: fakes:fetch_ones cannot be called as fetch\(worker_id, batch_size_hint, "
         r"colour=\.\.\.\): got an unexpected keyword argument 'colour'$"),
    case("object-given-arguments", plugin("fakes:SHARED_INSTANCE", "+source.seconds=1"), 2,
         r"^error: source: fakes:SHARED_INSTANCE is an existing object; it takes no arguments "
         r"\(got seconds\)$"),
    case("bad-field-dtype", cli("bench", "source.fields.image.dtype=flot32"), 2,
         r"^error: source\.fields\.image\.dtype: 'flot32' is not a numpy dtype$"),
    case("length-not-whole", cli("bench", "source.length=1.5", "devices=cpu"), 2,
         rf"^error: source: {SYN}: length: expected a whole number or null \(endless\), got 1\.5$"),
    case("length-nan", cli("bench", "source.length=nan", "devices=cpu"), 2,
         rf"^error: source: {SYN}: length: expected a whole number or null \(endless\), got nan$"),
    case("chunk-size-not-whole", cli("bench", "source.chunk_size=1.5", "devices=cpu"), 2,
         rf"^error: source: {SYN}: chunk_size: expected a whole number or null \(the batch size\), "
         r"got 1\.5$"),
    case("latency-nan", cli("bench", "source.latency_ms=nan", "devices=cpu"), 2,
         rf"^error: source: {SYN}: latency_ms: expected a finite number of milliseconds >= 0, "
         r"got nan$"),

    # --- plugins at run time: the original exception, with a note naming the worker -----
    case("fetch-raises", plugin("fakes:Raising", "workers.count=1", "bench.steps=10"), 1,
         r"^error: KeyError: 'record 3 is corrupt'$",
         note=r"^\[inputkit\] raised in worker 0 of input 'main' on device 0 \(cpu\) "
              r"\(source 'fakes:Raising'\); its traceback:\nTraceback .*\n(.*\n)*.*fakes\.py"),
    case("fetch-raises-subprocess",
         Sub(("bench", "~source", "+source._target_=fakes:Raising", "workers.count=1", "devices=cpu")), 1,
         r"^error: KeyError: 'record 3 is corrupt'$",
         note=r"raised in worker \d+ of input 'main' on device 0 \(cpu\) \(source 'fakes:Raising'\)"),
    case("runner-fetch-raises", run({"_target_": "fakes:Raising", "after": 3}), KeyError,
         r"^'record 3 is corrupt'$",
         note=r"^\[inputkit\] raised in worker 0 of input 'main' on device 0 \(cpu\) "
              r"\(source 'fakes:Raising'\); its traceback:\n(.*\n)*.*in fetch"),
    case("probe-fetch-raises", plugin("fakes:Raising", "+source.after=1"), 1,
         r"^error: source 'fakes:Raising': the memory planner's probe fetch failed: KeyError: "
         r"'record 1 is corrupt'; fix the source, or declare them in the config with "
         r"source\._fields_=\{NAME: \{shape: \[\.\.\.\], dtype: \.\.\.\}, \.\.\.\} \(read by the "
         r"memory planner, not passed to the source\) to skip the probe$",
         note=r"^\[inputkit\] the probe's traceback:\nTraceback"),
    case("plan-probe-bad-output", cli("plan", "~source", "+source._target_=fakes:fetch_none"), 2,
         r"^error: source 'fakes:fetch_none': fetch returned None \(worker 0\); it must return"),
    case("probe-empty-chunk", plugin("fakes:fetch_empty"), 1,
         r"^error: source 'fakes:fetch_empty': the memory planner's probe fetch returned no "
         r"samples, so sizes are unknown; declare them in the config with source\._fields_="),

    # --- bad fetch outputs: SourceError naming the source and the field -----------------
    case("returns-none", returns("none"), SourceError,
         r"^source 'fakes:Returns': fetch returned None \(worker 0\); it must return a dict of "
         r"numpy arrays \(or a list of them\), or raise inputkit\.SourceExhausted",
         attrs={"source": "fakes:Returns", "field": None}, note=r"raised in worker 0"),
    case("returns-string", returns("string"), SourceError,
         r"^source 'fakes:Returns': fetch returned str \(worker 0\)"),
    case("returns-bare-array", returns("bare_array"), SourceError,
         r"^source 'fakes:Returns': fetch returned a bare array of shape \(4, 2\) \(worker 0\); "
         r"return a dict like \{'x': array\} or a list of arrays$"),
    case("returns-no-fields", returns("no_fields"), SourceError,
         r"^source 'fakes:Returns': fetch returned no fields \(worker 0\); return at least one "
         r"array, even with zero samples$"),
    case("returns-int-keys", returns("int_keys"), SourceError,
         r"^source 'fakes:Returns': field names must be strings, got 0$"),
    case("returns-scalar", returns("scalar"), SourceError,
         r"^source 'fakes:Returns', field 'x': is a scalar \(np\.float32\(1\.0\)\); every field "
         r"needs a leading sample dimension, e\.g\. np\.array\(\[label\]\)$",
         attrs={"field": "x"}),
    case("returns-0d-array", returns("zero_dim_array"), SourceError,
         r"^source 'fakes:Returns', field 'y': is a scalar \(array\(7\)\); every field needs a "
         r"leading sample dimension", attrs={"field": "y"}),
    case("returns-list-value", returns("list_value"), SourceError,
         r"^source 'fakes:Returns', field 'x': expected a numpy array, got list; convert it with "
         r"np\.asarray in fetch$", attrs={"field": "x"}),
    case("returns-torch-tensor", returns("tensor"), SourceError,
         r"^source 'fakes:Returns', field 'x': expected a numpy array, got Tensor; convert it "
         r"with np\.asarray in fetch$", attrs={"field": "x"}),
    case("returns-object-dtype", returns("object_dtype"), SourceError,
         r"^source 'fakes:Returns', field 'y': has dtype object, which holds Python objects; use "
         r"a numeric dtype$", attrs={"field": "y"}),
    case("returns-string-dtype", returns("string_dtype"), SourceError,
         r"^source 'fakes:Returns', field 'y': has dtype <U3, which cannot become a tensor; use "
         r"bool, integer, float or complex \(encode strings as integer ids or uint8 bytes\)$",
         attrs={"field": "y"}),
    case("returns-datetime-dtype", returns("datetime_dtype"), SourceError,
         r"^source 'fakes:Returns', field 'y': has dtype datetime64\[D\], which cannot become a "
         r"tensor", attrs={"field": "y"}),
    case("returns-ragged", returns("ragged"), SourceError,
         r"^source 'fakes:Returns': fields have different leading lengths \(x=4, y=3\) in one "
         r"chunk from worker 0; every field needs one entry per sample$"),
    case("returns-ragged-list", returns("ragged_list"), SourceError,
         r"^source 'fakes:Returns': fields have different leading lengths \(0=4, 1=3\)"),
    case("dtype-change", returns("dtype_change"), SourceError,
         r"^source 'fakes:Returns', field 'x': dtype changed from float32 to float64 \(worker 0\); "
         r"a field keeps one dtype$", attrs={"field": "x"}),
    case("shape-change", returns("shape_change"), SourceError,
         r"^source 'fakes:Returns', field 'x': per-sample shape changed from \[2\] to \[3\] "
         r"\(worker 0\); a field keeps one shape per sample$", attrs={"field": "x"}),
    case("missing-field-later", returns("missing_field"), SourceError,
         r"^source 'fakes:Returns', field 'y': missing from a chunk of worker 0; earlier chunks "
         r"had fields \['x', 'y'\]$", attrs={"field": "y"}),
    case("extra-field-later", returns("extra_field"), SourceError,
         r"^source 'fakes:Returns', field 'z': appeared in a chunk of worker 0 but not in earlier "
         r"chunks \(fields \['x', 'y'\]\)$", attrs={"field": "z"}),
    case("bad-output-in-bench",
         plugin("fakes:Returns", "+source.kind=ragged", "workers.count=1", "bench.steps=10"), 1,
         r"^error: source 'fakes:Returns': fields have different leading lengths \(x=4, y=3\)",
         note=r"raised in worker 0 of input 'main' on device 0 \(cpu\) \(source 'fakes:Returns'\)"),
    # Empty chunks forever (memory.probe=false, so the probe does not catch it first): the
    # bench streams nothing for bench.seconds and exits 0; the diagnosis says why.
    case("empty-chunks-forever", plugin("fakes:fetch_empty", "memory.probe=false"), 0,
         r"^diagnosis:\n  input 'main' on 0:cpu: the source returned only empty chunks "
         r"\(\d[\d,]* in \d+\.\d s\): check fetch; failures\.stall_timeout reports this as a stall$"),

    # --- process workers ---------------------------------------------------------------
    case("process-fetch-raises", processes({"_target_": "fakes:Raising", "after": 3}), KeyError,
         r"^'record 3 is corrupt'$",
         note=r"^\[inputkit\] raised in worker 0 \(pid \d+\) of input 'main' on device 0 \(cpu\) "
              r"\(source 'fakes:Raising'\); its traceback:\n(.*\n)*.*fakes\.py.*in fetch"),
    case("process-killed-by-signal", processes({"_target_": "fakes:KillsItself", "on": 3}),
         WorkerFailure,
         r"^worker 0 \(pid \d+\) of input 'main' on device 0 \(cpu\) \(source 'fakes:KillsItself'\) "
         r"was killed by signal SIGKILL \(killed, os\._exit, a crash in native code, or out of "
         r"memory; its stderr may say more\)$",
         # A process that died has no traceback to send, so the note only says where.
         note=r"^\[inputkit\] raised in worker 0 \(pid \d+\) of input 'main' on device 0 \(cpu\) "
              r"\(source 'fakes:KillsItself'\)\Z"),
    case("process-os-exit", processes({"_target_": "fakes:ExitsOnCall", "on": 3, "code": 7}),
         WorkerFailure,
         r"^worker 0 \(pid \d+\) of input 'main' .* exited with code 7"),
    case("process-bad-output", processes({"_target_": "fakes:Returns", "kind": "object_dtype"}),
         SourceError,
         r"^source 'fakes:Returns', field 'y': has dtype object, which holds Python objects",
         attrs={"field": "y"}, note=r"raised in worker 0 \(pid \d+\)"),
]



def shm_segments() -> set[str]:
    """This process's shared-memory segments (process workers name them inputkit_<pid>_...)."""
    if not os.path.isdir("/dev/shm"):
        return set()
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"inputkit_{os.getpid()}_")}


@pytest.mark.parametrize("trigger, expect, message, note, attrs", CASES)
def test_error_catalogue(request, tmp_path, monkeypatch, trigger, expect, message, note, attrs):
    if request.node.callspec.id == "cuda-without-gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)  # run directories (outputs/) land here
    monkeypatch.syspath_prepend(str(tmp_path))  # for modules in trigger.files
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # bench sets it in os.environ; undone afterwards
    segments = shm_segments()
    began = time.monotonic()
    if isinstance(trigger, Run):
        _check_runner(trigger, expect, message, note, attrs)
    else:
        for name, text in trigger.files.items():
            (tmp_path / name).write_text(text)
        _check_cli(trigger, expect, message, note, tmp_path)
    assert time.monotonic() - began < 30, "an error must arrive promptly"
    assert shm_segments() - segments == set(), "shared-memory segments left in /dev/shm"


def _cli_args(trigger: Cli) -> list[str]:
    args = list(trigger.args)
    if args[0] == "bench" and not any(a.startswith("bench.seconds=") for a in args):
        args.append("bench.seconds=1")
    return args


def _check_cli(trigger: Cli, expect: int, message: str, note: str | None, cwd: Path) -> None:
    if isinstance(trigger, Sub):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(cwd)]), "COLUMNS": "200"}
        env.pop("HYDRA_FULL_ERROR", None)
        done = subprocess.run([sys.executable, "-m", "inputkit", *_cli_args(trigger)], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=50,
                              stdin=subprocess.DEVNULL)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    else:
        from typer.testing import CliRunner

        from inputkit.cli import app

        result = CliRunner().invoke(app, _cli_args(trigger), env={"COLUMNS": "200"})
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            "an exception escaped the CLI", result.exception)
        code, stdout, stderr = result.exit_code, result.stdout, result.stderr
    shown = f"exit {code}\n--- stdout:\n{stdout[-3000:]}\n--- stderr:\n{stderr[-3000:]}"
    assert code == expect, shown
    assert re.search(message, f"{stdout.rstrip()}\n{stderr}", re.MULTILINE), shown
    if code == 0:
        return
    lines = stderr.splitlines()
    if lines:  # plan's exit 3 prints the plan and its fixes on stdout, nothing on stderr
        assert lines[0].startswith("error: ") and "Traceback" not in lines[0], shown
    if note is None:
        assert "Traceback" not in stderr and len(lines) <= 1, shown
    else:
        assert re.search(note, "\n".join(lines[1:]), re.MULTILINE), shown


def _check_runner(trigger: Run, expect: Any, message: str, note: str | None,
                  attrs: dict[str, Any]) -> None:
    import inputkit

    with pytest.raises(expect) as info:
        cfg = trigger.cfg if trigger.cfg is not None else inputkit.compose(list(trigger.overrides))
        with inputkit.Runner(cfg) as runner:
            for step, _ in enumerate(runner.device(0)):
                assert step < 1000, "no error after 1000 batches"
    exc = info.value
    assert type(exc) is expect, repr(exc)
    assert re.search(message, str(exc), re.MULTILINE), str(exc)
    for name, value in attrs.items():
        assert getattr(exc, name) == value, (name, getattr(exc, name, "<missing>"))
    notes = "\n".join(getattr(exc, "__notes__", []))
    if note is not None:
        assert re.search(note, notes, re.MULTILINE), notes
