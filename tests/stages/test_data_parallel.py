"""Every training stage data-parallel (issue 16), on the CPU: two gloo processes on the loopback (a file store, no
ports) run SFT, the reward model, DPO, PPO, GRPO and RLOO on the tiny model; this process runs the same stages alone.

* after the steps the trainable parameters are identical, bitwise, on both processes;
* two processes with a micro-batch of b make the update one process makes with 2b (fp32 tolerance), and their
  logged metrics (written once, by the main process) are the single process's;
* an online checkpoint written by two processes resumes in one and continues as the uninterrupted run;
* counts that do not divide among the processes, and a run folder another process cannot see, stop every process
  with an error that names the fix.

One spawn runs every job (process start-up and imports dominate on two cores)."""

import json
from pathlib import Path

import pytest
import torch

from edgerlhf.config import (DPOConfig, GRPOConfig, PPOConfig, PrefsConfig, RewardConfig, RLOOConfig, SFTConfig,
                             load_config)

# Weights after Adam steps differ with the summation order (two processes, or one with another micro-batch split):
# Adam divides each gradient by its own size, so rounding moves a weight by more than fp32's 1e-7. The yardstick is
# what splitting the micro-batch in one process moves (measured in each test), never above 1e-4, where a wrong
# gradient (no synchronisation, a wrong weighting, other rows) moves weights by ~ lr (1e-3 .. 1e-2 here)
CONFIGS = {"sft": SFTConfig, "reward": RewardConfig, "dpo": DPOConfig, "ppo": PPOConfig, "grpo": GRPOConfig,
           "rloo": RLOOConfig}


def length_reward(prompts, responses):
    """A deterministic stand-in reward: longer, vowel-rich responses score higher."""
    return [sum(c in "aeiou" for c in r) / 10 for r in responses]


def _jobs(root: Path, files: dict) -> dict:
    """name -> (stage, overrides for two processes, overrides for one process)."""
    common = {"model": "tiny", "report_to": ["none"], "progress": False, "seed": 3}
    # no dropout: its masks are random per process and per batch shape, so no two layouts could agree
    sup = {**common, "warmup_ratio": 0.0, "logging_steps": 1, "max_steps": 3, "gradient_accumulation_steps": 2,
           "lora_dropout": 0.0}
    online = {**common, "max_steps": 2, "num_rollouts_per_step": 8, "rollout_batch_size": 4, "response_length": 8,
              "gold_eval_prompts": 0, "learning_rate": 1e-3, "max_prompts": 20, "mini_batch_size": 8,
              "gradient_accumulation_steps": 1}  # optimizer steps of the step's 8 episodes: 1 x 8, or 2 x 4
    jobs = {
        "sft": ("sft", {**sup, "dataset": files["sft"], "sample_prompts": 1, "sample_max_new_tokens": 4,
                        "learning_rate": 1e-2, "per_device_train_batch_size": 2}, {"per_device_train_batch_size": 4}),
        # non-reentrant checkpointing recomputes each block in the backward: the gradients are the same
        "sft_ckpt": ("sft", {**sup, "dataset": files["sft"], "sample_prompts": 0, "learning_rate": 1e-2,
                             "per_device_train_batch_size": 2, "gradient_checkpointing": True},
                     {"per_device_train_batch_size": 4}),
        "reward": ("reward", {**sup, "prefs": files["prefs"], "eval_prefs": files["eval_prefs"], "learning_rate": 1e-3,
                              "per_device_train_batch_size": 2}, {"per_device_train_batch_size": 4}),
        "dpo": ("dpo", {**sup, "prefs": files["prefs"], "eval_prefs": files["eval_prefs"], "learning_rate": 5e-3,
                        "lora_layers": 1, "per_device_train_batch_size": 2}, {"per_device_train_batch_size": 4}),
        "ppo": ("ppo", {**online, "kl_coef": 0.2, "ent_coef": 0.01}, {}),
        "grpo": ("grpo", {**online, "num_generations": 4, "beta": 0.05}, {}),
        # a 4-bit bitsandbytes base: each process loads its own quantised copy, never wrapped or synchronised
        "ppo_int4": ("ppo", {**online, "base_precision": "int4", "kl_coef": 0.2}, {}),
        "rloo": ("rloo", {**online, "num_generations": 4, "beta": 0.05}, {}),
        # groups of 4 over 2 processes of 2 episodes each: the group baseline spans the processes
        "grpo_span": ("grpo", {**online, "num_generations": 4, "num_rollouts_per_step": 4, "mini_batch_size": 4,
                               "rollout_batch_size": 2, "beta": 0.0, "lora_layers": 1}, {}),
        # stops after 2 steps with a checkpoint (as a Ctrl-C would); resumed to 4 in one process below
        "ppo_ckpt": ("ppo", {**online, "save_steps": 2, "kl_coef": 0.2}, {}),
    }
    for name, (_, two, _one) in jobs.items():
        two.update(output_dir=str(root / name), run_name=name)
    return jobs


