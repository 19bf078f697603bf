"""sweep.yaml: preset counts, and every kind of bad file refused with one line and exit 2."""
import collections
from pathlib import Path

import pytest

from helpers import gansweep
from sweep.plan.grid import ConfigError, estimate_flops, load_preset

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweep.yaml"


def test_paper_preset_is_table_1():
    p = load_preset(SWEEP, "paper")
    assert p.counts() == {"gan": 6144, "ebgan": 512, "ebgan_pt": 512}
    assert len({t.point_id for t in p.trials}) == 7168
    gan = [t for t in p.trials if t.family == "gan"]
    assert {(t.optimD, t.optimG, t.lr) for t in gan} == {
        (d, g, lr) for d in ("adam", "sgd") for g in ("adam", "sgd") for lr in (0.01, 0.001, 0.0001)}
    assert all(t.optimD == t.optimG == "adam" and t.lr == 0.001 for t in p.trials if t.family != "gan")
    assert {t.nLayerD for t in p.trials} == {2, 3, 4, 5}
    assert {t.sizeG for t in p.trials} == {400, 800, 1600, 3200}


def test_mini_and_smoke_presets():
    mini = load_preset(SWEEP, "mini")
    assert mini.counts() == {"gan": 48, "ebgan": 8, "ebgan_pt": 8}
    gan = [t for t in mini.trials if t.family == "gan"]
    assert len({(t.optimD, t.optimG, t.lr) for t in gan}) == 12  # every Figure 3 sub-grid
    smoke = load_preset(SWEEP, "smoke")
    assert smoke.counts() == {"gan": 1, "ebgan": 2, "ebgan_pt": 2, "began": 1, "began-dcgan": 1}
    began = load_preset(SWEEP, "began")
    assert began.counts() == {"began": 16, "ebgan": 8, "gan": 4}
    assert all(t.energy_norm == "l1" and t.began_gamma == 0.5 for t in began.trials if t.family == "began")


