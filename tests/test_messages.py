"""The wording of inputkit's own messages, unit by unit (the catalogue runs them end to end).

Overrides Hydra cannot parse, ``devices`` with ``auto`` in a list, the synthetic source's
numeric arguments, a worker note without a traceback, and the diagnosis and live warnings
for empty chunks, stalls and the failure policies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from inputkit import ConfigError
from inputkit.config.errors import check_overrides, translate_config_errors
from inputkit.config.spec import _devices
from inputkit.observe.diagnosis import diagnose, live_warnings
from inputkit.observe.metrics import Window, window
from inputkit.observe.stats import CoordinatorStats, RunnerStats, WorkerPoolStats
from inputkit.pipeline.messages import Failure
from inputkit.pipeline.queues import QueueStats, Stage
from inputkit.sources import SyntheticSource, build_source

# Queue names as the coordinator makes them, and the stage each is made with.
STAGE_OF = {"chunks": Stage.CHUNKS, "batches": Stage.BATCHES, "device": Stage.DEVICE}

SYN = "inputkit.sources.synthetic.SyntheticSource"
FORMS = "write key=value (+key=value adds a key, ~key deletes one)"
GRAMMAR = "see https://hydra.cc/docs/1.2/advanced/override_grammar/basic"


# --- overrides ---------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["batch_size=4", "workers.count=["],
     "override: cannot parse 'workers.count=[' (its brackets do not balance): no viable "
     f"alternative at input '['; {GRAMMAR}"),
    (["batch_size"], f"override: cannot parse 'batch_size': no '='; {FORMS}; {GRAMMAR}"),
    (["a b=1"], f"override: cannot parse 'a b=1': unexpected character ' ' at position 2; {GRAMMAR}"),
    (["x=[1,2]]"], "override: cannot parse 'x=[1,2]]' (its brackets do not balance): "
                   f"extraneous input ']' expecting <EOF>; {GRAMMAR}"),
    (["a=]"], f"override: cannot parse 'a=]' (its brackets do not balance): extraneous input ']'; {GRAMMAR}"),
    (["a=b=c"], f"override: cannot parse 'a=b=c': mismatched input '=' expecting <EOF>; {GRAMMAR}"),
    (["batch_size=4", "=3"], f"override: '=3' has no key; {FORMS}"),
    (["+=3"], f"override: '+=3' has no key; {FORMS}"),
    (["~"], f"override: '~' has no key; {FORMS}"),
])
def test_a_malformed_override_is_named(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_overrides(overrides)
    assert str(info.value) == message
    assert info.value.key == "override"


def test_good_overrides_pass_the_check():
    check_overrides(["batch_size=4", "+source.x=1", "~source.fields.label", "devices=[cpu,cpu]",
                     "workers.count=1,2,4", "experiment=tiny", "source@foo=tiny"])


def test_translation_blames_the_malformed_override_it_is_given():
    with pytest.raises(ConfigError, match=r"^override: '=3' has no key"):
        with translate_config_errors(["batch_size=4", "=3"]):
            raise ValueError("Config group override must be a string or a list. Got int")


def test_translation_leaves_other_value_errors_alone():
    with pytest.raises(ValueError, match="^something else$"):
        with translate_config_errors(["=3"]):
            raise ValueError("something else")


def test_a_null_schema_key_and_an_unknown_group_option():
    import inputkit
    from inputkit.config.spec import load_spec

    with pytest.raises(ConfigError) as info:
        load_spec(inputkit.compose(["device.prefetch=null"]))
    assert str(info.value) == "device.prefetch: must be set (null is not allowed)"
    with pytest.raises(ConfigError) as info:
        inputkit.compose(["workers=nope"])
    assert "base_" not in str(info.value) and "processes" in str(info.value)


# --- devices -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [["auto", "cpu"], ["cpu", "auto"], ["auto", "auto"]])
def test_auto_must_stand_alone(value):
    with pytest.raises(ConfigError) as info:
        _devices(value)
    assert str(info.value) == ("devices: 'auto' picks the devices itself and cannot be combined with "
                               "others; use devices=auto or a list such as devices=[cuda:0,cuda:1]")


def test_auto_alone_and_device_lists_still_work():
    assert _devices("auto") == ("auto",)
    assert _devices(["auto"]) == ("auto",)
    assert _devices(["cpu", "cuda"]) == ("cpu", "cuda:0")


# --- the synthetic source's numbers -------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"length": 1.5}, "length: expected a whole number or null (endless), got 1.5"),
    ({"length": math.nan}, "length: expected a whole number or null (endless), got nan"),
    ({"length": True}, "length: expected a whole number or null (endless), got True"),
    ({"chunk_size": 1.5}, "chunk_size: expected a whole number or null (the batch size), got 1.5"),
    ({"chunk_size": 1, "chunk_size_max": 1.5}, "chunk_size_max: expected a whole number or null, "
                                                "got 1.5"),
    ({"fft_repeats": 1.5}, "fft_repeats: expected a whole number, got 1.5"),
    ({"seed": 1.5}, "seed: expected a whole number, got 1.5"),
    ({"seed": None}, "seed: expected a whole number, got None"),
    ({"seed": -1}, "seed: must be >= 0, got -1"),
    ({"latency_ms": math.nan}, "latency_ms: expected a finite number of milliseconds >= 0, got nan"),
    ({"latency_ms": -1}, "latency_ms: expected a finite number of milliseconds >= 0, got -1"),
    ({"latency_ms": "5"}, "latency_ms: expected a finite number of milliseconds >= 0, got '5'"),
    ({"cpu_ms": math.inf}, "cpu_ms: expected a finite number of milliseconds >= 0, got inf"),
    ({"cpu_ms": math.nan}, "cpu_ms: expected a finite number of milliseconds >= 0, got nan"),
])
def test_synthetic_numbers_are_checked_at_construction(kwargs, message):
    with pytest.raises(ValueError) as info:
        SyntheticSource(fields={"x": {"shape": [2]}}, **kwargs)
    assert str(info.value) == message


def test_synthetic_accepts_numpy_ints_and_fractional_milliseconds():
    src = SyntheticSource(fields={"x": {"shape": [2]}}, chunk_size=np.int64(3),
                          length=np.int32(7), latency_ms=0.5, cpu_ms=1, seed=np.uint8(2))
    assert (src.chunk_size, src.length, src.seed) == (3, 7, 2)
    assert type(src.chunk_size) is int and src.latency_s == 0.0005
    assert src.fetch(0, 8)["x"].shape == (3, 2)


def test_the_loader_names_the_source_and_the_argument():
    with pytest.raises(ConfigError) as info:
        build_source({"_target_": SYN, "fields": {"x": {"shape": [2]}}, "length": math.nan})
    assert str(info.value) == f"source: {SYN}: length: expected a whole number or null (endless), got nan"


# --- a worker's note ---------------------------------------------------------------------

def test_the_note_of_a_dead_worker_has_no_empty_traceback():
    exc = RuntimeError("worker 0 (pid 1) ... was killed by signal SIGKILL")
    with pytest.raises(RuntimeError) as info:
        Failure(exc=exc, where="worker 0 (pid 1) of input 'main'", traceback_text="").reraise()
    assert info.value.__notes__ == ["[inputkit] raised in worker 0 (pid 1) of input 'main'"]


def test_the_note_of_a_raising_worker_holds_its_traceback():
    try:
        raise KeyError("record 3")
    except KeyError as exc:
        failure = Failure.capture(exc, "worker 0 of input 'main'")
    with pytest.raises(KeyError) as info:
        failure.reraise()
    [note] = info.value.__notes__
    assert note.startswith("[inputkit] raised in worker 0 of input 'main'; its traceback:\nTraceback")
    with pytest.raises(KeyError):
        failure.reraise()  # raised twice, noted once
    assert len(info.value.__notes__) == 1


# --- diagnosis and live warnings ---------------------------------------------------------

def _queue(name: str, elapsed: float, empty: float) -> QueueStats:
    return QueueStats(name=name, capacity=16, max_bytes=None, items=0, bytes=0, peak_items=0,
                      peak_bytes=0, items_in=0, items_out=0, bytes_in=0, bytes_out=0,
                      time_full_s=0.0, time_empty_s=empty * elapsed, put_wait_s=0.0,
                      get_wait_s=0.0, elapsed_s=elapsed,
                      stage=STAGE_OF[name.rsplit('/', 1)[-1]])


def _stats(elapsed: float = 2.0, batches: int = 0, finished: bool = False, batch_empty: float = 0.2,
           **pool) -> RunnerStats:
    workers = dict(kind="thread", workers=4, fetching=0, blocked=0, idle=4, done=0, chunks=0,
                   samples=0, bytes=0, empty_chunks=0, fetch_wall_s=0.1, fetch_cpu_s=0.1,
                   fetch_p50_ms=0.0, fetch_p95_ms=0.0)
    workers.update(pool)
    coordinator = CoordinatorStats(
        input="main", device="cpu", device_index=0, batch_size=4, batches=batches,
        samples=4 * batches, bytes=0, elapsed_s=elapsed, first_batch_s=None, finished=finished,
        workers=WorkerPoolStats(**workers),
        queues=(_queue("main/0/chunks", elapsed, 1.0), _queue("main/0/batches", elapsed, batch_empty)),
        copied_batches=0, view_batches=batches, dropped_samples=0)
    return RunnerStats(elapsed_s=elapsed, coordinators=(coordinator,))


def _window(stats: RunnerStats) -> Window:
    """A 2-second window ending at ``stats`` (chunk queue always empty, batch queue 20%)."""
    return window(stats, None, window_s=2.0)


def test_only_empty_chunks_is_diagnosed_as_such():
    [line] = diagnose(_stats(empty_chunks=612_345, elapsed=1.04))
    assert line == ("input 'main' on 0:cpu: the source returned only empty chunks (612,345 in 1.0 s): "
                    "check fetch; failures.stall_timeout reports this as a stall")
    [line] = diagnose(_stats())
    assert line == "input 'main' on 0:cpu: no batches were delivered, nothing to diagnose"


def test_the_failure_policies_get_a_line_of_their_own():
    lines = diagnose(_stats(batches=10, chunks=10, samples=40, skipped_chunks=3, skipped_samples=12,
                            retries=1, restarts=2, last_error="KeyError: 'record 3'\nmore"))
    assert len(lines) == 2 and "balanced" in lines[0]
    assert lines[1] == ("input 'main' on 0:cpu: skipped 3 chunks, 12 samples (failures.on_error=skip), "
                        "retried 1 fetch (failures.on_error=retry), restarted 2 worker processes "
                        "(failures.on_worker_death=restart); last error: KeyError: 'record 3'")
    [_, line] = diagnose(_stats(batches=10, chunks=10, samples=40, skipped_chunks=1))
    assert line == "input 'main' on 0:cpu: skipped 1 chunk (failures.on_error=skip)"


def test_live_warnings_show_empty_chunks_instead_of_starvation():
    warnings = live_warnings(_window(_stats(empty_chunks=5000, batch_empty=1.0)))
    assert warnings == ["empty chunks: input 'main' on 0:cpu: the source returned only empty chunks "
                        "(5,000 so far); check fetch"]
    [warning] = live_warnings(_window(_stats(chunks=2, samples=8, empty_chunks=5000, batch_empty=1.0)))
    assert warning.startswith("starvation: input 'main' on 0:cpu:")  # some samples: plain starvation


def test_live_warnings_show_stalls_and_what_the_policies_did():
    stalls = ("worker 1 of input 'main' on device 0 (cpu) (source 'x'): inside one fetch for 61s\n"
              "  File ...", "worker 2 of input 'main' on device 0 (cpu) (source 'x'): no samples "
              "for 61s (only empty chunks or failed fetches)")
    warnings = live_warnings(_window(_stats(batches=10, chunks=10, samples=40, stalls=stalls,
                                            skipped_chunks=3, restarts=1, retries=7)))
    assert "stall: worker 1 of input 'main' on device 0 (cpu) (source 'x'): inside one fetch " \
           "for 61s" in warnings
    assert "stall: worker 2 of input 'main' on device 0 (cpu) (source 'x'): no samples for 61s " \
           "(only empty chunks or failed fetches)" in warnings
    assert "failures: input 'main' on 0:cpu: skipped 3 chunks (failures.on_error=skip), restarted " \
           "1 worker process (failures.on_worker_death=restart) so far" in warnings
    assert not [w for w in warnings if "retried" in w]  # retries that worked cost only time
    assert live_warnings(_window(_stats(batches=10, chunks=10, samples=40, stalls=stalls,
                                        finished=True))) == []


def test_a_run_too_short_to_judge_is_said_to_be_so_not_given_a_verdict():
    """Seen: a bench of 7 images ended in 71 ms with 'consumer-bound ... the consumer (the
    training step) sets the pace', from shares of two batches, beside a table that said the batch
    queue was empty 82% of the time."""
    [line] = diagnose(_stats(elapsed=0.07, batches=2, finished=True, batch_empty=0.0,
                             chunks=2, samples=8))
    assert "too short to tell which stage sets the pace" in line and "bound" not in line, line
    [longer] = diagnose(_stats(elapsed=2.0, batches=2, finished=True, batch_empty=0.0,
                               chunks=2, samples=8))  # a slow step over 2 s: judged as before
    assert "consumer-bound" in longer or "delivery-bound" in longer, longer
