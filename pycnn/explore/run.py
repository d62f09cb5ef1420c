"""`pycnn explore`: sample N networks of a design space, train each briefly with pycnn.train's machinery and
append each finished trial to a JSONL file (an interrupted exploration resumes where it stopped).

Trials train into OUT/trials/<space>/<index>/ (explorations of several spaces may share OUT).
Executors: "local" runs trials one after another in this process, or in K worker processes sharing the cores
(torch threads = cores / K each); "ray" submits each trial as a Ray task with its resources (ray.init()
starts a local cluster unless an address is given) and records results as they finish; a lost worker or a
failing trial loses only that trial (recorded with its error)."""
from __future__ import annotations

import json
import math
import os
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, List, Optional

from .space import Sample, Sampler, Space, SpaceError, load_space


def trial_spec(space: Space, sample: Sample, args: dict) -> dict:
    """Everything a worker needs to run one trial (plain data: it crosses process and machine boundaries)."""
    return {"space": space.name, "arch": str(space.arch), "network": space.network, "index": sample.index,
            "values": sample.values, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in sample.overrides.items()},
            "flops": sample.flops, "params": sample.params, "acts": sample.acts, **args}


_RECORD_KEYS = ("space", "index", "values", "flops", "params", "acts", "latency_ms", "latency")


def _record(spec: dict) -> dict:
    """The sampled facts of a trial's JSONL record (latency only in latency-aware explorations)."""
    return {k: spec[k] for k in _RECORD_KEYS if k in spec}


def run_trial(spec: dict) -> dict:
    """Train one sampled network (spec from trial_spec) and return its JSONL record."""
    import torch

    from ..training.loop import train
    from ..training.recipe import Recipe
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    overrides = dict(spec["overrides"])
    overrides.pop("classes", None)  # the dataset's class count wins, as in `pycnn train`
    input_shape = overrides.pop("input", None)
    record = _record(spec)
    start = time.perf_counter()
    try:
        result = train(spec["arch"], spec["network"], data=spec["data"], data_dir=spec.get("data_dir"),
                       out=Path(spec["out"]) / "trials" / spec["space"] / f"{spec['index']:05d}", overwrite=True,
                       recipe=Recipe.from_dict(spec["recipe"]), backend=spec.get("backend", "fused"),
                       kernels=spec.get("kernels"), input=input_shape, log=lambda *_: None, progress=False,
                       network_overrides=overrides)
        record.update(error=100 * (1 - result.test_acc), test_acc=result.test_acc,
                      best_val_acc=result.best_val_acc, epochs=len(result.metrics))
    except Exception as e:  # one failing trial must not end the exploration
        record.update(error=None, failure=f"{type(e).__name__}: {e}".splitlines()[0],
                      traceback=traceback.format_exc(limit=3))
    record["seconds"] = time.perf_counter() - start
    return record


def done_indices(path: Path) -> set:
    """Indices of the trials a JSONL file records as finished; failed ones are run again on resume."""
    if not path.is_file():
        return set()
    return {t["index"] for t in read_trials(path) if t.get("error") is not None}


def _check_resumed(jsonl: Path, done: set, chosen) -> None:
    """A resumed exploration must draw the networks its finished trials trained (same space, seed and windows,
    same sampler); SpaceError otherwise, before anything is trained."""
    if not done:
        return
    drawn = {s.index: s.values for s in chosen}
    for trial in read_trials(jsonl):
        i = trial["index"]
        if i in done and i in drawn and json.loads(json.dumps(drawn[i])) != trial.get("values"):
            raise SpaceError(f"{jsonl}: trial {i} trained other values than this exploration draws for it (another "
                             f"seed, window or space, or the sampler before constraints were checked while drawing: "
                             f"--whole-draws); resume with the same options or write to another --out")


