"""The load of `bench/sidecar`: wrk driven by generated Lua scripts (JSON checks posted to the
sidecar, requests spread over many paths), redis-benchmark for the store's own limit, and a
small open-loop pacer for the overshoot runs. Every loop is bounded in time and count."""

import http.client
import os
import threading
import time

from bench.common.measure import BenchError
from tests.harness import load_tools

# Redis keys of the redis-benchmark runs (a hash tag, as the sidecar's keys have).
MANY_KEYS_PATTERN = "bench:{r:__rand_int__}"
HOT_KEY = "bench:{r:hot}"
# A stored bucket is 8 bytes of idle_at and the encoded state (≈ 24 bytes for fixed_window).
STATE_VALUE = "s" * 32


def check_body(key):
    """The body of one strict check of bucket `key`: a fixed window of 10¹² an hour, which never
    refuses, so every check writes (the success path: GET, then EVALSHA that SETs)."""
    return ('{"rule":"bench","key":%s,"algorithm":"fixed_window","limit":1000000000000,'
            '"window_ns":3600000000000}' % key)


def sidecar_script(workdir, keys, seed):
    """A wrk script posting checks: one bucket (keys == 1) or a random one of `keys`."""
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    if keys == 1:
        lines.append(f"wrk.body = '{check_body(1)}'")
    else:
        template = check_body("%d")
        lines += [f"math.randomseed({seed})",
                  "request = function()",
                  f"  return wrk.format(nil, nil, nil, string.format('{template}', math.random(0, {keys - 1})))",
                  "end"]
    return _write(workdir, f"check-{keys}.lua", lines)


def paths_script(workdir, keys, seed):
    """A wrk script spreading GETs over `keys` paths (/k/0 … /k/N-1); keys == 1: plain GET /."""
    lines = []
    if keys > 1:
        lines = [f"math.randomseed({seed})",
                 "request = function()",
                 f"  return wrk.format(nil, '/k/' .. math.random(0, {keys - 1}))",
                 "end"]
    return _write(workdir, f"paths-{keys}.lua", lines)


def _write(workdir, name, lines):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def wrk(opts, url, seconds, script=None, headers=(), core=None):
    """Closed loop: wrk -t1 on opts.connections connections for `seconds` (tests.harness.load_tools)."""
    return load_tools.wrk(url, seconds, connections=opts.connections, script=script, headers=headers,
                          core=core, binary=opts.wrk)


def populate(redis, keys):
    """Stores STATE_VALUE under the hot key and under the `keys` keys redis-benchmark draws
    (`__rand_int__` is a 12-digit zero-padded number), so that every EVALSHA below finds the
    value it expects and takes the write path, as a winning decision does."""
    script = ("for i = 0, tonumber(ARGV[2]) - 1 do "
              "redis.call('SET', string.format('bench:{r:%012d}', i), ARGV[1]) end "
              "redis.call('SET', KEYS[1], ARGV[1]) return 1")
    answer = redis.call("EVAL", script, 1, HOT_KEY, STATE_VALUE, keys)
    if answer != ":1":
        raise BenchError(f"populating Redis answered {answer!r}")


def redis_benchmark(opts, redis, command, keys, requests):
    """redis-benchmark -c 50 -P 1 (one command in flight per connection, as the sidecar's
    decisions are) of one custom command, `requests` times: returns its ops/s."""
    return load_tools.redis_benchmark(redis.port, command, requests=requests, clients=opts.redis_clients,
                                      pipeline=1, keys=keys, binary=opts.redis_benchmark, timeout=120)


def paced(targets, rate, seconds, path, headers):
    """Open loop: `rate` requests a second for `seconds` in all, dealt round-robin over
    `targets` (ports), each target on its own keep-alive connection and thread. Returns the
    status counts per target. Bounded: at most rate × seconds requests, and each thread stops
    at the deadline + 10 s whatever happens."""
    total = int(rate * seconds)
    start = time.monotonic() + 0.2
    counts = [dict() for _ in targets]

    def run(index, port):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        stop_at = start + seconds + 10
        try:
            for n in range(index, total, len(targets)):
                due = start + n / rate
                if time.monotonic() > stop_at:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    status = "error"
                counts[index][status] = counts[index].get(status, 0) + 1
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, port), daemon=True) for i, port in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    return counts
