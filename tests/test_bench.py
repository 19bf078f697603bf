"""The benchmark's arithmetic (its timings are read, never asserted: docs/performance.md)."""

from sweep.measure.bench import fastest_safe_pack, format_table, targets
from sweep.measure.rates import train_flops_per_sample
from sweep.plan.config import TrialConfig


def test_flop_count_by_hand():
    cfg = TrialConfig(family="ebgan", nLayerG=2, sizeG=10, nLayerD=2, sizeD=5, z_dim=4)
    mg = 4 * 10 + 10 * 1024  # G: z -> 10 -> 1024
    md = 1024 * 5 + 5 * 1024  # D: encoder 1024 -> 5, decoder 5 -> 1024
    assert train_flops_per_sample(cfg) == 2 * (3 * mg + 8 * md)


def fake_result(**over):
    res = {"machine": "test", "matmul_gflops_1_thread": 100.0,
           "throughput": {n: {"point": n, "steps": 1, "ours_samples_per_s": 10.0, "reference_samples_per_s": 8.0,
                              "speedup": 1.25, "train_gflop_per_sample": 1.0, "ours_gflops": 10.0,
                              "mfu": 0.55, "reference_mfu": 0.1} for n in ("smallest", "middle", "largest")},
           "harness": {"trials": 8, "bare_wall_s_2_processes": 40.0, "run_wall_s_2_concurrent": 50.0,
                       "fixed_before_first_trial_s": 6.0, "fixed_after_last_trial_s": 3.0,
                       "per_trial_overhead_s": 0.2, "bare_trial_s": 10.0, "mini_trials": 64,
                       "mini_projected_overhead_share": 0.029, "subset_overhead_share": 0.2},
           "scaling": {"run_wall_s_1_concurrent": 90.0, "run_wall_s_2_concurrent": 50.0,
                       "speedup_2_vs_1_wall": 1.8, "speedup_2_vs_1": 1.9},
           "packs": {n: {"module": {"points": 1, "aten_ops_per_point_step": 800.0, "samples_per_s": 1050.0},
                         "stack_of_1": {"points": 1, "aten_ops_per_point_step": 700.0, "samples_per_s": 1000.0},
                         "pack_of_4": {"points": 4, "aten_ops_per_point_step": 200.0, "samples_per_s": 1100.0,
                                       "vs_lone_point": 1.1},
                         "pack_of_12": {"points": 12, "aten_ops_per_point_step": 90.0, "samples_per_s": 1000.0,
                                        "vs_lone_point": 1.0},
                         "launch_ratio_pack_vs_alone": 0.11, "throughput_ratio_pack_vs_module": 0.95}
                     for n in ("smallest", "middle")}}
    res.update(over)
    res["targets"] = targets(res)
    return res


def test_targets_are_read_against_their_goals():
    res = fake_result()
    met = {t["target"]: t["met"] for t in res["targets"]}
    assert all(met.values()) and len(met) == 10
    res["throughput"]["smallest"]["speedup"] = 1.1  # below the 1.2 goal
    res["harness"]["mini_projected_overhead_share"] = 0.031  # above 3%
    met = {t["target"]: t["met"] for t in targets(res)}
    assert met["training step vs reference, smallest"] is False
    assert met["harness overhead share, mini sweep (projected)"] is False
    assert sum(met.values()) == 8
    res["packs"]["middle"]["launch_ratio_pack_vs_alone"] = 0.2  # not divided by about K = 12
    assert {t["target"]: t["met"] for t in targets(res)}["pack of 12: launches per point-step vs alone, middle"] \
        is False


def test_packs_against_a_lone_point_and_what_auto_may_pick():
    """--pack auto on CPU is 1; the bench names the largest measured pack that trains the middle point
    at least as fast as a lone point, and reads auto's K against it."""
    res = fake_result()
    assert fastest_safe_pack(res["packs"]) == 12
    res["packs"]["middle"]["pack_of_12"]["vs_lone_point"] = 0.8  # the CPU figure of docs/performance.md
    assert fastest_safe_pack(res["packs"]) == 4
    met = {t["target"]: (t["measured"], t["met"]) for t in targets(res)}
    assert met["pack of 12: samples/s vs a lone point, middle"] == (0.8, False)
    assert met["--pack auto's K on CPU vs the largest K at >= 1.0x"] == (1, True)
    res["packs"]["middle"]["pack_of_4"]["vs_lone_point"] = 0.99
    assert fastest_safe_pack(res["packs"]) == 1
    assert {t["target"]: t["met"] for t in targets(res)}["--pack auto's K on CPU vs the largest K at >= 1.0x"]


def test_table_prints_every_target():
    text = format_table(fake_result())
    assert text.count(" yes") == 10
    assert "middle pack_of_12" in text and "90.0" in text and "1.10x" in text
    assert "--pack auto on CPU: 1; the largest pack measured at >= 1.0x a lone point's samples/s: 12" in text
    assert "per trial: 0.20s" in text and "2.9% of its wall time" in text
    assert "1.90x while trials run" in text