def _config(stage, overrides):
    return load_config(CONFIGS[stage], overrides=overrides)


def _run(stage, cfg):
    from edgerlhf.stages import dpo, online, reward, sft

    if stage in ("ppo", "grpo", "rloo"):
        return online.run(cfg, reward_fn=length_reward)
    return {"sft": sft, "reward": reward, "dpo": dpo}[stage].run(cfg)


def _worker(rank, world_size, store, root, files):
    import faulthandler
    import os

    import torch.distributed as dist

    import edgerlhf.tracking.run as run_mod
    from edgerlhf.stages import dpo, online, reward, sft

    root = Path(root)
    # this process's stderr (C++ aborts included) and, on a fatal signal, every thread's Python stack, in a log the
    # fixture shows when a process dies
    log = open(root / f"rank{rank}.log", "w", buffering=1)
    os.dup2(log.fileno(), 2)
    faulthandler.enable(file=log, all_threads=True)
    phase = root / f"phase-{rank}"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    # each process's trainable state, as its artifact would hold it (only the main process writes the real one)
    for mod in (sft, reward, dpo, online):
        orig = mod.main_write_dir

        def keep(final, fill, orig=orig):
            fill(Path(_mine(root, rank, Path(final).parent.name)))
            return orig(final, fill)

        mod.main_write_dir = keep
    out = {}
    try:
        for name, (stage, two, _) in _jobs(root, files).items():
            phase.write_text(f"job {name}")
            out[name] = str(_run(stage, _config(stage, two)))
        phase.write_text("errors")
        errors = {}
        try:  # a valid config alone (6 episodes, optimizer steps of 3) whose optimizer step cannot split in two
            _run("ppo", _config("ppo", {**_jobs(root, files)["ppo"][1], "num_rollouts_per_step": 6,
                                        "mini_batch_size": 3, "run_name": "odd"}))
        except Exception as e:  # noqa: BLE001
            errors["odd"] = f"{type(e).__name__}: {e}"
        if rank == 1:  # this process cannot see the folder the main process made
            run_mod._visible = lambda path: False
        try:
            _run("sft", _config("sft", {**_jobs(root, files)["sft"][1], "run_name": "blind", "output_dir": str(root / "blind")}))
        except Exception as e:  # noqa: BLE001
            errors["blind"] = f"{type(e).__name__}: {e}"
        out["errors"] = errors
    except BaseException:
        import traceback

        traceback.print_exc()  # into this process's log
        raise
    finally:
        (root / f"out-{rank}.json").write_text(json.dumps(out))
        phase.write_text("destroy_process_group")
        dist.destroy_process_group()
        phase.write_text("exit")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else "(nothing)"


