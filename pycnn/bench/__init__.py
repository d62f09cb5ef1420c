"""Benchmarks (commands, not tests): python -m pycnn.bench.ops ..."""


def add_cpu_cache_argument(parser) -> None:
    """--cpu-cache: the benchmark's rows with pycnn's caching CPU allocator (pycnn.allocator)."""
    parser.add_argument("--cpu-cache", action="store_true",
                        help="every row with pycnn's caching CPU allocator (pycnn.allocator) instead of glibc's malloc")


def apply_cpu_cache(args) -> str:
    """Turns the cache on when asked (for the rest of the process); the allocator's name for the results."""
    if args.cpu_cache:
        from ..allocator import enable_cpu_cache
        enable_cpu_cache()
        return "pycnn cpu cache"
    return "glibc malloc (pycnn's inference forwards: their cache scope)"
