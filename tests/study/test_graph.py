"""The study as a stage graph: its dependencies, the local and the Ray executor (a local Ray cluster; skipped with
the reason where Ray is not installed), retries of a dead worker, and clear errors before anything runs."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from edgerlhf.study import graph
from edgerlhf.study.graph import Node, check_graph, parse_executor, run_local
from edgerlhf.study.pipeline import parse_arms, run_study, study_graph

needs_ray = pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'edgerlhf[ray]'; the dev extras have it)")


def _graph(**kw):
    arms = parse_arms("ppo,dpo,ppo@null", ["fp32", "int4"])
    p = {k: {} for k in ("sft", "prefs", "reward", "rm-eval", "eval", "bon", "ppo", "dpo")}
    base = dict(rm_per_seed=False, rm_precs=["fp32", "int4"], bon=True, bon_precs=["fp32", "int4"],
                reward_ensemble=0, ens_arms=[])
    return study_graph(p, {"model": "tiny"}, arms, [42, 7], 42, **{**base, **kw})


def test_the_study_graph_names_what_each_stage_needs():
    nodes = _graph()
    check_graph(nodes)  # every need listed before it: the list is the sequential order
    needs = {n.label: set(n.needs) for n in nodes}
    assert needs["sft"] == set() and needs["prefs"] == {"sft"} and needs["reward"] == {"prefs"}
    assert needs["rm-eval"] == {"reward"} and needs["bon"] == {"sft", "reward"}
    assert needs["ppo-int4"] == {"sft", "reward"} and needs["ppo-int4-seed7"] == {"sft", "reward"}
    assert needs["dpo-seed7"] == {"sft", "prefs"} and needs["ppo-null"] == {"sft"}
    assert needs["eval-int4-seed7"] == {"ppo-int4-seed7", "reward", "eval-sft"}
    # a seed's own RM: its arms wait on it, not on the base seed's
    per_seed = {n.label: set(n.needs) for n in _graph(rm_per_seed=True)}
    assert per_seed["reward-seed7"] == {"prefs"} and per_seed["ppo-fp32-seed7"] == {"sft", "reward-seed7"}
    assert per_seed["ppo-fp32"] == {"sft", "reward"}
    # settings follow from the finished stages' folders
    done = {lab: type("R", (), {"path": Path(f"/s/{lab}-0123456789")})() for lab in needs}
    by = {n.label: n for n in nodes}
    assert by["eval-int4-seed7"].settings(done)["policy"] == "/s/ppo-int4-seed7-0123456789"
    assert by["ppo-int4-seed7"].settings(done)["seed"] == 7
    assert by["ppo-int4"].settings(done)["reward_precision"] == "int4"


def test_a_graph_out_of_order_or_with_a_label_twice_is_refused():
    f = lambda d: {}  # noqa: E731
    with pytest.raises(ValueError, match="b needs a, not listed before it"):
        check_graph([Node("b", "sft", ("a",), f), Node("a", "sft", (), f)])
    with pytest.raises(ValueError, match="'a' twice"):
        check_graph([Node("a", "sft", (), f), Node("a", "sft", (), f)])
    order = []
    run_local([Node("a", "sft", (), f), Node("b", "prefs", ("a",), lambda d: {"x": d["a"]})],
              lambda st, lab, o: order.append((lab, o)) or lab)
    assert order == [("a", {}), ("b", {"x": "a"})]


def test_a_bad_executor_or_an_address_that_does_not_answer_is_named_before_anything_runs(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="use local .* or ray"):
        parse_executor("dask")
    with pytest.raises(ValueError, match="host:port"):
        parse_executor("ray:nowhere")
    monkeypatch.setattr(graph.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(ConnectionError, match="nothing answers at 127.0.0.1:9 .*ray start --head"):
        parse_executor("ray:127.0.0.1:9")  # the discard port: closed
    with pytest.raises(ConnectionError):
        run_study("smoke", out=tmp_path / "s", executor="ray:127.0.0.1:9", progress=False)
    assert not (tmp_path / "s").exists()
    monkeypatch.setattr(graph.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'edgerlhf\[ray\]'"):
        parse_executor("ray")


def test_a_worker_that_cannot_see_the_study_folder_says_so(tmp_path):
    (tmp_path / graph.TOKEN_FILE).write_text("abc")
    with pytest.raises(FileNotFoundError, match="not visible on Ray node"):
        graph._ray_stage(str(tmp_path), "another study", None, "sft", "sft", {})
    with pytest.raises(FileNotFoundError, match="not visible"):
        graph._ray_stage(str(tmp_path / "elsewhere"), "abc", None, "sft", "sft", {})
    assert graph._ray_stage(str(tmp_path), "abc", lambda st, lab, o: (st, lab), "sft", "sft", {}) == ("sft", "sft")
    assert graph.attempts(tmp_path, "sft") == 1


def _record(stage, label, overrides):
    """A stand-in stage for the Ray tests: notes when it ran; dies (the whole worker) on the first attempt of a
    label named in `die_once`."""
    study = Path(overrides["study"])
    if label in overrides.get("die_once", ()) and graph.attempts(study, label) == 1:
        os._exit(1)
    t0 = time.time()
    time.sleep(0.5)
    (study / f"{label}.json").write_text(json.dumps({"start": t0, "end": time.time(), "seen": overrides.get("x")}))
    return label


@needs_ray
def test_the_ray_executor_runs_each_stage_after_its_needs_and_retries_a_dead_worker(tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers do not import the tests
    base = {"study": str(tmp_path), "die_once": ["c"]}
    nodes = [Node("a", "sft", (), lambda d: base), Node("b", "prefs", ("a",), lambda d: {**base, "x": d["a"]}),
             Node("c", "reward", ("a",), lambda d: {**base, "x": d["a"]}),
             Node("d", "eval", ("b", "c"), lambda d: {**base, "x": [d["b"], d["c"]]})]
    done = graph.run_ray(nodes, _record, tmp_path, max_parallel=2, max_retries=1,
                         resources=lambda n, o: {"num_cpus": 0.5})
    assert done == {"a": "a", "b": "b", "c": "c", "d": "d"}
    t = {lab: json.loads((tmp_path / f"{lab}.json").read_text()) for lab in "abcd"}
    assert t["b"]["start"] >= t["a"]["end"] and t["c"]["start"] >= t["a"]["end"]
    assert t["d"]["start"] >= max(t["b"]["end"], t["c"]["end"]) and t["d"]["seen"] == ["b", "c"]
    assert graph.attempts(tmp_path, "c") == 2 and graph.attempts(tmp_path, "b") == 1  # the dead worker: retried


@needs_ray
def test_a_stage_no_ray_node_can_hold_is_refused_instead_of_waiting_forever(tmp_path):
    nodes = [Node("a", "ppo", (), lambda d: {"study": str(tmp_path)})]
    with pytest.raises(ValueError, match=r"stage a needs 4096.0 GiB of memory .* largest Ray node offers"):
        graph.run_ray(nodes, _record, tmp_path, resources=lambda n, o: {"num_cpus": 1, "memory": 2.0**42})
    assert not (tmp_path / "a.json").exists()


@needs_ray
@pytest.mark.slow
def test_the_same_study_from_both_executors(tmp_path):
    """A study on the tiny model run one stage after the other and as Ray tasks (2 at once): the same stage folders
    (their names are the hashes of their settings) and the same numbers in every summary and in the report."""
    kw = dict(precisions=["fp32"], algorithms="ppo", bon=False, progress=False, report_to=["none"], stage_threads=1)
    local = run_study("smoke", out=tmp_path / "local", **kw)
    far = run_study("smoke", out=tmp_path / "ray", executor="ray", max_parallel=2, **kw)
    a, b = (json.loads((s / "study.json").read_text()) for s in (local, far))
    assert [(s["label"], s["path"]) for s in a["stages"]] == [(s["label"], s["path"]) for s in b["stages"]]
    assert b["executor"] == "ray" and not any(s.get("attempts") for s in b["stages"])
    compared = 0
    for s in a["stages"]:
        mine, theirs = (json.loads((root / s["path"] / "summary.json").read_text()) for root in (local, far))
        nums = {k for k, v in mine.items() if isinstance(v, float) and not k.startswith(("timing/", "memory/", "wall"))
                and not k.endswith("per_s")}
        assert {k: mine[k] for k in nums} == {k: theirs[k] for k in nums}, s["label"]
        compared += len(nums)
    assert compared > 20
    ra, rb = (json.loads((s / "report.json").read_text()) for s in (local, far))
    assert ra["comparisons"] == rb["comparisons"] and ra["headline"] == rb["headline"]


def test_a_retry_waits_for_the_attempt_still_writing_the_folder_and_takes_its_work(tmp_path):
    """A Ray retry can start while the killed worker's stage process is still writing the stage folder (on SIGTERM
    an online stage stops at its step boundary, and may even finish): the retry waits on the folder's lock, then
    takes the stage as that process left it (here finished: reused), instead of moving the folder aside under it."""
    import threading

    from edgerlhf import registry
    from edgerlhf.config import from_dict
    from edgerlhf.presets import STAGE_PRESETS
    from edgerlhf.study.pipeline import LOCKS, config_key, run_stage
    from edgerlhf.tracking.lock import folder_lock

    study = tmp_path / "s"
    study.mkdir()
    raw = {**STAGE_PRESETS["sft"]["smoke"], "progress": False}
    row = registry.get("sft")
    name = "sft-" + config_key(from_dict(row.config, {**raw, "output_dir": str(study)}), study)
    holding = threading.Event()

    def earlier_attempt():  # what the killed worker's stage process does: holds the lock while it writes
        with folder_lock(study / LOCKS / name, "stage sft"):
            holding.set()
            time.sleep(0.5)  # the retry arrives while the folder is not finished yet
            row.runner()(from_dict(row.config, {**raw, "output_dir": str(study), "run_name": name}))

    t = threading.Thread(target=earlier_attempt)
    t.start()
    holding.wait()
    logs: list[str] = []
    rec = run_stage(study, "sft", "sft", raw, isolate=False, log=logs.append)
    t.join()
    assert any(f"waiting for pid {os.getpid()}" in m for m in logs), logs
    assert any("finished by an earlier attempt" in m for m in logs), logs
    assert rec.path == study / name and (study / name / "summary.json").is_file()
    assert not list(study.glob(".sft-*")), "the folder was moved aside under the attempt writing it"
    assert sorted(p.name for p in study.iterdir() if not p.name.startswith(".")) == [name]


def test_an_attempt_that_left_no_checkpoint_is_kept_aside_and_the_stage_starts_clean(tmp_path):
    from edgerlhf import registry
    from edgerlhf.config import from_dict
    from edgerlhf.presets import STAGE_PRESETS
    from edgerlhf.study.pipeline import config_key, run_stage

    study = tmp_path / "s"
    raw = {**STAGE_PRESETS["sft"]["smoke"], "progress": False}
    name = "sft-" + config_key(from_dict(registry.get("sft").config, {**raw, "output_dir": str(study)}), study)
    (study / name).mkdir(parents=True)
    (study / name / "status").write_text("failed\n")
    (study / name / "train.log").write_text("what the crashed attempt wrote\n")
    logs: list[str] = []
    rec = run_stage(study, "sft", "sft", raw, isolate=False, log=logs.append)
    assert rec.path == study / name and not rec.reused and (study / name / "summary.json").is_file()
    [aside] = study.glob(f".{name}.failed-*")
    assert (aside / "train.log").read_text() == "what the crashed attempt wrote\n"
    assert any("previous attempt moved to" in m for m in logs), logs


def test_a_stage_runs_with_the_threads_asked_and_the_process_keeps_its_own(tmp_path, monkeypatch):
    """Float sums depend on how work is split over threads, so a study's numbers are bit-identical across executors
    only at one thread count per stage: `--stage-threads` sets it for the stage, and only for it."""
    import torch

    from edgerlhf.presets import STAGE_PRESETS
    from edgerlhf.study import pipeline

    seen = []
    real = pipeline._start_locked
    monkeypatch.setattr(pipeline, "_start_locked", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    raw = {**STAGE_PRESETS["sft"]["smoke"], "progress": False}
    pipeline.run_stage(tmp_path / "s", "sft", "sft", raw, isolate=False, log=lambda m: None, threads=want)
    assert seen == [want] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="--stage-threads -1"):
        run_study("smoke", out=tmp_path / "t", stage_threads=-1, progress=False)
    assert not (tmp_path / "t").exists()
