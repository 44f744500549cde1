"""The paper's tables: a config per setting (each prints, resolves its hub ids and gets a capacity estimate), any
set by path and Table B.1's two sets by name, the table layout over several sets, and the official harness's record
layout with export and compare (a hand-made file in the official layout with deliberate differences)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rsd_jax import capacity, compare, evaluate, export
from rsd_jax.abstract_run import ROLES, architecture
from rsd_jax.config import DataConfig, RunConfig
from rsd_jax.configlib import load_config
from rsd_jax.data import sources
from rsd_jax.data.datasets import dataset_items, detect_format
from rsd_jax.errors import ConfigError, InputError
from rsd_jax.harness import harness_fields, to_harness
from rsd_jax.paper_table import DELTA_STAR, RowSpec, build
from rsd_jax.weights.sources import parse_source

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "configs" / "paper" / "qwen25_math_1.5b_7b_skywork1.5b.yaml"
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
TABLE2_SETS = ("math500", "gsm8k", "gaokao2023en", "olympiadbench", "gpqa", "mmlu_stem")
#: a merged model (Table 4) has the architecture of the models merged: the estimate reads theirs
MERGED_AS = {"qwen25_math_7b_skywork7b": ("Qwen/Qwen2.5-Math-7B-Instruct", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B"),
             "qwen25_math_1.5b_skywork1.5b": ("Qwen/Qwen2.5-Math-1.5B-Instruct",
                                              "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B")}


def hub_overrides(path: Path) -> list[str]:
    """For a Table 4 config, its merged folder's roles as the hub ids of the merged models' architectures."""
    cfg = load_config(RunConfig, path)
    out = []
    for role in ROLES:
        name = Path(getattr(cfg.models, role).path).name
        if name in MERGED_AS:
            lm, prm = MERGED_AS[name]
            out.append(f"models.{role}.path={prm if role == 'prm' else lm}")
    return out


# ------------------------------------------------------------------------------------------------ the configs
def test_there_is_a_config_per_paper_setting():
    assert {p.stem for p in PAPER} == {
        "qwen25_math_1.5b_7b_skywork1.5b", "qwen25_math_1.5b_7b_skywork7b", "qwen25_math_7b_72b_skywork1.5b",
        "qwen25_math_7b_72b_skywork7b", "qwen25_1.5b_7b_skywork1.5b", "qwen25_1.5b_7b_skywork7b",
        "llama_1b_8b_skywork1.5b", "llama_1b_8b_skywork7b", "qwen25_math_1.5b_72b_skywork1.5b",
        "qwen25_math_1.5b_72b_skywork7b", "qwen25_math_1.5b_7b_skywork7b_table_b1",
        "qwen25_math_1.5b_7b_merged_target_prm7b", "qwen25_math_1.5b_7b_merged_draft_prm1.5b",
        "qwen25_math_1.5b_7b_skywork1.5b_v5e1"}  # the main setting, int8, on one 16 GB chip (docs/quantization.md)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_a_paper_config_prints_resolves_and_has_the_papers_settings(path, capsys):
    assert evaluate.main(["--config", str(path), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = load_config(RunConfig, path)
    assert printed["data"]["sources"] == list(cfg.data.sources)
    for role in ROLES:  # every hub id is catalogued (architecture known offline); merged folders are made first
        ref = getattr(cfg.models, role)
        if not hasattr(parse_source(ref.path, str(path), ref.revision), "repo"):
            assert Path(ref.path).parts[:2] == ("runs", "merged"), ref.path
            continue
        assert architecture(ref, role, str(path)).num_layers > 0
    spec = cfg.decoding.spec(cfg.rsd)
    assert (spec.max_new_tokens, spec.budget_includes_prompt, spec.max_steps, cfg.decoding.temperature) == (
        4096, True, 100, 0.0)
    assert cfg.rsd.delta == 0.7 and cfg.rsd.weighting == "binary" and cfg.data.template == "qwen25-math-cot"
    methods = cfg.rsd.methods
    if path.stem.endswith("_v5e1"):  # one chip, batch 8: RSD and the two models alone on MATH500 (decode's set)
        assert cfg.data.source == "math500" and set(methods) == {"rsd", "target", "draft"}
        assert {getattr(cfg.models, role).quantize for role in ROLES} == {"int8"}
        return
    if "table_b1" in path.stem:
        assert cfg.data.sources == ("cn_middle_school", "college_math")
        assert set(methods) == {"rsd", "target", "draft", "speculative"}
        return
    assert cfg.data.sources == TABLE2_SETS
    if "merged" in path.stem:
        assert methods == ("rsd",)
        return
    assert cfg.rsd.thresholds == (0.6, 0.8, 0.9)  # Table B.2's sweep, whose per-set best is Table 2's δ*
    if "1.5b_72b" in path.stem:
        assert set(methods) == {"rsd", "target", "speculative"}
        return
    n = 64 if "7b_72b" in path.stem else 16  # maj@64 / N=64 in the 72B rows, 16 elsewhere
    assert set(methods) == {"rsd", "target", "draft", "speculative", f"majority:n={n}", f"best_of_n:n={n}",
                            "rsd:budget=0.3,calibration=minerva_math"}


def full_depth_estimate(cfg, slice_) -> tuple[int, int]:
    """(weights, total) bytes per device of capacity's estimate at the models' real depth, from shallow copies:
    the estimate is linear in each model's layer count (every layer's weights and KV cache are alike; the rest
    does not depend on depth), so one model at one layer more gives its per-layer bytes. Tracing a 72B decoder's
    init at full depth takes minutes on a CI core; these copies take seconds."""
    from rsd_jax.abstract_run import architecture

    def at(layers: dict[str, int]):
        capacity.LAYERS = layers
        capacity._inputs.cache_clear()
        return capacity.evaluate_row(cfg, "x", slice_, cfg.decoding.batch_size, compile_=False, largest=False).estimate

    try:
        base = at({role: 1 for role in ROLES})
        weights, total = base.weights, base.total
        for role in ROLES:
            one_more = at({r: 2 if r == role else 1 for r in ROLES})
            depth = architecture(getattr(cfg.models, role), role).num_layers
            weights += (depth - 1) * (one_more.weights - base.weights)
            total += (depth - 1) * (one_more.total - base.total)
    finally:
        capacity.LAYERS = None
        capacity._inputs.cache_clear()
    return weights, total


def test_every_paper_config_gets_a_capacity_estimate():
    slice_ = capacity.SLICES["8x H100"]
    hbm = 80 * 10**9
    for path in PAPER:
        cfg = load_config(RunConfig, path, hub_overrides(path))
        weights, total = full_depth_estimate(cfg, slice_)
        assert 0 < weights < total < hbm, path.stem  # each setting fits eight H100s at its batch of 32
        if "7b_72b" in path.stem or "1.5b_72b" in path.stem:  # the 72B's bf16 weights over its 8-wide model axis
            assert weights > 72e9 * 2 / 8, path.stem


def test_one_device_methods_are_refused_on_a_mesh_before_any_work():
    import jax
    import numpy as np

    from rsd_jax.evaluation_runs import check_one_device

    config = ROOT / "configs" / "paper" / "qwen25_math_1.5b_7b_skywork7b.yaml"
    runs = evaluate.method_keys(load_config(RunConfig, config))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]).reshape(2, 1), ("data", "model"))
    with pytest.raises(InputError, match=r"speculative run\(s\) on one device only .* drop them from rsd.methods"):
        check_one_device(runs, mesh)
    check_one_device(runs, None)  # one device: no mesh


# ------------------------------------------------------------------------------------------------ the sets
def test_table_b1_sets_are_known_by_name_with_pinned_hashes():
    for name, count in (("cn_middle_school", 101), ("college_math", 2818)):
        source = sources.source_of(name)
        assert len(source.sha256) == 64 and not source.shipped and source.url.endswith(f"/data/{name}/test.jsonl")
        if sources.local_copy(name) is not None:  # where a copy is here, it is the pinned one
            assert len(dataset_items(DataConfig(source=name), None)) == count


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_any_set_by_path_in_a_known_format_or_detected(tmp_path):
    cn = write_jsonl(tmp_path / "cn.jsonl", [
        {"idx": 0, "question": "Smallest? A.-2 B.0", "answer": "-2", "choice_answer": "A"},
        {"idx": 1, "question": "x = ?", "answer": "$3$", "choice_answer": ""}])
    items = dataset_items(DataConfig(source="cn_middle_school", path=str(cn)), None)
    assert [(i.idx, i.answer) for i in items] == [(0, "A"), (1, "3")]
    assert items[0].grade("so \\boxed{A}") and not items[0].grade("so \\boxed{B}") and items[1].grade("\\boxed{3}")
    mine = write_jsonl(tmp_path / "mine.jsonl", [{"question": "1+1?", "answer": "$2$"}, {"question": "2+2?",
                                                                                          "answer": "4"}])
    items = dataset_items(DataConfig(source="my_set", path=str(mine), template="qwen25-math-cot"), None)
    assert [i.uid for i in items] == ["my_set-0", "my_set-1"] and items[0].answer == "2" and items[1].idx == 1
    gsm = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "work\n#### 1,200"}])
    assert detect_format([json.loads(gsm.read_text())], "g") == "gsm8k"
    assert dataset_items(DataConfig(source="g", path=str(gsm)), None)[0].answer == "1200"
    # a format given wins over detection; a file no format fits is one line naming data.format
    assert dataset_items(DataConfig(source="g", path=str(gsm), format="college_math"), None)[0].answer.startswith(
        "work")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "?"}])
    with pytest.raises(InputError, match="set data.format to one of"):
        dataset_items(DataConfig(source="odd", path=str(odd)), None)


def test_bad_set_names_are_config_errors():
    with pytest.raises(ConfigError, match="any name with data.path"):
        DataConfig(source="my_set")
    with pytest.raises(ConfigError, match="give its file as"):
        DataConfig(sources=("math500", "my_set"))
    with pytest.raises(ConfigError, match="twice"):
        DataConfig(sources=("math500", "math500"))
    with pytest.raises(ConfigError, match="an evaluated dataset"):
        load_config(RunConfig, None, ["data.sources=[math500,minerva_math]", "rsd.budget=0.3",
                                      "rsd.calibration=minerva_math"])
    sets = DataConfig(sources=("math500", "mine=/x.jsonl")).sets()
    assert [(d.source, d.path, d.sources) for d in sets] == [("math500", None, ()), ("mine", "/x.jsonl", ())]


# ------------------------------------------------------------------------------------------------ the table
def summary(accuracy: float, n: int = 2) -> dict:
    return {"accuracy": accuracy, "n_problems": n, "useful_flops": 1.0}


def record(correct: bool, useful: float, target_only: float, sources_: tuple[str, ...] = ()) -> dict:
    return {"correct": correct, "steps": [{"source": s, "reward": 0.9} for s in sources_],
            "accounting": {"useful_flops_total": useful, "target_only_flops": target_only}}


def test_the_table_has_a_row_per_method_a_column_per_set_the_average_flops_and_acceptance():
    sets = ("math500", "gsm8k")
    specs = [RowSpec("target", "Single (target)", "target", None), RowSpec("rsd", "RSD δ=0.7", "rsd", 0.7),
             RowSpec("rsd@0.9", "RSD δ=0.9", "rsd", 0.9)]
    per_set = {"math500": {"target": summary(0.5), "rsd": summary(1.0), "rsd@0.9": summary(0.5)},
               "gsm8k": {"target": summary(0.5), "rsd": summary(0.0), "rsd@0.9": summary(0.5)}}
    records = {(s, "target"): [record(True, 4.0, 4.0), record(False, 4.0, 4.0)] for s in sets}
    records |= {(s, k): [record(True, 1.0, 4.0, ("draft", "draft", "target")), record(False, 1.0, 4.0, ("draft",))]
                for s in sets for k in ("rsd", "rsd@0.9")}
    table = build(sets, specs, per_set, records)
    rsd = table.row("rsd")
    assert rsd.accuracy == {"math500": 100.0, "gsm8k": 0.0} and rsd.average == 50.0
    assert rsd.flops_vs_target == pytest.approx(4 / 16) and rsd.acceptance == pytest.approx(0.75)
    best = table.row(DELTA_STAR)  # per set the best fixed δ: 0.7 on MATH500, 0.9 on GSM8K
    assert best.accuracy == {"math500": 100.0, "gsm8k": 50.0} and best.chosen == {"math500": 0.7, "gsm8k": 0.9}
    md = table.markdown
    assert md.splitlines()[0].startswith("| method | run | MATH500 | GSM8K | Avg | FLOPs vs target-only |")
    assert "| RSD δ=0.7 | rsd | 100.0 | 0.0 | 50.0 | 0.250 | 4.00x | 75.0% | 2/2 | 0 |" in md
    assert "δ* per set: MATH500 0.7, GSM8K 0.9" in md
    assert json.loads(json.dumps(table.as_json()))["rows"]["rsd"]["average"] == 50.0


# ------------------------------------------------------------------------------------------------ export, compare
def fake_run(tmp: Path) -> Path:
    """A two-set run folder whose rsd records carry the harness's fields as to_record writes them."""
    run = tmp / "run"
    cfg = "data: {source: math500, sources: [math500, gsm8k]}\n"
    (run / "math500").mkdir(parents=True)
    (run / "gsm8k").mkdir()
    (run / "config.yaml").write_text(cfg)
    for name in ("math500", "gsm8k"):
        items = dataset_items(DataConfig(source=name, n=3), None)
        lines = []
        for k, item in enumerate(items):
            text = f"so \\boxed{{{item.answer if k != 1 else '-987'}}}"
            steps = [{"source": "draft", "reward": 0.8, "text": text, "n_tokens": 5}]
            accounting = {"draft_accepted_tokens": 5, "draft_discarded_tokens": 0, "target_tokens": 0}
            correct = item.grade(text)
            lines.append({"uid": item.uid, "method": "rsd", "question": item.question, "text": text,
                          "steps": steps, "accounting": accounting, "answer": item.answer, "correct": correct,
                          "wall_seconds": 1.0, **harness_fields(item, text, steps, accounting, correct)})
        write_jsonl(run / name / "rsd.jsonl", lines)
    return run


