"""The plan's time estimate (sweep/plan/cost.py): the fit, the model's arithmetic by hand, the stored
file, and what `gansweep plan` says it used."""
import json

import pytest

from sweep.errors import UserError
from sweep.plan import cost
from sweep.plan.config import TrialConfig
from sweep.plan.grid import CLASSIFIER_MACS, estimate_flops, network_macs, train_flops_per_step
from tests.helpers import REPO

SWEEP = REPO / "sweep.yaml"


def test_the_fit_recovers_a_line_and_falls_back_to_the_origin():
    exact = [(g, 0.004 + 0.03 * g) for g in (0.1, 0.5, 2.0)]  # 4 ms fixed, 30 ms a GFLOP
    f = cost.fit_step_time(exact)
    assert f.fixed_s == pytest.approx(0.004) and f.s_per_gflop == pytest.approx(0.03)
    assert cost.fit_step_time([(2.0, 0.1)]) == cost.StepFit(0.0, 0.05)  # one row: through the origin
    assert cost.fit_step_time([(1.0, 0.1), (1.0, 0.3)]) == cost.StepFit(0.0, 0.2)  # one size: its mean rate
    # a negative intercept (rows that bend the other way) is not a cost: the origin line instead
    assert cost.fit_step_time([(1.0, 0.01), (2.0, 0.1)]) == cost.StepFit(0.0, pytest.approx(0.11 / 3))


def test_a_measured_model_by_hand():
    cfg = TrialConfig(family="gan", nLayerG=2, sizeG=10, nLayerD=2, sizeD=5, z_dim=4, epochs=3, n_train=640,
                      batch_size=64, eval_every=2, n_eval=100)  # d_batch auto: joint for a GAN
    mg, md = network_macs(cfg)
    assert train_flops_per_step(cfg) == 2 * 64 * (3 * mg + 10 * md)
    m = cost.measured({"mlp": [(0.1, 0.004 + 0.003), (0.3, 0.004 + 0.009)]}, scorer_images_per_s=500.0,
                      trial_fixed_s=2.0, source="test")
    gflop = train_flops_per_step(cfg) / 1e9
    steps, images = 3 * 10, 2 * 100  # 3 epochs of 640 // 64; scored at epochs 2 and 3
    by_hand = 2.0 + steps * (0.004 + 0.03 * gflop) + images * (1 / 500 + 2 * mg / 1e9 * 0.03)
    assert m.seconds(cfg) == pytest.approx(by_hand)
    assert m.fit("dcgan") == m.fit("mlp")  # an arch not measured: the first measured arch's fit
    assert m.slot_hours([cfg, cfg]) == pytest.approx(2 * by_hand / 3600)


def test_the_assumed_model_is_the_flop_count_at_its_rate():
    for cfg in (TrialConfig(family="ebgan"), TrialConfig(family="gan", nLayerG=5, sizeG=3200, epochs=40),
                TrialConfig(family="gan", arch="dcgan", nLayerG=4, sizeG=64, nLayerD=5, sizeD=64)):
        assert cost.assumed(20.0).seconds(cfg) == pytest.approx(estimate_flops(cfg) / 20e9, rel=1e-12)
    assert cost.assumed(20.0).scorer_images_per_s == 20e9 / (2 * CLASSIFIER_MACS)


def test_a_stored_model_round_trips_and_a_damaged_one_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "COST_DIR", tmp_path / "cache")
    m = cost.measured({"mlp": [(0.1, 0.01), (0.2, 0.015)], "dcgan": [(0.5, 0.2)]}, 800.0, 1.5, "measured here")
    path = cost.cost_file("cpu")
    assert path == tmp_path / "cache" / "cost-cpu.json"
    nothing = cost.cost_model_for("cpu")
    assert nothing.source == ("assumed 20 GFLOP/s per slot: nothing measured on this cpu "
                              "(`gansweep bench` measures it)")
    path.parent.mkdir()
    path.write_text(json.dumps(m.to_json()))
    back = cost.cost_model_for("cpu")
    assert back == m and back.fit("dcgan").s_per_gflop == pytest.approx(0.4)
    assert cost.cost_model_for("cpu", gflops=40.0).source == "assumed 40 GFLOP/s per slot"  # --gflops wins
    assert cost.cost_model_for("cuda").source.endswith("nothing measured on this cuda (`gansweep bench` measures it)")
    for damaged in ("{", json.dumps({**m.to_json(), "version": 9}), json.dumps({"version": 1})):
        path.write_text(damaged)
        with pytest.raises(UserError, match=r"cost-cpu.json is not a cost model of `gansweep bench` \(") as e:
            cost.cost_model_for("cpu")
        assert "\n" not in str(e.value)


def test_plan_names_the_model_it_estimated_with(tmp_path, monkeypatch, capsys):
    from sweep.cli import main

    monkeypatch.setattr(cost, "COST_DIR", tmp_path)
    m = cost.measured({"mlp": [(0.1, 0.01), (0.2, 0.015)]}, 800.0, 1.5, "measured by `gansweep bench` on test")
    f = tmp_path / "elsewhere.json"
    f.write_text(json.dumps(m.to_json()))
    from sweep.plan.grid import load_preset

    hours = m.slot_hours(load_preset(SWEEP, "mini").trials)
    for args, source, value in ((["--cost", str(f)], "measured by `gansweep bench` on test", hours),
                                (["--gflops", "40"], "assumed 40 GFLOP/s per slot", None),
                                ([], "assumed 20 GFLOP/s per slot: nothing measured on this cpu", None)):
        assert main(["plan", "--config", str(SWEEP), "--preset", "mini", *args]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("estimated cost:"))
        assert f"slot-hours ({source}" in line, line
        if value is not None:
            assert line.startswith(f"estimated cost: {value:.1f} slot-hours")
    assert main(["plan", "--config", str(SWEEP), "--preset", "mini", "--gflops", "0"]) == 2
    assert capsys.readouterr().err.strip() == "gansweep: --gflops 0: expected a number > 0"
