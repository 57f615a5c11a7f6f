"""Looking up the registered paper experiments (built-in and from plugins)."""

from __future__ import annotations

from panderm.reproduce.benchmarks import Benchmark


def list_benchmarks() -> list[Benchmark]:
    """Every registered benchmark, in registration order."""
    from panderm.plugins import registries

    return registries().benchmarks.entries()


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (a ConfigError lists the known names)."""
    from panderm.plugins import registries

    return registries().benchmarks.get(name)


def runnable_benchmarks() -> list[Benchmark]:
    """The benchmarks ``reproduce`` can run (not only listed)."""
    return [b for b in list_benchmarks() if b.kind != "listed"]