def _mine(root, rank, name):
    p = Path(root) / f"rank{rank}" / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    assert out, f"no tensors in {folder}"
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _spawn(root: Path, files: dict) -> str | None:
    """Run every job in two processes under ``root``; None, or how a process died: where it was (its phase) and what
    it printed last (its stderr, C++ aborts included, and every thread's Python stack), on one line."""
    import torch.multiprocessing as mp

    root.mkdir(parents=True)
    try:
        mp.spawn(_worker, args=(2, str(root / "store"), str(root), files), nprocs=2, join=True)
    except mp.ProcessExitedException as e:  # killed by a signal (a Python exception raises ProcessRaisedException)
        logs = {r: [line for line in _read(root / f"rank{r}.log").splitlines()
                    if line.strip() and "Extension modules" not in line] for r in range(2)}
        said = {r: (_read(root / f"phase-{r}"), " | ".join(logs[r])[-3000:]) for r in range(2)}
        died = f"{e}; " + "; ".join(f"rank {r} at {ph!r}, its log ends: {log}" for r, (ph, log) in said.items())
        assert e.signal_name, died  # an exit code without a Python error: no second chance
        return died
    return None


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The runs of two processes: {"root", "files", "runs" (name -> folder), "errors" (rank -> name -> text)}.

    A process killed by a signal (CI once lost rank 1 to a SIGABRT that no local run reproduced, before these
    diagnostics existed) is reported with its diagnostics as a warning and the whole two-process run is repeated
    once in a fresh folder; a second death, and any Python error, fails every test here."""
    import warnings

    from conftest import write_toy_prefs

    base = tmp_path_factory.mktemp("dp")
    rows = [{"prompt": [{"role": "user", "content": f"Rate item {i}."}],
             "completion": [{"role": "assistant", "content": "Great, I love it." if i % 2 else "Awful, it broke."}]}
            for i in range(48)]
    (base / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    files = {"sft": str(base / "sft.jsonl"), "prefs": str(write_toy_prefs(base / "train.jsonl", 48, 1)),
             "eval_prefs": str(write_toy_prefs(base / "eval.jsonl", 8, 2))}
    root = base / "run1"
    died = _spawn(root, files)
    if died is not None:
        warnings.warn(f"two-process run lost a process, repeating it once: {died}")
        root = base / "run2"
        again = _spawn(root, files)
        assert again is None, f"the repeat lost a process too: {again}; the first run: {died}"
    outs = [json.loads((root / f"out-{r}.json").read_text()) for r in range(2)]
    return {"root": root, "files": files, "runs": {k: Path(v) for k, v in outs[0].items() if k != "errors"},
            "errors": [o["errors"] for o in outs], "paths": outs}


def _split(two, name) -> dict:
    """One process's settings that split each micro-batch of the single-process run in two."""
    stage, over2, over1 = _jobs(two["root"], two["files"])[name]
    if stage in ("sft", "reward", "dpo"):
        return {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2 * over2["gradient_accumulation_steps"]}
    return {"mini_batch_size": over2["mini_batch_size"] // 2, "gradient_accumulation_steps": 2}


def _one(two, name, tmp_path, **more):
    stage, over2, over1 = _jobs(two["root"], two["files"])[name]
    cfg = _config(stage, {**over2, **over1, "output_dir": str(tmp_path), **more})
    return _run(stage, cfg)


@pytest.mark.parametrize("name", ["sft", "sft_ckpt", "reward", "dpo", "ppo", "ppo_int4", "grpo", "rloo", "grpo_span"])
def test_two_processes_train_as_one(two, tmp_path, name):
    run2 = two["runs"][name]
    assert two["paths"][1][name] == str(run2)  # every process returns the main process's folder
    # identical on both processes, bitwise
    r0, r1 = (_tensors(two["root"] / f"rank{r}" / name) for r in range(2))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    # the artifact (the main process's) holds them; nothing but the main process wrote in the output folder
    art = _tensors(run2 / "adapter")
    assert all(torch.equal(art[k], r0[k]) for k in r0)
    assert sorted(p.name for p in run2.parent.iterdir()) == [name]
    # the same update as one process with twice the micro-batch (the same rows / episodes, fp32 tolerance)
    run1 = _one(two, name, tmp_path / "one")
    one = _tensors(run1 / "adapter")
    assert one.keys() == art.keys()
    assert any("lora_B" in k and one[k].abs().sum() > 0 for k in one)  # trained (LoRA's B starts at zero)
    split = _tensors(_one(two, name, tmp_path / "split", **_split(two, name)) / "adapter")
    noise = max((split[k] - one[k]).abs().max().item() for k in one)  # one process, the micro-batch split in two
    assert noise < 1e-4
    diff = max((art[k] - one[k]).abs().max().item() for k in one)
    print(f"[{name}] largest weight difference, two processes vs one: {diff:.1e}; one process vs one with the "
          f"micro-batch split: {noise:.1e}")
    assert diff <= 3 * noise + 2e-6, (diff, noise)
    # metrics: one row per logged step, written once, equal to the single process's
    m2, m1 = _metrics(run2), _metrics(run1)
    assert [r["step"] for r in m2] == [r["step"] for r in m1]
    # (continuous ones: an accuracy of near-ties, or a policy loss of ~0 on-policy, is rounding itself)
    keys = {"sft": ["train/loss", "train/grad_norm", "eval/loss"], "sft_ckpt": ["train/loss", "train/grad_norm"],
            "reward": ["train/loss", "train/reward_margin", "eval/reward_std"],
            "dpo": ["train/loss", "train/margin", "eval/loss"]}.get(
        name, ["objective/scores", "objective/entropy", "objective/kl", "val/mean_length", "val/distinct_2",
               "train/grad_norm", "train/episodes"])
    assert any(k in r for r in m1 for k in keys)
    for a, b in zip(m2, m1):
        for k in keys:
            if k in b:
                assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-6), (a["step"], k)
    s2 = json.loads((run2 / "summary.json").read_text())
    assert s2["status"] == "finished"


