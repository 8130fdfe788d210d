"""The Prometheus text of vLLM, TGI and llama.cpp read into queue, running and cache signals."""

from __future__ import annotations

import pytest

from gateway.routing.signals import Signals, parse

VLLM_V1 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B"} 12.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B"} 0.4375
# HELP vllm:num_requests_waiting_by_reason not a signal
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="x"} 0.0
"""

VLLM_OLD = """\
vllm:num_requests_running{model_name="m"} 2.0
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.91
"""

TWO_ENGINES = """\
vllm:num_requests_running{engine="0",model_name="m"} 4.0
vllm:num_requests_running{engine="1",model_name="m"} 6.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7
"""

TGI = """\
# TYPE tgi_queue_size gauge
tgi_queue_size 7
tgi_batch_current_size 4
"""

LLAMA_CPP = """\
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 5
llamacpp:kv_cache_usage_ratio 0.25
"""

HOSTILE_LABELS = """\
vllm:num_requests_waiting{model_name="a } b",note="say \\"hi\\" {x}"} 4 1700000000000
vllm:num_requests_waiting{model_name="c d"}   6e0
vllm:num_requests_running{model_name="m"} NaN
vllm:num_requests_running{model_name="m"} +Inf
vllm:num_requests_running{model_name="m"} -3
vllm:num_requests_running{model_name="unterminated 9
vllm:num_requests_running{model_name="m"}
vllm:num_requests_running
vllm:num_requests_running{model_name="m"} twelve
vllm:num_requests_running{model_name="n"} 2
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VLLM_V1, Signals(waiting=3.0, running=12.0, cache=0.4375)),
        (VLLM_OLD, Signals(waiting=0.0, running=2.0, cache=0.91)),
        (TWO_ENGINES, Signals(waiting=3.0, running=10.0, cache=0.7)),  # summed; cache: largest
        (TGI, Signals(waiting=7.0)),
        (LLAMA_CPP, Signals(waiting=5.0, running=1.0, cache=0.25)),
        (HOSTILE_LABELS, Signals(waiting=10.0, running=2.0)),
        ("vllm:kv_cache_usage_perc 1.7\n", Signals(cache=1.0)),  # a share is at most 1
        ("vllm:num_requests_waiting 0\r\n", Signals()),  # found, and zero
    ],
    ids=["vllm-v1", "vllm-v0", "two-engines", "tgi", "llama.cpp", "hostile", "over-1", "crlf"],
)
def test_signals_of_each_server(text: str, expected: Signals) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "# only comments\n", "process_cpu_seconds_total 3\n", "<html>not metrics</html>"],
)
def test_a_page_without_signals_is_none(text: str) -> None:
    assert parse(text) is None
