"""Bad input: one line on stderr, exit status 2, no traceback, nothing written.

The commands run in this process (helpers.gansweep, the console script's main); tests/test_cli.py
runs the installed `gansweep` script itself, and a run that could reach Ray goes in a subprocess."""
from pathlib import Path

import numpy as np
import pytest

import helpers

REPO = Path(__file__).resolve().parents[1]


def gansweep(*args, cwd=None, env=None):
    return helpers.gansweep(*args, cwd=cwd or REPO, env=env)


def assert_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_unknown_command_and_option():
    assert_one_line_error(gansweep("frobnicate"), "invalid choice")
    assert_one_line_error(gansweep("trial", "--nLayerQ", "3"), "unrecognized arguments")


def test_trial_bad_values(tmp_path):
    assert_one_line_error(gansweep("trial", "--lr", "-1", "--out", tmp_path / "x"), "lr")
    assert_one_line_error(gansweep("trial", "--family", "wgan", "--out", tmp_path / "x"), "family")
    assert_one_line_error(gansweep("trial", "--nLayerG", "two"), "nLayerG", "invalid int")
    assert_one_line_error(gansweep("trial", "--dropoutD", "maybe"), "dropoutD")
    assert not (tmp_path / "x").exists()


def test_missing_dataset_names_both_options(tmp_path):
    r = gansweep("trial", "--epochs", "1", "--data-root", tmp_path / "empty", "--out", tmp_path / "o")
    assert_one_line_error(r, "MNIST not found", "--data-root", "GANSWEEP_DATA", "--download")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage,fragment", [
    (lambda raw: raw[: len(raw) - 784], "holds 47039216 bytes of data, its header says 60000 x 28 x 28"),
    (lambda raw: b"\x00\x00\x0d" + raw[3:], "is not an IDX file of unsigned bytes"),  # 0x0d: float32
    (lambda raw: raw[:4] + (59999).to_bytes(4, "big") + raw[8:16 + 59999 * 784], "the train set is (59999, 28, 28)"),
])
def test_a_damaged_mnist_file_is_one_line(tmp_path, data_root, damage, fragment):
    """MNIST is read with numpy (sweep/train/data.py read_idx): a file cut short, of another type, or
    of another count is refused by name, as torchvision would have refused it."""
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").glob("*-ubyte"):
        (raw / f.name).symlink_to(f)
    images = raw / "train-images-idx3-ubyte"
    body = damage(images.read_bytes())
    images.unlink()
    images.write_bytes(body)
    r = gansweep("trial", "--epochs", "1", "--data-root", tmp_path / "mnist", "--out", tmp_path / "o")
    assert_one_line_error(r, "cannot read MNIST", fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("array,fragment", [
    (np.zeros((5, 28, 27), np.uint8), "expected shape"),
    (np.zeros((5, 784), np.uint8), "expected shape"),
    (np.zeros((5, 28, 28), np.int64), "dtype int64"),
    (np.full((5, 28, 28), 3.0, np.float32), "must lie in [-1, 1]"),
    (np.full((5, 28, 28), np.nan, np.float32), "NaN"),
    (np.zeros((1, 32, 32), np.uint8), "at least 2"),
])
def test_score_refuses_bad_arrays(tmp_path, array, fragment):
    f = tmp_path / "bad.npy"
    np.save(f, array)
    assert_one_line_error(gansweep("score", "--images", f), fragment)


def test_score_refuses_missing_and_non_npy_files(tmp_path):
    assert_one_line_error(gansweep("score", "--images", tmp_path / "nope.npy"), "no such file")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    assert_one_line_error(gansweep("score", "--images", junk), "not a readable .npy")
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_one_line_error(gansweep("score", "--images", pickled), "not a readable .npy")


def test_score_prints_metrics_json(tmp_path, mnist, data_root):
    import json

    ones = mnist.test_images[mnist.test_labels == 1][:500].numpy()
    f = tmp_path / "ones.npy"
    np.save(f, ones)
    r = gansweep("score", "--images", f, "--data-root", data_root)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["n"] == 500 and m["classes_covered"] == 1 and m["i_prime"] < 0.2
    assert m["digit_share"] > 0.95  # one class, but digits: the digit test passes them
    from models.classifier import DIGIT_THRESHOLD

    assert m["digit_threshold"] == DIGIT_THRESHOLD
    # the same images as floats in [-1, 1], 32 x 32, score the same
    padded = np.pad(ones.astype(np.float32) / 127.5 - 1, ((0, 0), (2, 2), (2, 2)), constant_values=-1)
    np.save(f, padded)
    m2 = json.loads(gansweep("score", "--images", f, "--data-root", data_root).stdout)
    assert m2["i_prime"] == pytest.approx(m["i_prime"], rel=1e-4)
    # uniform noise: not digits, and I' near 0 (the first scorer gave noise a top probability of 0.98)
    np.save(f, np.random.default_rng(0).uniform(-1, 1, (500, 32, 32)).astype(np.float32))
    m3 = json.loads(gansweep("score", "--images", f, "--data-root", data_root).stdout)
    assert m3["digit_share"] < 0.05 and m3["i_prime"] < 0.5


def test_status_and_resume_refuse_foreign_directories(tmp_path):
    (tmp_path / "foreign").mkdir()
    for cmd in ("status", "resume", "report"):
        assert_one_line_error(gansweep(cmd, tmp_path / "foreign", cwd=tmp_path), "not a gansweep run directory")
    assert_one_line_error(gansweep("status", tmp_path / "missing", cwd=tmp_path), "no such run directory")


def test_cluster_run_refuses_node_local_storage(tmp_path, data_root):
    (tmp_path / "sweep.yaml").write_text("""
presets:
  t:
    seeds: [0]
    settings: {epochs: 1}
    grids:
      gan: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false],
            optimD: [adam], optimG: [adam], lr: [0.001]}
""")
    # a subprocess: were the check to pass, the run would go on to connect to Ray
    r = helpers.cli("run", "--preset", "t", "--address", "127.0.0.1:1", "--storage", tmp_path / "runs",
                    cwd=tmp_path, timeout=120)
    assert_one_line_error(r, "node-local filesystem", "s3://")
    assert not (tmp_path / "runs").exists()
