"""pycnn.explore: design spaces written in the language, the seeded sampler and its constraints (checked on the IR), trials in
JSONL with resume, EDFs, the (w0, wa, wm) fit, the local and Ray executors."""
import json
import random

import numpy as np
import pytest

from pycnn.cli import main
from pycnn.explore import report
from pycnn.explore.run import done_indices, explore, read_trials
from pycnn import ArchError
from pycnn.explore.space import Param, Sampler, SpaceError, load_space
from pycnn.training.recipe import Recipe

SPACES = "archs/spaces"
TINY = {"input": (1, 8, 8), "classes": 10}


def spaces(letter):
    return load_space(f"{SPACES}/anynetx_{letter}.arch")


def test_parameter_distributions():
    rng = random.Random(0)
    w = Param("w", "int", 8, 1024, "log", 8)
    ws = [w.sample(rng) for _ in range(2000)]
    assert all(v % 8 == 0 and 8 <= v <= 1024 for v in ws)
    assert 0.4 < sum(v <= 91 for v in ws) / len(ws) < 0.6  # log-uniform: the geometric middle is sqrt(8*1024)
    g = Param("g", "int", 1, 32, "pow2")
    assert {g.sample(rng) for _ in range(500)} == {1, 2, 4, 8, 16, 32}
    d = Param("d", "int", 1, 16)
    assert {d.sample(rng) for _ in range(2000)} == set(range(1, 17))
    wm = Param("wm", "real", 2, 3, "log", 0.001)
    assert all(2 <= v <= 3 and abs(v * 1000 - round(v * 1000)) < 1e-6 for v in (wm.sample(rng) for _ in range(200)))
    assert Param("b", "choice", choices=[0.25]).sample(rng) == 0.25


@pytest.mark.parametrize("letter", "abcde")
def test_anynetx_constraints_hold_on_every_sample(letter):
    sampler = Sampler(spaces(letter), seed=3, extra=TINY)
    for s in sampler.take(8):
        v = s.values
        stage = lambda k: [v[f"{k}{i}"] for i in range(1, 5)]
        assert all(1 <= d <= 16 for d in stage("d")) and all(w % 8 == 0 and w <= 1024 for w in stage("w"))
        if letter in "bcde":
            assert len(set(stage("b"))) == 1
        if letter in "cde":
            assert len(set(stage("g"))) == 1
        if letter in "de":
            assert stage("w") == sorted(stage("w"))
        if letter == "e":
            assert stage("d") == sorted(stage("d"))
        assert s.flops > 0 and s.params > 0 and s.acts > 0
    if letter == "e":
        assert sampler.rejected_constraint > 0


def test_sampler_is_seeded_and_windows_hold():
    a = [s.values for s in Sampler(spaces("a"), seed=7, extra=TINY).take(5)]
    b = [s.values for s in Sampler(spaces("a"), seed=7, extra=TINY).take(5)]
    assert a == b and a != [s.values for s in Sampler(spaces("a"), seed=8, extra=TINY).take(5)]
    window = (1e5, 5e5)
    sampler = Sampler(spaces("c"), seed=0, extra=TINY, flops=window, params=(0, 2e5))
    for s in sampler.take(5):
        assert window[0] <= s.flops <= window[1] and s.params <= 2e5
    assert sampler.rejected_window > 0
    with pytest.raises(SpaceError, match="no sample satisfied"):
        Sampler(spaces("a"), seed=0, extra=TINY, flops=(1, 2), max_tries=50).take(1)


def test_regnet_space_samples_elaborate():
    space = load_space(f"{SPACES}/regnetx.arch")
    for s in Sampler(space, seed=0, extra={"input": (1, 16, 16), "classes": 10}).take(5):
        assert 12 <= s.values["depth"] <= 28 and s.values["w0"] % 8 == 0 and 2 <= s.values["wm"] <= 3


def test_bad_space_files(tmp_path):
    with pytest.raises(SpaceError, match="no such design-space file"):
        load_space(tmp_path / "none.arch")
    bad = tmp_path / "bad.arch"
    bad.write_text("use anynet\nnetwork n(input = 1x8x8) { head = flatten }\n")
    with pytest.raises(ArchError, match="defines no design space"):
        load_space(bad)
    bad.write_text("use anynet\nspace s of anynet { sample w1 = int(3) }\n")
    with pytest.raises(ArchError, match="int needs the argument 'high'"):
        load_space(bad)
    with pytest.raises(ArchError, match="no design space named 'S'"):
        load_space(f"{SPACES}/anynetx_a.arch", "S")
    assert load_space(f"{SPACES}/anynetx_a.arch", "AnyNetX_A").name == "AnyNetX_A"


def test_edf_and_width_fit():
    e, f = report.edf(np.array([3.0, 1.0, 2.0, 2.0]))
    assert e.tolist() == [1, 2, 2, 3] and f.tolist() == [0.25, 0.5, 0.75, 1.0]
    widths = report.quantized_widths(48, 36.0, 2.5, 12).astype(int).tolist()  # a RegNet's own block widths
    fit = report.fit_widths(widths)
    assert fit.error < 0.02
    assert report.quantized_widths(fit.w0, fit.wa, fit.wm, 12).astype(int).tolist() == widths
    assert report.block_widths({"w1": 8, "d1": 2, "w2": 16, "d2": 1}, stages=2) == [8, 8, 16]


