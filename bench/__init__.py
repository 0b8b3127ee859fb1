"""Tollgate's benchmarks: `bench/filter`, `bench/sidecar`, `bench/usage` and what they share
(`bench/common`). A package so that every bench imports by absolute name (`bench.common.measure`,
`tests.harness.envoy`); see bench/README.md."""
