"""Each TVM segment of a split timed against the same nodes on onnxruntime (issue 29).

The whole-model guard (session.py `_faster_of`) keeps or drops a split as one piece. Our
ConvTranspose layers beat onnxruntime's (EnCodec's: 7.5 ms against 9-12), but some
stride-1 Conv layers lose in NCW (EnCodec's 32 -> 64 K=1 conv at width 12000; 512
channels K=7 at width 50, 0.58x), and with them the split lost HiFi-GAN and EnCodec
whole: no node of theirs ran on our kernel. Timed one segment at a time, on the inputs the
model's own feeds give it, a segment stays on TVM only where it is faster; SplitSession
puts the others back on onnxruntime, where neighbouring nodes then share one session (one
call instead of several, and onnxruntime fuses Conv + activation there).
"""
from __future__ import annotations

import time

# Seconds of measuring per session open, all segments together: HiFi-GAN V1 has 78 TVM
# segments, and the whole-model guard after this takes ~3 s more. A session opened from
# a warm cache should not wait much longer than that; the costliest segments are timed
# first, and those the budget leaves out stay on TVM (the behaviour before per-segment
# timing, still under the whole-model guard).
BUDGET_S = 3.0
# The pause before each timed block: a fraction of `median_times`' 50 ms, which lets
# onnxruntime's spinning pool (onnxruntime alone) stop before the split runs. The
# sessions timed here do not spin (split_session.py), and TVM's pool did not slow the
# onnxruntime call right after it (an EnCodec segment: 1.27 ms with no pause, 1.77 ms
# after 10 ms, the cost of waking up that the untimed call absorbs); at 50 ms HiFi-GAN's
# 78 segments would spend 16 s asleep.
PAUSE_S = 0.002


def segment_times(parts, feeds, open_onnxruntime, times, *, budget_s: float = BUDGET_S,
                  clock=time.perf_counter) -> dict[int, dict[str, float]]:
    """Median seconds a call of each TVM segment takes on TVM and on onnxruntime.

    Args:
      parts: (placement.Segment, session) pairs in the split's order; a session has
        onnxruntime's `run(output_names, feeds)`.
      feeds: the model's inputs. They run through every part once, which gives each
        segment its own inputs; each TVM segment then runs once more, which says what it
        costs.
      open_onnxruntime: Segment -> an onnxruntime session of its nodes alone.
      times: `split_session.median_times` or a stand-in: ({name: session}, feeds,
        budget_s=, pause_s=) -> {name: seconds}.
      budget_s: for everything here, the two runs through included.

    Returns:
      {position in `parts`: {'tvm': s, 'onnxruntime': s}} for the TVM segments measured,
      the costliest first, while `budget_s` lasted. A segment whose onnxruntime session
      cannot be made is left out.
    """
    start = clock()
    values, own = dict(feeds), []
    for segment, session in parts:
        arguments = {name: values[name] for name in segment.inputs}
        values.update(zip(segment.outputs, session.run(segment.outputs, arguments)))
        own.append(arguments)
    cost = {}
    for position, (segment, session) in enumerate(parts):
        if segment.on_tvm:
            began = clock()
            session.run(None, own[position])
            cost[position] = clock() - began
    order = sorted(cost, key=cost.get, reverse=True)
    measured = {}
    for done, position in enumerate(order):
        left = budget_s - (clock() - start)
        if left <= 0:
            break
        segment, session = parts[position]
        try:
            other = open_onnxruntime(segment)
        except Exception:  # a sub-model onnxruntime cannot load: it stays on TVM
            continue
        measured[position] = times({"tvm": session, "onnxruntime": other}, own[position],
                                   budget_s=left / (len(order) - done), pause_s=PAUSE_S)
    return measured