def test_explore_local_records_trials_and_resumes(tiny_space, tmp_path, one_thread):
    recipe = Recipe(epochs=1, batch_size=64)
    log = []
    jsonl = explore(tiny_space, 3, tmp_path, recipe=recipe, input=(1, 8, 8), kernels="pycnn", log=log.append)
    trials = read_trials(jsonl)
    assert jsonl.name == "tiny.jsonl"
    assert sorted(t["index"] for t in trials) == [0, 1, 2] and all(t["error"] is not None for t in trials)
    assert all(0 <= t["error"] <= 100 and t["values"]["w1"] <= t["values"]["w4"] for t in trials)
    log.clear()
    with pytest.raises(SpaceError, match="trial 0 trained other values"):  # another seed: not these trials
        explore(tiny_space, 4, tmp_path, recipe=recipe, input=(1, 8, 8), seed=1, kernels="pycnn", log=log.append)
    explore(tiny_space, 4, tmp_path, recipe=recipe, input=(1, 8, 8), kernels="pycnn", log=log.append)
    assert "3 already done, 1 to train" in log[0] and done_indices(jsonl) == {0, 1, 2, 3}
    assert main(["explore", "--compare", str(jsonl), str(jsonl), "--out", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").is_file()
    assert "4 trials: error min" in report.table(read_trials(jsonl))


def test_explore_command_errors(tmp_path, capsys):
    assert main(["explore", str(tmp_path / "none.arch"), "--samples", "1"]) == 2
    assert "no such design-space file" in capsys.readouterr().err
    assert main(["explore", "--compare", str(tmp_path / "none.jsonl")]) == 2
    assert "no such trials file" in capsys.readouterr().err
    assert main(["explore", f"{SPACES}/anynetx_a.arch", "--space", "AnyNetX_Z", "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no design space named 'AnyNetX_Z' (did you mean 'AnyNetX_A'?)" in err


@pytest.mark.slow
def test_explore_with_ray_two_workers(tiny_space, tmp_path):
    pytest.importorskip("ray")
    jsonl = explore(tiny_space, 4, tmp_path, recipe=Recipe(epochs=1, batch_size=64), input=(1, 8, 8),
                    executor="ray", workers=2, kernels="pycnn", log=lambda *_: None)
    trials = read_trials(jsonl)
    assert sorted(t["index"] for t in trials) == [0, 1, 2, 3] and all(t["error"] is not None for t in trials)


def test_ray_missing_is_one_clear_error(tiny_space, tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(SpaceError, match=r"needs Ray: pip install 'pycnn\[ray\]'"):
        explore(tiny_space, 1, tmp_path, executor="ray", input=(1, 8, 8), log=lambda *_: None)


@pytest.mark.slow
def test_explore_local_worker_processes(tiny_space, tmp_path):
    """--workers 2: trials in two spawned processes; the same trials as one after another (seeded, 1 thread)."""
    recipe = Recipe(epochs=1, batch_size=64)
    parallel = explore(tiny_space, 2, tmp_path / "p", recipe=recipe, input=(1, 8, 8), workers=2, kernels="pycnn",
                       threads=1, log=lambda *_: None)
    serial = explore(tiny_space, 2, tmp_path / "s", recipe=recipe, input=(1, 8, 8), kernels="pycnn", threads=1,
                     log=lambda *_: None)
    by_index = lambda path: {t["index"]: (t["values"], t["error"]) for t in read_trials(path)}
    assert by_index(parallel) == by_index(serial) and len(by_index(serial)) == 2


def test_failed_trials_run_again_on_resume(tiny_space, tmp_path, one_thread):
    jsonl = tmp_path / "tiny.jsonl"
    jsonl.write_text(json.dumps({"index": 0, "space": "tiny", "values": {}, "flops": 0, "params": 0, "acts": 0,
                                 "error": None, "failure": "RayTaskError: worker died"}) + "\n")
    assert done_indices(jsonl) == set()
    explore(tiny_space, 1, tmp_path, recipe=Recipe(epochs=1, batch_size=64), input=(1, 8, 8), kernels="pycnn",
            log=lambda *_: None)
    trials = read_trials(jsonl)
    assert len(jsonl.read_text().splitlines()) == 2 and len(trials) == 1 and trials[0]["error"] is not None
    assert (tmp_path / "trials" / "tiny" / "00000" / "best.safetensors").is_file()


def test_explore_counts_must_be_positive(capsys):
    for option in ("--samples", "--workers"):
        with pytest.raises(SystemExit) as info:
            main(["explore", f"{SPACES}/anynetx_a.arch", option, "0"])
        assert info.value.code == 2 and f"{option}: expected an integer >= 1" in capsys.readouterr().err