def test_records_carry_the_harness_fields_and_export_writes_its_layout(tmp_path):
    run = fake_run(tmp_path)
    rec = json.loads((run / "math500" / "rsd.jsonl").read_text().splitlines()[0])
    assert rec["idx"] == 0 and rec["gt"] == rec["answer"] and rec["score"] == [True] and rec["pred"] == [rec["gt"]]
    assert rec["token_counts"] == [5, 0, 0] and rec["turn_info"] == [[0, 1]] and rec["reward"] == [0.8]
    assert export.main([str(run), "--format", "qwen-harness"]) == 0
    out = run / "qwen-harness" / "rsd" / "math500" / "test_qwen25-math-cot_-1_seed0_t0.0_s0_e-1.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(rows[0])[:4] == ["idx", "question", "gt_cot", "gt"]
    assert list(rows[0])[-7:] == ["code", "pred", "report", "score", "token_counts", "turn_info", "reward"]
    assert "answer" in rows[0] and "level" in rows[0]  # the dataset's own fields, between gt and code
    metrics = json.loads(out.with_name(out.stem + "_qwen25-math-cot_metrics.json").read_text())
    assert metrics["num_samples"] == 3 and metrics["acc"] == pytest.approx(66.7) and metrics["acceptance_rate"] == 1