def test_quick_preset_compares_gan_and_ebgan_on_one_architecture_grid():
    """The README's first run: 8 GANs and 4 EBGANs on the same Ds, 2,808 steps each (GANs need about
    2,000 before they draw anything; docs/reproduction.md)."""
    q = load_preset(SWEEP, "quick")
    assert q.counts() == {"gan": 8, "ebgan": 4}
    assert {(t.nLayerD, t.sizeD) for t in q.trials} == {(4, 256), (5, 256)}
    assert {(t.optimD, t.optimG, t.lr) for t in q.trials if t.family == "gan"} == {
        (d, g, 0.001) for d in ("adam", "sgd") for g in ("adam", "sgd")}
    assert {(t.optimD, t.optimG, t.lr, t.margin) for t in q.trials if t.family == "ebgan"} == {("adam", "adam", 0.001, 10)}
    assert {t.epochs * (t.n_train // t.batch_size) for t in q.trials} == {2808}


def test_dcgan_preset():
    p = load_preset(SWEEP, "dcgan")
    assert p.counts() == {"gan-dcgan": 8, "gan": 4, "ebgan-dcgan": 4, "ebgan": 8, "ebgan_pt-dcgan": 4,
                          "began-dcgan": 4}
    dc = [t for t in p.trials if t.arch == "dcgan"]
    assert {(t.nLayerG, t.nLayerD, t.sizeG, t.sizeD) for t in dc} == {
        (g, d, 64, 64) for g in (4, 5) for d in (4, 5)}
    assert {t.lr for t in dc if t.family == "gan"} == {0.001, 0.0002}
    assert {(t.family, t.lr) for t in dc if t.family != "gan"} == {
        ("ebgan", 0.001), ("ebgan_pt", 0.001), ("began", 0.001)}
    assert all(t.arch == "mlp" and t.sizeG == 400 for t in p.trials if t.model in ("gan", "ebgan"))


def test_arch_defaults_to_mlp_and_a_family_may_list_grids(tmp_path):
    assert all(t.arch == "mlp" for t in load_preset(SWEEP, "paper").trials)  # Table 1 has no arch axis
    f = tmp_path / "sweep.yaml"
    f.write_text(GOOD.replace("gan: {", "gan:\n        - {arch: [dcgan, mlp], ")
                 .replace("lr: [0.001]}", "lr: [0.001]}\n        - {nLayerG: [3], nLayerD: [2], sizeG: [8], "
                          "sizeD: [8], dropoutD: [false], optimD: [adam], optimG: [adam], lr: [0.001]}"))
    p = load_preset(f, "p")
    assert [t.point_id for t in p.trials] == [  # a DCGAN GAN: auto is separate (its id says so)
        "gan-dcgan-G2x8-D2x8-nodrop-adam.adam-lr0.001-sepbn-s0", "gan-G2x8-D2x8-nodrop-adam.adam-lr0.001-s0",
        "gan-G3x8-D2x8-nodrop-adam.adam-lr0.001-s0"]


def test_plan_command_prints_counts():
    r = gansweep("plan", "--preset", "paper", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1] == "points: the 7,168-point grid"
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[3:7]}
    assert rows == {"gan": "6144", "ebgan": "512", "ebgan_pt": "512", "total": "7168"}


def test_flop_estimate_by_hand():
    from sweep.plan.config import TrialConfig

    t = TrialConfig(family="gan", nLayerG=2, nLayerD=2, sizeG=10, sizeD=5, z_dim=4, epochs=1,
                    n_train=8, batch_size=4, n_eval=10)
    pg = 4 * 10 + 10 * 1024
    pd = 1024 * 5 + 5
    assert t.d_batch == "joint"  # a GAN's G step runs D on the real batch too: 2 MD more
    assert estimate_flops(t) == 2 * 8 * (3 * pg + 10 * pd) + 2 * 10 * (pg + 9.6e6)
    ebgan = TrialConfig(family="ebgan", nLayerG=2, nLayerD=2, sizeG=10, sizeD=5, z_dim=4, epochs=1,
                        n_train=8, batch_size=4, n_eval=10)  # separate
    assert estimate_flops(ebgan) == 2 * 8 * (3 * pg + 8 * (1024 * 5 + 5 * 1024)) + 2 * 10 * (pg + 9.6e6)


GOOD = """
presets:
  p:
    seeds: [0]
    settings: {epochs: 1}
    grids:
      gan: {nLayerG: [2], nLayerD: [2], sizeG: [8], sizeD: [8], dropoutD: [false],
            optimD: [adam], optimG: [adam], lr: [0.001]}
"""

BAD = [
    ("presets: [unclosed", "malformed YAML"),
    ("- just\n- a list\n", "non-empty 'presets' mapping"),
    (GOOD + "extra: 1\n", "unknown top-level key 'extra'"),
    (GOOD.replace("settings: {epochs: 1}", "settings: {epochs: 1, epochz: 2}"), "settings.epochz: unknown setting"),
    (GOOD.replace("settings: {epochs: 1}", "settings: {epochs: one}"), "settings.epochs: expected int"),
    (GOOD.replace("settings: {epochs: 1}", "settings: {epochs: 0}"), "settings.epochs"),
    (GOOD.replace("lr: [0.001]", "lr: [-0.1]"), "grids.gan.lr[0]: must be positive"),
    (GOOD.replace("lr: [0.001]", "lr: [0]"), "grids.gan.lr[0]: must be positive"),
    (GOOD.replace("sizeG: [8]", "sizeG: []"), "grids.gan.sizeG: empty axis"),
    (GOOD.replace("sizeG: [8]", "sizeG: 8"), "grids.gan.sizeG: expected a list"),
    (GOOD.replace("sizeG: [8], ", ""), "grids.gan.sizeG: missing axis"),
    (GOOD.replace("nLayerG: [2]", "nLayerG: [2, 2.5]"), "grids.gan.nLayerG[1]: expected int"),
    (GOOD.replace("nLayerG: [2]", "nLayerG: [1]"), "grids.gan.nLayerG"),
    (GOOD.replace("dropoutD: [false]", "dropoutD: [no_thanks]"), "grids.gan.dropoutD[0]: expected bool"),
    (GOOD.replace("optimD: [adam]", "optimD: [rmsprop]"), "optimD"),
    (GOOD.replace("gan:", "wgan:"), "grids.wgan: unknown family"),
    (GOOD.replace("gan: {", "gan: {depth: [3], "), "grids.gan.depth: unknown axis"),
    (GOOD.replace("seeds: [0]", "seeds: []"), "seeds: expected a non-empty list"),
    (GOOD.replace("seeds: [0]", "seeds: [0, 0]"), "seeds: duplicate seeds"),
    (GOOD.replace("lr: [0.001]", "lr: [0.001, 0.001]"), "grids.gan.lr: duplicate values"),
    (GOOD.replace("gan:", "ebgan:").replace("optimD: [adam]", "optimD: [sgd]"),
     "EBGANs use adam/adam with lr 0.001"),
    (GOOD.replace("gan:", "ebgan:").replace("lr: [0.001]", "lr: [0.01]"), "lr: EBGANs use"),
    (GOOD.replace("seeds: [0]", "seedz: [0]"), "seedz: unknown key"),
    (GOOD.replace("gan: {", "gan: {arch: [cnn], "), "grids.gan.arch: 'cnn' is not one of mlp, dcgan"),
    (GOOD.replace("gan: {", "gan: {arch: [dcgan], ").replace("nLayerG: [2]", "nLayerG: [7]"),
     "grids.gan.nLayerG: dcgan nets have at most 6 layers (models/archs.py), got 7"),
    (GOOD.replace("gan: {", "gan: [{").replace("lr: [0.001]}", "lr: [0.001]}, 3]"),
     "grids.gan[1]: expected a mapping of axis: [values]"),
    (GOOD.replace("gan: {", "gan: [{").replace("lr: [0.001]}", "lr: [0.001]}, {nLayerG: [2], nLayerD: [2], "
                                              "sizeG: [8], sizeD: [8], dropoutD: [false], optimD: [adam], "
                                              "optimG: [adam], lr: [0.001]}]"),
     "grids.gan[1]: point gan-G2x8-D2x8-nodrop-adam.adam-lr0.001-s0 is also in grids.gan[0]"),
    (GOOD.replace("gan: {nLayerG: [2], nLayerD: [2], sizeG: [8], sizeD: [8], dropoutD: [false],\n"
                  "            optimD: [adam], optimG: [adam], lr: [0.001]}", "gan: []"),
     "grids.gan: empty list"),
]


@pytest.mark.parametrize("text,fragment", BAD)
def test_bad_sweep_files_one_line_exit_2(tmp_path, capsys, text, fragment):
    from sweep.cli import main

    f = tmp_path / "sweep.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_preset(f, "p")
    assert fragment in str(e.value)
    # the command line: one line on stderr, exit status 2, nothing on stdout
    for cmd in ("plan", "run"):
        assert main([cmd, "--config", str(f), "--preset", "p"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # nothing written


def test_paper_rules_can_be_lifted(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text(GOOD.replace("gan:", "ebgan:").replace("optimD: [adam]", "optimD: [sgd]")
                 .replace("seeds: [0]", "seeds: [0]\n    paper_rules: false"))
    assert load_preset(f, "p").trials[0].optimD == "sgd"


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'; presets are: paper, paper-sample, margin, quick, mini, gan-batchnorm, d-batch, d-batch-dcgan, d-batch-dcgan-seeds, gan-budget, smoke, began, dcgan"):
        load_preset(SWEEP, "nope")
    with pytest.raises(ConfigError, match="no such sweep file"):
        load_preset(tmp_path / "none.yaml", "p")


def test_a_sample_of_the_paper_grid_is_seeded_and_stratified(capsys):
    """--sample N: exactly N points, the same N twice; split evenly among models, and inside a
    model every axis value as often as any other of its axis, give or take one."""
    from sweep.cli import main

    a, b = load_preset(SWEEP, "paper", sample=100), load_preset(SWEEP, "paper", sample=100)
    assert len(a.trials) == 100 and a.trials == b.trials and a.grid_size == 7168
    assert a.counts() == {"gan": 33, "ebgan": 33, "ebgan_pt": 34}
    assert len({t.point_id for t in a.trials}) == 100
    full = load_preset(SWEEP, "paper").trials
    assert list(a.trials) == [t for t in full if t in set(a.trials)]  # in the grid's own order
    for model in a.counts():
        for axis in ("nLayerG", "nLayerD", "sizeG", "sizeD", "dropoutD", "optimD", "optimG", "lr"):
            values = {getattr(t, axis) for t in full if t.model == model}
            n = [sum(getattr(t, axis) == v for t in a.trials if t.model == model) for v in values]
            assert max(n) - min(n) <= 1, (model, axis, n)
    # every model has points in Figure 2's panel (c), both depths <= 3 (the depth band stratum)
    for n, each in ((24, [2, 2, 2, 2]), (15, [1, 1, 1, 2])):  # the paper-samples version 2 drew
        ps = load_preset(SWEEP, "paper-sample", sample=n, sampler=2)
        assert (ps.sample, ps.grid_size, ps.counts()) == (n, 7168, {"gan": n // 3, "ebgan": n // 3, "ebgan_pt": n // 3})
        for model in ps.counts():
            assert sum(t.nLayerG <= 3 and t.nLayerD <= 3 for t in ps.trials if t.model == model) >= 1
            for axis in ("nLayerG", "nLayerD", "sizeG", "sizeD"):  # every depth and size, as evenly as n allows
                assert sorted(collections.Counter(getattr(t, axis) for t in ps.trials
                                                  if t.model == model).values()) == each, (model, axis)
    assert load_preset(SWEEP, "paper-sample").sample == 22
    other = load_preset(SWEEP, "paper", sample=100, sample_seed=1)
    assert len(set(other.trials) & set(a.trials)) < 50  # another seed, another sample
    assert main(["plan", "--config", str(SWEEP), "--preset", "paper", "--sample", "100"]) == 0
    out = capsys.readouterr().out
    assert "points: a 100-point sample (seed 0) of the 7,168-point grid" in out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("total")] == [["total", "100"]]


def test_a_small_sample_gives_every_model_its_share_or_all_it_has(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text(GOOD.replace("sizeG: [8]", "sizeG: [8, 16, 32]").replace("seeds: [0]", "seeds: [0, 1]")
                 .replace("    grids:\n", "    sample: 5\n    sample_seed: 2\n    grids:\n")
                 .replace("lr: [0.001]}", "lr: [0.001]}\n      ebgan_pt: {nLayerG: [2], nLayerD: [2], sizeG: [8], "
                          "sizeD: [8], dropoutD: [false], optimD: [adam], optimG: [adam], lr: [0.001]}"))
    p = load_preset(f, "p")
    assert (p.grid_size, p.sample, p.sample_seed) == (8, 5, 2)
    assert p.counts() == {"gan": 3, "ebgan_pt": 2}  # 5 = 2 + 2 + a seeded extra; ebgan_pt has only 2
    gan = [t for t in p.trials if t.family == "gan"]
    assert sorted(t.sizeG for t in gan) == [8, 16, 32] and sorted(t.seed for t in gan) in ([0, 0, 1], [0, 1, 1])
    assert load_preset(f, "p", sample=7).counts() == {"gan": 5, "ebgan_pt": 2}  # the rest go to gan
    assert load_preset(f, "p", sample=8).trials == load_preset(f, "p", sample=8, sample_seed=9).trials
    assert p.sample_record() == {"n": 5, "seed": 2, "grid_size": 8, "sampler": 3}


def test_a_version_3_sample_draws_a_gan_in_every_figure3_cell(capsys):
    """Sampler 3: the GAN model gets one point in each of its 12 (optimD, optimG, lr) cells when
    the sample has room for them and one point of each other model; the axes stay balanced."""
    from sweep.cli import main
    from sweep.plan.subset import figure3_cell

    cells = {figure3_cell(t) for t in load_preset(SWEEP, "paper").trials if t.family == "gan"}
    assert len(cells) == 12
    for n, counts in ((22, {"gan": 12, "ebgan": 5, "ebgan_pt": 5}), (15, {"gan": 12, "ebgan": 1, "ebgan_pt": 2}),
                      (14, {"gan": 12, "ebgan": 1, "ebgan_pt": 1}), (13, {"gan": 5, "ebgan": 4, "ebgan_pt": 4}),
                      (96, {"gan": 32, "ebgan": 32, "ebgan_pt": 32})):
        ps = load_preset(SWEEP, "paper-sample", sample=n)
        assert ps.counts() == counts, n
        per_cell = collections.Counter(figure3_cell(t) for t in ps.trials if t.family == "gan")
        # every cell once before any twice: 12 of 12 cells, or n's GANs in as many cells
        assert len(per_cell) == min(12, counts["gan"]) and max(per_cell.values()) - min(per_cell.values()) <= 1, n
        gan = [t for t in ps.trials if t.family == "gan"]
        for axis in ("nLayerG", "nLayerD", "sizeG", "sizeD", "dropoutD", "optimD", "optimG", "lr"):
            values = collections.Counter(getattr(t, axis) for t in gan)
            assert max(values.values()) - min(values.values()) <= 1 or len(gan) < 4, (n, axis, values)
    ps = load_preset(SWEEP, "paper-sample")
    assert ps.sample_record()["sampler"] == 3 and set(map(figure3_cell, (t for t in ps.trials if t.family == "gan"))) == cells
    for model in ("ebgan", "ebgan_pt"):  # every depth and size of the other models, as before
        for axis in ("nLayerG", "nLayerD", "sizeG", "sizeD"):
            assert sorted(collections.Counter(getattr(t, axis) for t in ps.trials if t.model == model).values()) \
                == [1, 1, 1, 2], (model, axis)
        assert any(t.nLayerG <= 3 and t.nLayerD <= 3 for t in ps.trials if t.model == model)
    assert main(["plan", "--config", str(SWEEP), "--preset", "paper-sample"]) == 0
    out = capsys.readouterr().out
    assert "GAN points in Figure 3's 12 (optimD, optimG, lr) cells: 12 of 12 have one or more (1 each)" in out


@pytest.mark.parametrize("args,fragment", [
    (["--sample", "0"], "gansweep: --sample 0: expected an integer >= 1, got 0"),
    (["--sample", "99"], "gansweep: --sample 99: 99 points asked, but the grid has 1"),
    (["--sample", "1", "--sample-seed", "-1"], "gansweep: --sample-seed -1: expected an integer >= 0, got -1"),
    (["--sample", "x"], "argument --sample: invalid int value: 'x'"),
    (["@yaml:sample: 2.5"], "presets.p.sample: expected an integer >= 1, got 2.5"),
    (["@yaml:sample: 3"], "presets.p.sample: 3 points asked, but the grid has 1"),
])
def test_bad_samples_one_line_exit_2(tmp_path, capsys, args, fragment):
    from sweep.cli import main

    f = tmp_path / "sweep.yaml"
    text = GOOD
    if args[0].startswith("@yaml:"):
        text, args = GOOD.replace("    grids:\n", f"    {args[0][6:]}\n    grids:\n"), []
    f.write_text(text)
    for cmd in ("plan", "run"):
        assert main([cmd, "--config", str(f), "--preset", "p", *args]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_a_grid_may_vary_margin_energy_norm_and_dropout_code(tmp_path):
    """Beyond the paper: STUDY_AXES as grid lists; point ids name the values that differ from
    the defaults, so points differing only there stay distinct (the margin preset)."""
    f = tmp_path / "sweep.yaml"
    grid = ("ebgan: {nLayerG: [2], nLayerD: [3], sizeG: [8], sizeD: [8], dropoutD: [true], optimD: [adam], "
            "optimG: [adam], lr: [0.001], margin: [5, 10], energy_norm: [l2, mse], dropout_code: [true, false]}")
    f.write_text(GOOD.replace("seeds: [0]", "seeds: [0]\n    paper_rules: false")
                 .split("      gan:")[0] + "      " + grid + "\n")
    p = load_preset(f, "p")
    assert len(p.trials) == 8 and len({t.point_id for t in p.trials}) == 8
    ids = {t.point_id: (t.margin, t.energy_norm, t.dropout_code) for t in p.trials}
    assert ids["ebgan-G2x8-D3x8-drop-adam.adam-lr0.001-s0"] == (10.0, "l2", True)
    assert ids["ebgan-G2x8-D3x8-drop-adam.adam-lr0.001-m5-mse-codekept-s0"] == (5.0, "mse", False)
    assert isinstance(p.trials[0].margin, float)
    with pytest.raises(ConfigError, match=r"presets.p.grids.ebgan.margin\[1\]: expected float"):
        load_preset(_write(tmp_path, f.read_text().replace("margin: [5, 10]", "margin: [5, ten]")), "p")
    with pytest.raises(ConfigError, match=r"grids.ebgan.energy_norm: 'l3' is not one of"):
        load_preset(_write(tmp_path, f.read_text().replace("energy_norm: [l2, mse]", "energy_norm: [l3]")), "p")
    with pytest.raises(ConfigError, match="settings.margin: the preset.s grid grids.ebgan varies margin: give it in one place"):
        load_preset(_write(tmp_path, f.read_text().replace("{epochs: 1}", "{epochs: 1, margin: 3}")), "p")
    with pytest.raises(ConfigError, match="margin: EBGANs use adam/adam with lr 0.001 and margin 10"):
        load_preset(_write(tmp_path, f.read_text().replace("\n    paper_rules: false", "")), "p")


def _write(tmp_path, text: str):
    f = tmp_path / "other.yaml"
    f.write_text(text)
    return f


def test_margin_preset():
    p = load_preset(SWEEP, "margin")
    assert p.counts() == {"ebgan": 36} and len({t.point_id for t in p.trials}) == 36
    by_norm = {}
    for t in p.trials:
        by_norm.setdefault(t.energy_norm, set()).add(t.margin)
    # l2's 5, 10, 20 carried through each norm
    assert by_norm == {"l2": {5.0, 10.0, 20.0}, "l2_squared": {25.0, 100.0, 400.0},
                       "mse": {25 / 1024, 100 / 1024, 400 / 1024}, "l1": {5 / 32, 10 / 32, 20 / 32}}
    assert sum(t.dropoutD and not t.dropout_code for t in p.trials) == 12
    assert sum(not t.dropoutD for t in p.trials) == 12 and all(t.dropout_code for t in p.trials if not t.dropoutD)


def test_a_run_redraws_its_sample_with_the_sampler_version_that_drew_it(tmp_path):
    """The manifest records the sampler's version: a run drawn by version 1 (axes only, no
    `sampler` key) still plans its own points after version 2 changed the draw."""
    import json
    import shutil

    from sweep.errors import UserError
    from sweep.record.rundir import RunDir
    from sweep.record.layout import MANIFEST
    from sweep.record.results import MANIFEST_FORMAT

    v1, v2, v3 = (load_preset(SWEEP, "paper-sample", sample=24, sampler=v).trials for v in (1, 2, 3))
    assert len({v1, v2, v3}) == 3 and len(v1) == len(v2) == len(v3) == 24
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(SWEEP, run / "sweep.yaml")
    for record, expected in (({"n": 24, "seed": 0, "grid_size": 7168}, v1),
                             ({"n": 24, "seed": 0, "grid_size": 7168, "sampler": 2}, v2),
                             ({"n": 24, "seed": 0, "grid_size": 7168, "sampler": 3}, v3),
                             ({"n": 24, "seed": 0, "grid_size": 7168, "sampler": 4}, None)):
        (run / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "preset": "paper-sample",
                                                "sample": record}))
        if expected is None:
            with pytest.raises(UserError, match="drawn by sampler version 4, newer than this gansweep's 3"):
                RunDir(run).plan
        else:
            assert RunDir(run).plan == expected
