"""The registry is the one table of stages and algorithms: the command line, the top-level API, the study's arms, the
planner and `edgerlhf runs` are derived from it; every stage offers `--preset smoke` and runs on the tiny model in
seconds; a failure in the user's own gold names the callable and shows the user's frames, not ours."""

import dataclasses
import inspect
import json

import pytest

import edgerlhf as E
from edgerlhf import registry
from edgerlhf.cli import main
from edgerlhf.config import UserCodeError, load_config
from edgerlhf.study import plan
from edgerlhf.study.pipeline import parse_arms
from edgerlhf.tracking.listing import runs_table


def test_every_row_is_complete_and_resolves():
    assert len({s.name for s in registry.STAGES}) == len(registry.STAGES)
    for s in registry.STAGES:
        assert s.config.stage == s.name, s.name
        assert callable(s.runner()), s.name
        assert s.help and s.doc and s.key_metrics, s.name
        assert s.kind in ("supervised", "sampling", "reward", "measure", "online", "pairs", "evaluate"), s.name
        if s.online:
            algo = s.algorithm_class()
            assert algo.name == s.name and s.trains_policy and s.data_parallel
        else:
            assert not s.algorithm
        keys = {f.name for f in dataclasses.fields(s.config)}
        for name, preset in s.presets.items():  # every preset names only keys of the stage's config
            assert set(preset) - {"preset"} <= keys, (s.name, name, set(preset) - keys)
    with pytest.raises(ValueError, match="did you mean 'grpo'"):
        registry.get("grpoo")


def test_the_api_the_cli_the_study_and_the_planner_are_derived_from_the_table(capsys):
    for s in registry.STAGES:
        fn = getattr(E, s.function_name)
        assert fn.__doc__ == s.doc and s.function_name in E.__all__
        assert getattr(E, s.config.__name__) is s.config and s.config.__name__ in E.__all__
        assert ("reward_fn" in inspect.signature(fn).parameters) == s.online
        with pytest.raises(SystemExit):
            main([s.name, "--help"])
        out = capsys.readouterr().out
        assert "--preset" in out and "smoke" in out and "--help-config" in out, s.name
    # a config of the wrong stage names the right function
    with pytest.raises(TypeError, match="run_ppo takes a PPOConfig, not a GRPOConfig; use run_grpo"):
        E.run_ppo(load_config(E.GRPOConfig))
    arms = parse_arms(",".join(registry.algorithms()), ["fp32"])
    assert {a.algorithm for a in arms} == set(registry.algorithms())
    assert all((a.precision == "fp32") == registry.get(a.algorithm).uses_rm for a in arms)
    assert set(plan.PLANNED_STAGES) == {s.name for s in registry.STAGES if s.kind != "measure"}
    with pytest.raises(SystemExit):  # argparse: a choice among the stage's own presets
        main(["prefs", "--preset", "nope"])
    assert "invalid choice: 'nope' (choose from 'smoke')" in capsys.readouterr().err


def test_every_stage_runs_with_the_smoke_preset_and_runs_lists_its_key_metrics(tmp_path, capsys):
    """The whole chain through the command line on the tiny model, each stage with --preset smoke; then `edgerlhf
    runs` shows key metrics for every stage kind (it showed none for grpo, rloo and dpo before the registry)."""
    out = tmp_path / "runs"

    def run(*words):
        assert main([*words, f"output_dir={out}", "progress=false"]) == 0, words
        return out / next(w.split("=", 1)[1] for w in words if w.startswith("run_name="))

    sft = run("sft", "--preset", "smoke", "run_name=sft")
    prefs = run("prefs", "--preset", "smoke", f"policy={sft}", "run_name=prefs")
    rm = run("reward", "--preset", "smoke", f"prefs={prefs}", "run_name=rm")
    run("rm-eval", str(rm), "--preset", "smoke", "--precisions", "fp32", "isolate=false", "run_name=rm-eval")
    trained = [run(s, "--preset", "smoke", f"policy={sft}", f"reward={rm}", f"run_name={s}")
               for s in registry.online_stages()]
    trained.append(run("dpo", "--preset", "smoke", f"policy={sft}", f"prefs={prefs}", "run_name=dpo"))
    run("eval", str(trained[0]), "--preset", "smoke", "run_name=eval")
    run("bon", str(sft), "--preset", "smoke", f"rm={rm}", "run_name=bon")
    capsys.readouterr()
    table = runs_table(out)
    rows = {line.split()[0].rsplit("/", 1)[-1]: line for line in table.splitlines()[1:]}
    assert set(rows) == {"sft", "prefs", "rm", "rm-eval", *registry.online_stages(), "dpo", "eval", "bon"}
    for name, line in rows.items():
        stage = "reward" if name == "rm" else name
        label = registry.get(stage).key_metrics[0][0]
        assert f" {label} " in line + " " and "finished" in line, (name, line)
    for path in trained:
        assert json.loads((path / "summary.json").read_text())["status"] == "finished"


def test_a_gold_that_raises_names_itself_and_shows_the_users_frames(tmp_path, capsys):
    """Tried as a new user would: a task whose `gold: g.py:score` raises. The study stops with the callable named and
    the user's line shown, not the study's and the stage isolation's internal traceback."""
    (tmp_path / "g.py").write_text("def score(prompts, responses):\n    raise RuntimeError('my gold broke')\n")
    (tmp_path / "t.yaml").write_text("gold: g.py:score\n")
    code = main(["run", "--preset", "smoke", "--task", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "s"),
                 "--no-progress", "--report-to", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"gold {tmp_path / 'g.py'}:score raised RuntimeError: my gold broke" in err
    assert 'g.py", line 2, in score' in err and "raise RuntimeError('my gold broke')" in err
    assert "edgerlhf/stages" not in err and "edgerlhf/study" not in err and "isolate.py" not in err


def test_user_code_error_keeps_only_the_users_frames(tmp_path):
    def user_fn():
        raise KeyError("missing")

    try:
        user_fn()
    except KeyError as e:
        err = UserCodeError.from_exception("reward_fn user_fn", e)
    text = str(err)
    assert text.startswith("reward_fn user_fn raised KeyError: 'missing'")
    assert "in user_fn" in text and "raise KeyError" in text
    assert isinstance(err.__cause__, KeyError)


def test_a_reward_fn_that_raises_is_named_and_the_run_is_marked_failed(tmp_path):
    def my_reward(prompts, responses):
        raise ZeroDivisionError("my reward broke")

    cfg = load_config(E.GRPOConfig, preset="smoke", overrides={"output_dir": str(tmp_path), "run_name": "g",
                                                               "progress": False})
    with pytest.raises(UserCodeError, match="reward_fn my_reward raised ZeroDivisionError: my reward broke") as e:
        E.run_grpo(cfg, reward_fn=my_reward)
    assert "in my_reward" in str(e.value) and "edgerlhf/stages" not in str(e.value)
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["status"] == "failed" and "my reward broke" in summary["error"]
