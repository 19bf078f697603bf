"""The installed command as a new user meets it: from an empty folder, its help, its presets,
--set / --seeds, init, and the sweep file's JSON Schema kept in step with the validator."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import gansweep as in_process

from sweep.plan.config import AXES, BOUNDS, CHOICES, FIELD_TYPES, SETTINGS, field_docs
from sweep.plan.grid import (PACKAGED_SWEEP, SCHEMA_FILE, ConfigError, estimate_flops, load_file, load_preset,
                        parse_overrides, parse_preset)

REPO = Path(__file__).resolve().parents[1]
GANSWEEP = Path(sys.executable).parent / "gansweep"  # the console script pip installed


def gansweep(*args, cwd):
    """The console script in a new interpreter, for what only it can show (its entry point, help as
    printed, a usage error's exit); the rest runs through the same main() in this process (helpers.py:
    a new interpreter costs 2-3 s of CPU importing torch)."""
    return subprocess.run([str(GANSWEEP), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def total_tflop(plan_out: str) -> float:
    return float(re.search(r"^total\s+\d+\s+([\d.]+)$", plan_out, re.M).group(1))


def test_from_an_empty_folder(tmp_path):
    from sweep import __version__

    v = gansweep("--version", cwd=tmp_path)
    assert (v.returncode, v.stdout.strip()) == (0, f"gansweep {__version__}")

    p = in_process("presets", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "the sweep file shipped with gansweep" in p.stdout
    names = list(load_file(PACKAGED_SWEEP)["presets"])
    rows = {m[1]: m[2] for m in re.finditer(r"^  (\S+)\s+([\d,]+)\s+[\d,.]+\s+\S", p.stdout, re.M)}
    assert list(rows) == names and rows["mini"] == "64" and rows["paper"] == "7,168"

    two = in_process("plan", "--preset", "mini", cwd=tmp_path)
    four = in_process("plan", "--preset", "mini", "--set", "epochs=4", cwd=tmp_path)
    assert two.returncode == four.returncode == 0, two.stderr + four.stderr
    assert "shipped with gansweep" in two.stdout and "overridden: epochs=4" in four.stdout
    # every FLOP of a trial, training and per-epoch scoring alike, scales with the epochs
    assert total_tflop(four.stdout) == pytest.approx(2 * total_tflop(two.stdout), abs=0.15)  # printed to 0.1
    base = load_preset(PACKAGED_SWEEP, "mini")
    more = load_preset(PACKAGED_SWEEP, "mini", overrides=parse_overrides(["epochs=4"], None))
    assert [t.epochs for t in more.trials] == [4] * 64
    assert sum(map(estimate_flops, more.trials)) == 2 * sum(map(estimate_flops, base.trials))
    assert not list(tmp_path.iterdir())  # plan and presets write nothing


def test_init_writes_an_editable_copy_that_is_then_read(tmp_path):
    r = in_process("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    copy = (tmp_path / "sweep.yaml").read_text()
    first, rest = copy.split("\n", 1)
    assert first == f"# yaml-language-server: $schema={SCHEMA_FILE.resolve()}"  # editors find the schema
    assert rest == PACKAGED_SWEEP.read_text().split("\n", 1)[1]
    again = in_process("init", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        "gansweep: init: sweep.yaml exists; pass --force to overwrite it, or name another file"]
    mini = load_preset(PACKAGED_SWEEP, "mini").description
    (tmp_path / "sweep.yaml").write_text(copy.replace(mini, "my edited mini"))
    plan = in_process("plan", "--preset", "mini", cwd=tmp_path)
    assert plan.stdout.startswith("preset mini of ./sweep.yaml: my edited mini\n")


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_help_documents_every_option():
    from sweep.cli import SUBCOMMANDS, build_parser

    subs = dict(_subparsers(build_parser()))
    assert set(SUBCOMMANDS) <= set(subs)
    for name, sub in subs.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help) > 10, (name, action.option_strings)
                assert all(o.startswith("-") and "_" not in o for o in action.option_strings[:1]), \
                    (name, action.option_strings)  # the first spelling is kebab-case; old ones follow as aliases
    for name in SUBCOMMANDS:
        assert "examples:\n  gansweep " + name in subs[name].format_help(), name
    # help speaks of what a user can see, never of source files (which move)
    assert [(n, f) for n, sub in subs.items() for f in re.findall(r"[\w/]+\.py\b", sub.format_help())] == []
    h = gansweep("run", "--help", cwd=REPO)  # and as the installed command prints it
    assert h.returncode == 0 and "examples:\n  gansweep run --preset mini\n" in h.stdout
    trial = gansweep("trial", "--help", cwd=REPO).stdout
    flat = " ".join(trial.split())
    for name in AXES + ("seed",) + SETTINGS:
        doc = " ".join(field_docs()[name].split())
        assert doc[:40] in flat, name
    assert "{gan, ebgan, ebgan_pt, began}" in flat and "{uniform, normal}" in flat
    assert "--n-layer-g INT, --nLayerG INT" in flat and "--batch-size INT, --batch_size INT" in flat


def test_old_and_new_flag_spellings_agree():
    from sweep.cli import build_parser

    a = build_parser().parse_args(["trial", "--nLayerG", "4", "--batch_size", "32", "--z-dist", "normal"])
    b = build_parser().parse_args(["trial", "--n-layer-g", "4", "--batch-size", "32", "--z_dist", "normal"])
    assert (a.nLayerG, a.batch_size, a.z_dist) == (b.nLayerG, b.batch_size, b.z_dist) == (4, 32, "normal")


def test_errors_carry_one_prefix(tmp_path, capsys, monkeypatch):
    from sweep.cli import main

    monkeypatch.chdir(tmp_path)
    for args, text in ((["run", "--bogus"], "gansweep: unrecognized arguments: --bogus (see gansweep --help)"),
                       (["plan", "--pack"], "gansweep: plan: argument --pack: expected one argument "
                                            "(see gansweep plan --help)"),
                       (["plan", "--set", "epochs=0"], "gansweep: --set epochs=0: 0 is outside [1, inf]"),
                       (["plan", "--set", "lr=0.1"], "gansweep: --set lr=0.1: lr is a grid axis"),
                       (["plan", "--seeds", "0,x"], "gansweep: --seeds 0,x: expected integers separated by commas"),
                       (["plan", "--set", "n_eval=5"], "gansweep: --set n_eval=5: 5 is outside [10, inf]"),
                       (["plan", "--set", "margin=5"], "gansweep: --set margin=5.0: EBGANs use adam/adam with lr "
                                                       "0.001 and margin 10 in the paper (got 5); the preset keeps")):
        assert main(args) == 2, args  # main() is what the console script runs; in-process, torch loads once
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith(text), (args, err)
    r = gansweep("run", "--bogus", cwd=tmp_path)  # and the installed command says the same
    assert (r.returncode, r.stderr) == (2, "gansweep: unrecognized arguments: --bogus (see gansweep --help)\n")


def test_overrides_are_recorded_and_rebuilt_by_the_ledger(tmp_path):
    """What resume replans from: the run's sweep file and the manifest's overrides give the same points."""
    import shutil

    from sweep.record.rundir import RunDir
    from sweep.record.results import new_manifest, write_manifest

    over = parse_overrides(["epochs=3", "n_eval=500", "z_dist=normal"], "4,7")
    preset = load_preset(PACKAGED_SWEEP, "mini", overrides=over)
    assert len(preset.trials) == 128 and {t.seed for t in preset.trials} == {4, 7}
    assert {(t.epochs, t.n_eval, t.z_dist) for t in preset.trials} == {(3, 500, "normal")}
    run = tmp_path / "r"
    run.mkdir()
    shutil.copyfile(PACKAGED_SWEEP, run / "sweep.yaml")
    m = new_manifest("r", preset, str(run / "tune"), {}, "cpu", "0" * 64, {})
    assert m["overrides"] == {"set": {"epochs": 3, "n_eval": 500, "z_dist": "normal"}, "seeds": [4, 7]}
    write_manifest(run, json.loads(json.dumps(m)))  # as it comes back from disk
    assert RunDir(run).plan == preset.trials
    m["overrides"] = None  # a run without overrides replans the file's own points
    write_manifest(run, m)
    assert RunDir(run).plan == load_preset(PACKAGED_SWEEP, "mini").trials


# --------------------------------------------------------------------------- the JSON Schema
def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text()))


def test_the_shipped_schema_is_generated_from_the_validator_tables():
    from sweep.plan.yaml_schema import schema_text

    assert SCHEMA_FILE.read_text() == schema_text(), "run `python -m sweep.plan.yaml_schema`"
    assert PACKAGED_SWEEP.read_text().startswith("# yaml-language-server: $schema=sweep/sweep.schema.json\n")
    assert (REPO / "sweep.yaml").resolve() == PACKAGED_SWEEP.resolve()  # one file: the package links to it
    doc = yaml.safe_load(PACKAGED_SWEEP.read_text())
    assert list(_validator().iter_errors(doc)) == []
    for name in doc["presets"]:
        load_preset(PACKAGED_SWEEP, name)  # and the validator takes every preset too


GOOD = {"seeds": [0], "settings": {"epochs": 1},
        "grids": {"gan": {"nLayerG": [2], "nLayerD": [2], "sizeG": [8], "sizeD": [8], "dropoutD": [False],
                          "optimD": ["adam"], "optimG": ["adam"], "lr": [0.001]}}}


def _bad_values(name: str) -> list:
    """Values of a field that both the validator and the schema must refuse, from the same tables."""
    kind = FIELD_TYPES[name]
    out = [[1] if kind != "str" else 3, "x" if kind != "str" else 1.5]
    if kind == "bool":
        out = ["yes please", 1]
    if name in CHOICES:
        out.append("no-such-choice")
    if name in BOUNDS:
        lo, hi = BOUNDS[name]
        out.append(lo - 1 if kind == "int" else lo - abs(lo) - 0.5)
        if hi is not None:
            out.append(hi + 1)
    return out


def _cases():
    for name in SETTINGS:
        for v in _bad_values(name):
            yield f"settings.{name}={v!r}", {**GOOD, "settings": {"epochs": 1, name: v}}
    grid = GOOD["grids"]["gan"]
    for name in AXES:
        if name == "family":
            continue
        for v in _bad_values(name) + (["-0.5"] if name == "lr" else []):
            v = -0.5 if v == "-0.5" else v
            yield f"grids.gan.{name}=[{v!r}]", {**GOOD, "grids": {"gan": {**grid, name: [v]}}}
        yield f"grids.gan.{name}=[]", {**GOOD, "grids": {"gan": {**grid, name: []}}}
    yield "unknown family", {**GOOD, "grids": {"wgan": grid}}
    yield "unknown axis", {**GOOD, "grids": {"gan": {**grid, "nLayerQ": [2]}}}
    yield "missing axis", {**GOOD, "grids": {"gan": {k: v for k, v in grid.items() if k != "lr"}}}
    yield "duplicate seeds", {**GOOD, "seeds": [0, 0]}
    yield "no seeds", {k: v for k, v in GOOD.items() if k != "seeds"}
    yield "unknown preset key", {**GOOD, "repeat": 2}
    yield "sample 0", {**GOOD, "sample": 0}
    yield "paper_rules text", {**GOOD, "paper_rules": "yes"}


@pytest.mark.parametrize("what,preset", list(_cases()), ids=[c[0] for c in _cases()])
def test_schema_and_validator_refuse_the_same_mistakes(what, preset):
    """Every type, choice and bound of the validator's tables, broken one at a time: both refuse."""
    assert list(_validator().iter_errors({"presets": {"p": GOOD}})) == []
    parse_preset("p", GOOD, where="t")
    assert list(_validator().iter_errors({"presets": {"p": preset}})), f"the schema accepts {what}"
    with pytest.raises(ConfigError):
        parse_preset("p", preset, where="t")


def test_outputs_with_a_python_repr_fail_the_suite():
    """Every `cli` and `gansweep` call of the suite fails on a dict or list-of-pairs repr in its output
    (helpers.words_only): the done line once printed {'ok': 64, 'diverged': 0, ...}."""
    import subprocess

    from helpers import words_only
    from sweep.record.progress import counts_words

    for text in ("done in 3m44s: {'ok': 64, 'diverged': 0}", "[('ok', 64)]"):
        with pytest.raises(AssertionError, match="a repr in the output"):
            words_only(subprocess.CompletedProcess(["gansweep", "run"], 0, text, ""))
    assert words_only(subprocess.CompletedProcess(["gansweep", "run", "-v"], 0, "{'CPU': 2.0}", "")).returncode == 0
    assert counts_words({"ok": 64, "diverged": 1, "error": 2, "pending": 3}) == \
        "ok 64, diverged 1, errored 2, pending 3"