def test_compare_agrees_with_itself_and_reports_exactly_the_differences(tmp_path, capsys):
    run = fake_run(tmp_path)
    export.export(run, tmp_path / "exp")
    ours = tmp_path / "exp" / "rsd" / "gsm8k" / "test_qwen25-math-cot_-1_seed0_t0.0_s0_e-1.jsonl"
    assert compare.main([str(run), str(ours)]) == 0
    assert "gsm8k: 3 problems in both; same prediction 3/3 (100.0%), same score 3/3 (100.0%)" in (
        capsys.readouterr().out)
    # a hand-made file in the official layout: idx 0 another prediction with the same score, idx 2 a wrong score,
    # idx 1 missing and idx 7 extra
    rows = [json.loads(line) for line in ours.read_text().splitlines()]
    official = [dict(rows[0], pred=[rows[0]["pred"][0] + ".0"]), dict(rows[2], score=[False]),
                dict(rows[2], idx=7)]
    folder = tmp_path / "official" / "gsm8k"
    folder.mkdir(parents=True)
    write_jsonl(folder / "test_qwen25-math-cot_-1_seed0_t0.0_s0_e-1.jsonl", official)
    assert compare.main([str(run), str(folder / "test_qwen25-math-cot_-1_seed0_t0.0_s0_e-1.jsonl")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "gsm8k: 2 problems in both; same prediction 1/2 (50.0%), same score 1/2 (50.0%)"
    assert out[1:3] == ["  only in the run: idx 1", "  only in the official file: idx 7"]
    assert out[3].startswith(f"  idx 0: pred {rows[0]['pred'][0]!r} (run) vs {rows[0]['pred'][0] + '.0'!r}")
    assert out[4].startswith("  idx 2:") and out[4].endswith("score True (run) vs False (official)")
    assert len(out) == 5
    with pytest.raises(InputError, match="pass --set"):
        compare.compare(run, [tmp_path / "elsewhere.jsonl"], "rsd")
    with pytest.raises(InputError, match="no 'target' records"):
        compare.compare(run, [ours], "target")
    assert to_harness({"idx": 3})["idx"] == 3


# ------------------------------------------------------------------------------------------------ a Table 2 row
@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory):
    """Tiny models in the hub's layout of the main setting's checkpoints (tests/paper_row.py)."""
    import paper_row

    return paper_row.hub_folders(tmp_path_factory.mktemp("hub"))


def test_sampling_methods_batch_their_rows_not_their_problems():
    """majority:n=16 at batch 32 decodes 2 problems (32 rows) a batch, not 32 (512 rows)."""
    runs = {key: run_cfg for key, _, run_cfg, _ in evaluate.method_keys(load_config(
        RunConfig, MAIN, ["rsd.methods=[rsd,majority:n=16,best_of_n:n=64,beam_search]", "rsd.beam_width=2",
                          "rsd.beam_expansions=4"]))}
    assert {key: c.decoding.batch_size for key, c in runs.items()} == {
        "rsd": 32, "majority:n=16": 2, "best_of_n:n=64": 1, "beam_search": 4, "rsd@0.6": 32, "rsd@0.8": 32,
        "rsd@0.9": 32}


def test_a_table_2_row_runs_end_to_end_offline_and_prints_the_papers_layout(hub_folders, tmp_path, capsys):
    """The main setting's command, its model paths replaced by hub-layout folders, on two sets (one problem each,
    160 tokens counting the prompt, one problem a batch), offline, on one device: the paper's table with Table B.2's sweep and its
    δ* row; then, in this process (eight devices), a resume that decodes nothing, loads no model and prints the
    same table (SD is refused on a mesh only with problems left); then export + compare of the run against itself.
    Every method of the row (the sampling baselines, the budget row): `python tests/paper_row.py OUT
    --every-method` (docs/paper-tables.md: compiling their loops takes about a minute more on a CI core)."""
    import subprocess

    import paper_row

    methods = ["rsd", "target", "draft", "speculative"]
    run = tmp_path / "run"
    command = paper_row.command(hub_folders, run, methods, tokens=160)  # the prompts take 74 and 92 of them
    done = subprocess.run(command, env=paper_row.environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| method | run | MATH500 | GSM8K | Avg | FLOPs vs target-only |")
    keys = [line.split(" | ")[1] for line in lines[2:]]
    assert keys == [*methods, "rsd@0.6", "rsd@0.8", "rsd@0.9", DELTA_STAR]
    for line in lines[2:]:  # every row: both sets' accuracy, the average, one problem per set, no error
        cells = line.split(" | ")
        assert all(0 <= float(c) <= 100 for c in cells[2:5]) and cells[-2:] == ["1/1", "0 |"], line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sets"] == ["math500", "gsm8k"] and summary["rows"]["target"]["flops_vs_target_only"] == 1.0
    for name in ("math500", "gsm8k"):
        assert {p.stem for p in (run / name).glob("*.jsonl")} == set(keys[:-1])
    assert (run / "summary.md").read_text().splitlines()[0] == lines[0]
    assert (run / "accuracy_by_set.png").is_file() and (run / "accuracy_vs_flops.png").is_file()
    capsys.readouterr()
    assert evaluate.main(command[3:]) == 0  # resumes: all done, nothing loaded, on this process's eight devices
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")] == lines
    exported = export.export(run, tmp_path / "exported", ["rsd"])
    assert compare.main([str(run), *map(str, exported)]) == 0


def test_a_one_device_method_on_a_mesh_is_one_line_before_any_model_loads(hub_folders, tmp_path, capsys):
    """In this process (eight devices): SD with problems to decode, in a run on a mesh, is refused before anything
    loads or is decoded, in a multi-set run and in a one-set run alike."""
    base = ["--config", str(MAIN), *(f"models.{k}.path={v}" for k, v in hub_folders.items()), "data.n=1",
            "mesh.model=1", "rsd.methods=[target,speculative]", "rsd.thresholds=[]"]
    for data in (["data.sources=[math500,gsm8k]"], ["data.sources=[]", "data.source=math500"]):
        out = tmp_path / str(len(data))
        assert evaluate.main([*base, *data, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "speculative run(s) on one device only" in err, err
        assert "drop them from rsd.methods, or run them apart with mesh.model=1" in err
        assert not list(out.rglob("*.jsonl")) and not (out / "config.yaml").exists()


def test_programs_are_released_between_the_methods_of_an_evaluation():
    """rsd_jax.compilations.release_programs drops the compiled programs on a CPU (each holds its memory maps), and
    the multi-set evaluate calls it when it moves on to the next method."""
    import inspect

    import jax
    import jax.numpy as jnp

    from rsd_jax import evaluate_sets
    from rsd_jax.compilations import release_programs

    step = jax.jit(lambda x: x + 1)
    step(jnp.ones(2))
    assert step._cache_size() == 1
    release_programs()
    assert step._cache_size() == 0
    assert "release_programs()" in inspect.getsource(evaluate_sets.evaluate_sets)