def read_trials(path) -> List[dict]:
    """The trials of a JSONL file, the last record of each index (a rerun replaces a failure), by index."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"no such trials file: {path}")
    last = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            last[record["index"]] = record
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interruption
    return [last[i] for i in sorted(last)]


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _local_pool(specs: List[dict], workers: int):
    if workers <= 1:
        for spec in specs:
            yield run_trial(spec)
        return
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(run_trial, specs)


def _ray_pool(specs: List[dict], workers: int, address: Optional[str], cpus_per_trial: float, gpus_per_trial: float):
    try:
        import ray
    except ImportError:
        raise SpaceError("the ray executor needs Ray: pip install 'pycnn[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, int(math.ceil(workers * cpus_per_trial))), log_to_driver=False,
                     include_dashboard=False)
    remote = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)(run_trial)
    pending = {remote.remote(spec): spec for spec in specs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            spec = pending.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as e:  # a lost worker or a task error: only this trial is lost
                yield _record(spec) | {
                    "error": None, "failure": f"{type(e).__name__}: {e}".splitlines()[0]}


def explore(space_path, samples: int, out, *, space: Optional[str] = None, data: str = "digits", data_dir: Optional[str] = None,
            recipe=None, seed: int = 0, input=None, flops=None, params=None, executor: str = "local",
            workers: int = 1, address: Optional[str] = None, gpus_per_trial: float = 0.0,
            backend: str = "fused", kernels: Optional[str] = None, threads: Optional[int] = None,
            latency: Optional[str] = None, max_latency_ms: Optional[float] = None, latency_cache=None,
            latency_repeats: int = 10, whole_draws: bool = False, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) an exploration of the design space `space` (default: the first) of the .arch file
    `space_path`; returns the JSONL path (out/<space>.jsonl).

    latency "ENGINE[@BATCH]" (a variant of pycnn.deploy.VARIANTS): every sampled candidate is measured on it
    first (cached in `latency_cache`, a JSON file; default pycnn.deploy.default_cache_path()) and its latency
    stored in its record; with max_latency_ms only the candidates within that budget are trained, and a
    budget none meets is a SpaceError before anything is written to `out`. whole_draws: refuse whole draws that
    break a constraint (the sampler before constraints were checked while drawing: its samples for a seed)."""
    from ..training.recipe import Recipe
    space = load_space(space_path, space)
    recipe = recipe or Recipe(epochs=1)
    extra = {"input": tuple(input)} if input else {}
    sampler = Sampler(space, seed, extra, flops, params, early=not whole_draws)
    chosen = sampler.take(samples)
    latencies = {}
    if latency or max_latency_ms is not None:
        chosen, latencies = _latency_filter(sampler, chosen, latency or "pycnn", max_latency_ms, latency_cache,
                                            backend, kernels, threads, latency_repeats, log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / f"{space.name}.jsonl"
    done = done_indices(jsonl)
    _check_resumed(jsonl, done, chosen)
    cores = os.cpu_count() or 1
    per_trial_threads = threads or max(1, cores // max(1, workers))
    args = {"data": data, "data_dir": data_dir, "recipe": recipe.to_dict(), "out": str(out), "backend": backend,
            "kernels": kernels, "threads": per_trial_threads if threads or workers > 1 or executor == "ray" else None, "seed": seed}
    todo = [trial_spec(space, s, args) | latencies.get(s.index, {}) for s in chosen if s.index not in done]
    log(f"{space.name}: {len(chosen)} samples (seed {seed}; {sampler.tries} draws, {sampler.rejected_constraint} broke a "
        f"constraint, {sampler.rejected_arch} did not elaborate, {sampler.rejected_window} outside the window); "
        f"{len(done & {s.index for s in chosen})} already done, {len(todo)} to train with the {executor} executor"
        + (f" ({workers} workers)" if workers > 1 else ""))
    if executor == "ray":
        results = _ray_pool(todo, workers, address, per_trial_threads, gpus_per_trial)
    elif executor == "local":
        results = _local_pool(todo, workers)
    else:
        raise SpaceError(f"executor must be local or ray, got {executor!r}")
    finished = 0
    for record in results:
        _append(jsonl, record)
        finished += 1
        what = (f"error {record['error']:.2f}%" if record.get("error") is not None else f"failed: {record['failure']}")
        log(f"[{finished}/{len(todo)}] trial {record['index']}: {record['flops'] / 1e6:.2f} MF, "
            f"{record['params'] / 1e6:.3f} M params, {what}, {record.get('seconds', 0):.1f} s")
    return jsonl


def _latency_filter(sampler: Sampler, chosen: List[Sample], spec: str, budget_ms: Optional[float], cache_path,
                    backend: str, kernels: Optional[str], threads: Optional[int], repeats: int, log):
    """(the candidates to train, {index: record fields}) after measuring every candidate on `spec`
    (ENGINE[@BATCH]); with a budget, only those within it. SpaceError when the budget rules out all."""
    import torch

    import pycnn
    from .. import deploy, dispatch
    from .space import canonical_text
    try:
        variant, batch = deploy.parse_latency_spec(spec)
    except ValueError as e:
        raise SpaceError(str(e)) from None
    if budget_ms is not None and not budget_ms > 0:
        raise SpaceError(f"--max-latency-ms must be > 0, got {budget_ms}")
    engine = deploy.VARIANTS[variant][1]
    try:
        deploy.require(engine)
    except deploy.EngineNotInstalled as e:
        raise SpaceError(str(e)) from None
    threads = threads or torch.get_num_threads()
    space = sampler.space
    texts = {s.index: canonical_text(sampler.elaborate(s.overrides)) for s in chosen}
    factories = [(texts[s.index], lambda s=s: pycnn.compile(space.arch, space.network, backend=backend,
                                                             kernels=kernels, **s.overrides)) for s in chosen]
    cache = deploy.LatencyCache(cache_path or deploy.default_cache_path())
    before = torch.get_num_threads()
    try:
        measured = deploy.measure_latencies(list(dict(factories).items()), variant, batch, threads,
                                            repeats=repeats, cache=cache, log=log,
                                            build=f"{backend}/{dispatch.resolve_kernels(kernels)}")
    finally:
        torch.set_num_threads(before)  # the trials choose their own
    fields, failures = {}, 0
    for s in chosen:
        m = measured[texts[s.index]]
        info = {"engine": variant, "batch": batch, "threads": threads}
        if "ms" in m:
            info.update(parity=m.get("parity"), layout=m.get("layout"), cached=bool(m.get("cached")))
            fields[s.index] = {"latency_ms": m["ms"], "latency": info}
        else:
            failures += 1
            fields[s.index] = {"latency_ms": None, "latency": dict(info, failure=m["failure"])}
    hits = sum(1 for s in chosen if measured[texts[s.index]].get("cached"))
    log(f"latency on {variant}@{batch}, {threads} threads: {len(chosen)} candidates ({hits} from the cache "
        f"{cache.path}" + (f", {failures} could not run" if failures else "") + ")")
    if budget_ms is None:
        return chosen, fields
    keep = [s for s in chosen if fields[s.index]["latency_ms"] is not None
            and fields[s.index]["latency_ms"] <= budget_ms]
    if not keep:
        times = sorted((fields[s.index]["latency_ms"], s.index) for s in chosen
                       if fields[s.index]["latency_ms"] is not None)
        fastest = (f"the fastest of the {len(chosen)} sampled takes {times[0][0]:.3g} ms (sample {times[0][1]})"
                   if times else f"none of the {len(chosen)} sampled could run on {variant}")
        raise SpaceError(f"no candidate meets --max-latency-ms {budget_ms:g} on {variant}@{batch} "
                         f"({threads} threads): {fastest}; raise the budget or narrow --flops")
    log(f"{len(keep)} of {len(chosen)} candidates within {budget_ms:g} ms on {variant}@{batch}")
    return keep, fields