def test_a_checkpoint_of_two_processes_resumes_in_one(two, tmp_path):
    """The checkpoint at step 2 of the two-process run, continued alone to step 4, equals the run that went to step 4
    alone without stopping: the same data position, KL coefficient, schedule and (to fp32 tolerance) weights."""
    from edgerlhf.stages import online
    from edgerlhf.tracking.checkpoint import latest_checkpoint

    run2 = two["runs"]["ppo_ckpt"]
    ckpt = latest_checkpoint(run2)
    assert ckpt.name == "step-000002" and json.loads((ckpt / "state.json").read_text())["world_size"] == 2
    stage, over2, _ = _jobs(two["root"], two["files"])["ppo_ckpt"]
    resumed = online.run(_config(stage, {**over2, "resume": str(run2), "max_steps": 4}), reward_fn=length_reward)
    straight = _one(two, "ppo_ckpt", tmp_path, max_steps=4)
    a, b = _tensors(resumed / "adapter"), _tensors(straight / "adapter")
    split = _tensors(_one(two, "ppo_ckpt", tmp_path / "split", max_steps=4, **_split(two, "ppo_ckpt")) / "adapter")
    noise = max((split[k] - b[k]).abs().max().item() for k in b)
    assert noise < 1e-4
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 3 * noise + 2e-6
    ma = [r for r in _metrics(resumed) if "objective/scores" in r]
    mb = [r for r in _metrics(straight) if "objective/scores" in r]
    assert [r["step"] for r in ma] == [1, 2, 3, 4] == [r["step"] for r in mb]
    for x, y in zip(ma, mb):
        for k in ("objective/scores", "objective/kl", "objective/kl_coef", "train/lr", "loss/policy", "train/episodes"):
            assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), (x["step"], k)


def test_errors_stop_every_process_and_name_the_fix(two):
    for rank in range(2):
        odd = two["errors"][rank]["odd"]
        assert "num_rollouts_per_step=6 does not divide among 2 processes" not in odd  # 6 = 2 x 3 does divide
        assert "mini_batch_size x gradient_accumulation_steps=3 does not divide among 2 processes" in odd
        assert "multiple of 2" in odd
        blind = two["errors"][rank]["blind"]
        assert "not visible from rank 1" in blind and "filesystem every node mounts" in blind
    status = (two["root"] / "blind" / "blind" / "status").read_text().strip()
    assert status == "failed"  # the main process recorded why; nothing was trained
    assert not (two["root"] / "blind" / "blind" / "adapter").exists()


def test_torchrun_launches_the_cli(tmp_path, sft_file):
    """The real launcher (torchrun; ``accelerate launch --multi_gpu`` starts the same elastic agent): two processes
    join through the environment, train, and leave one run folder written once."""
    import subprocess
    import sys

    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "edgerlhf.cli",
           "sft", "model=tiny", f"dataset={sft_file}", f"output_dir={out}", "run_name=tr", "max_steps=3",
           "per_device_train_batch_size=2", "report_to=none", "sample_prompts=1", "sample_max_new_tokens=4",
           "progress=false", "logging_steps=1", "device=cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["tr"]
    assert (out / "tr" / "status").read_text().strip() == "finished"
    steps = [r["step"] for r in _metrics(out / "tr") if "train/loss" in r]
    assert steps == [1, 2, 3]  # one row per step: only the main process logged
    assert done.stdout.count("[sft] eval loss") == 1  # and printed


def test_a_launched_process_killed_by_a_signal_prints_its_stack(tmp_path):
    """torchrun reports a process killed by a fatal signal (a C++ abort in a collective, say) only by its exit code;
    a process that joined the launch prints every thread's Python stack first."""
    import subprocess
    import sys

    script = tmp_path / "dies.py"
    script.write_text("import os\nfrom edgerlhf.distributed import init_from_env\n"
                      "if init_from_env('cpu')[0] == 1:\n    os.abort()  # rank 1 dies\n")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "Fatal Python error: Aborted" in done.stderr
    assert f'File "{script}", line 4' in done.stderr  # where it died


def test_commands_that_run_in_one_process_refuse_a_launch(monkeypatch, capsys):
    from edgerlhf.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["eval", "some-run"]) == 2
    err = capsys.readouterr().err
    assert "edgerlhf eval runs in one process, but 2 were launched" in err and "dpo, ppo, grpo, rloo" in err
    assert main(["run", "--preset", "quick"]) == 2
    assert "edgerlhf run runs in one process" in capsys.readouterr().err
    from edgerlhf.distributed import LaunchError
    from edgerlhf.stages import prefs
    from edgerlhf.study.pipeline import run_study

    with pytest.raises(LaunchError, match=r"the study \(edgerlhf run\) runs in one process"):  # the Python API too
        run_study("quick")
    with pytest.raises(LaunchError, match="edgerlhf prefs runs in one process"):
        prefs.run(load_config(PrefsConfig, overrides={"model": "tiny"}))
