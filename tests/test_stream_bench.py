"""`bench --stream FRAMES` (issue 30's streaming bar): a layer streamed chunk by chunk on
onnxruntime (the exported step), our TVM backend on the same step, and `op.stream()` on
TVM, each checked against the reference before it is timed. No timing is asserted
(machines are noisy): what is checked is that every backend streams the offline answer
and the table's arithmetic."""
import json

import pytest
from click.testing import CliRunner

from conv1d_transpose import stream_bench
from conv1d_transpose.cli import main
from conv1d_transpose.graph.errors import ArgumentError
from conv1d_transpose.workloads import Workload


@pytest.mark.parametrize("layout, padding, dilation", [("NWC", "SAME", 1), ("NCW", "VALID", 2)])
def test_every_backend_streams_the_offline_answer(layout, padding, dilation, tmp_path):
    layer = Workload("small", batch=2, width=11, cin=6, cout=5, kernel=8, stride=4,
                     padding=padding, dilation=dilation, data_format=layout)
    document = stream_bench.run_stream_bench([layer], 3, rounds=1, cache_dir=tmp_path)
    records = document["records"]
    assert [r["backend"] for r in records] == list(stream_bench.BACKENDS)
    assert all(r["status"] == "ok" for r in records), records
    assert {r["chunks"] for r in records} == {4}  # 11 frames in chunks of 3: the last short
    base = records[0]["median_ms"]
    for r in records:
        assert r["vs_onnxruntime"] == pytest.approx(base / r["median_ms"])
        assert 0 < r["median_ms"] <= r["p90_ms"] or r["median_ms"] == r["p90_ms"]


def test_the_command_writes_its_table_and_json(tmp_path):
    path = tmp_path / "stream.json"
    result = CliRunner().invoke(main, [
        "bench", "--workload", "hifigan-up1", "--width", "12", "--stream", "5",
        "--rounds", "1", "--cache-dir", str(tmp_path / "cache"), "--json", str(path)],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "median ms a chunk" in result.output
    document = json.loads(path.read_text())
    assert document["header"]["frames"] == 5
    assert {r["status"] for r in document["records"]} == {"ok"}


def test_a_chunk_wider_than_the_layer_is_refused():
    layer = Workload("small", batch=1, width=4, cin=2, cout=2, kernel=4, stride=2)
    with pytest.raises(ArgumentError, match="has only 4 input frames"):
        stream_bench.run_stream_bench([layer], 5, rounds=1)


@pytest.mark.parametrize("frames", [0, -3])
def test_a_chunk_of_no_frames_is_refused_in_words(frames):
    layer = Workload("small", batch=1, width=4, cin=2, cout=2, kernel=4, stride=2)
    with pytest.raises(ValueError, match=f"--stream {frames}: the frames of a chunk must be "
                                         "a positive int"):
        stream_bench.run_stream_bench([layer], frames, rounds=1)
