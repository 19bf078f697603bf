"""The layout that shows the architecture (docs/architecture.md), kept: layers import downwards only,
no import circle, small files and functions, one training step, no import-time side effects."""
import ast
import os
import subprocess
import sys
from collections import defaultdict

from helpers import REPO

PACKAGES = ("models", "sweep", "analysis")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def sources() -> dict[str, str]:
    """module name -> its source, for every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            out[".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")] = f.read_text()
    return out


def modules() -> dict[str, ast.Module]:
    return {name: ast.parse(text, name) for name, text in sources().items()}


# models (networks, losses, the classifier) < sweep's errors < plan (what to run) < record (the run's
# truth on disk) < train (a point's training) < runner (Ray Tune) < measure (bench, device check) <
# analysis (reading runs) < cli (the
# commands, which may use them all). Within sweep/ each package is its own layer (issue 41: plan/disk.py
# imported train/, unseen while sweep/ was one layer).
LAYERS = ("models", "sweep", "sweep.plan", "sweep.record", "sweep.train", "sweep.runner", "sweep.measure", "analysis",
          "sweep.cli")


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix that names the module's package."""
    parts = module.split(".")
    return max(LAYERS.index(p) for p in (".".join(parts[:2]), parts[0]) if p in LAYERS)


def imports(mods: dict[str, ast.Module]) -> dict[str, set[str]]:
    """module -> the project modules it imports, at module level or inside functions."""
    edges = defaultdict(set)
    for name, tree in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in mods:
                        edges[name].add(full)
                    elif node.module in mods:
                        edges[name].add(node.module)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in mods)
    return edges


def test_layers_import_downwards_and_nothing_imports_in_a_circle():
    mods = modules()
    edges = imports(mods)
    up = sorted((a, b) for a in edges for b in edges[a] if layer(b) > layer(a))
    assert up == []
    # a circle: a module reachable from itself (depth-first search from every module)
    for start in mods:
        seen, todo = set(), list(edges[start])
        while todo:
            m = todo.pop()
            assert m != start, f"{start} imports itself through {sorted(seen)}"
            if m not in seen:
                seen.add(m)
                todo.extend(edges[m])
    assert "sweep.train.loop" in edges["sweep.runner.worker"]  # function-level imports count too


def test_files_and_functions_stay_small():
    long_files = [(n, text.count("\n")) for n, text in sources().items() if text.count("\n") > MAX_FILE_LINES]
    assert long_files == []
    mods = modules()
    long_functions = [(n, f.name, f.end_lineno - f.lineno + 1) for n, t in mods.items() for f in ast.walk(t)
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert long_functions == []


def test_one_training_step():
    """The step (D update, G update) is defined once: a GAN loss is backpropagated in loop.py only.
    (`gansweep bench` also times a plain PyTorch loop, the baseline the harness is measured against;
    the classifier trains in models/classifier.py.)"""
    mods = modules()
    steps = [n for n, t in mods.items() for f in ast.walk(t) if isinstance(f, ast.FunctionDef)
             and f.name in ("train_step", "train_epoch", "_train_epoch")]
    assert steps == ["sweep.train.loop", "sweep.train.loop"]
    backward = sorted({n for n, t in mods.items() for c in ast.walk(t) if isinstance(c, ast.Call)
                       and isinstance(c.func, ast.Attribute) and c.func.attr == "backward"})
    assert backward == ["models.classifier", "sweep.measure.bench", "sweep.train.loop"]


def test_importing_the_analysis_changes_no_matplotlib_state():
    """A notebook that imports gansweep's analysis keeps its own backend and rcParams, and pyplot
    is not imported for it (figures are drawn under a style context, without pyplot)."""
    code = ("import matplotlib, sys; before = (matplotlib.get_backend(), dict(matplotlib.rcParams)); "
            "import analysis.report, analysis.compare, analysis.figures, analysis.status; "
            "print(before == (matplotlib.get_backend(), dict(matplotlib.rcParams)), "
            "'matplotlib.pyplot' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "MPLBACKEND": "svg"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False"]


def test_the_parallel_suite_keeps_its_queues(request):
    """Under the README's `pytest -n 3 --dist loadgroup`, pytest-xdist must see the groups that
    conftest.py gives (it writes them into the node ids as `@group`). When it does not (pytest 9.2
    with xdist 3.8, pytest-xdist issue 1386), nothing fails: every test is spread alone, two Ray
    instances share the cores and race their timeouts, and module fixtures are built twice."""
    if not getattr(request.config.option, "loadgroup", False):
        return  # not an xdist worker under --dist loadgroup: there are no queues to keep
    import pytest

    assert request.node.nodeid.endswith("@test_layout"), (
        f"pytest {pytest.__version__} with this pytest-xdist lost the test groups "
        f"({request.node.nodeid}): install the pytest version pyproject.toml pins")


def test_only_the_storage_module_decides_whether_a_run_is_remote():
    """"Is this run remote?" has one answer: sweep/record/store.py's is_uri. A `"://" in x` test anywhere
    else could disagree with it (issue 41 counted 10 such tests beside 5 calls of is_uri)."""
    owner = "sweep.record.store"
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
                    and isinstance(node.left, ast.Constant) and node.left.value == "://"):
                found.append(f"{name}:{node.lineno}")
    assert [f for f in found if not f.startswith(owner + ":")] == []
    assert any(f.startswith(owner + ":") for f in found)  # is_uri itself: the test looks where it should


# Ray's private API, as gansweep's code would spell it: a module path or an attribute
RAY_PRIVATE = ("ray._private", "ray._common", "._internal", "_local_tuner", "_tune_config", "temporary_state",
               "_live_trials", "_set_api_key", "ray.tune.execution", "storage_filesystem")


def test_only_the_ray_adapter_reaches_into_rays_private_api():
    """sweep/runner/ray_private.py is the one module that touches Ray's internals (issue 41: they were
    spread over cluster.py, engine.py, scheduling.py, trackers.py and callback.py); each is listed in
    its INTERNALS and checked against the installed Ray by tests/test_ray_private.py."""
    owner = "sweep.runner.ray_private"
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            text = (node.module if isinstance(node, ast.ImportFrom) else
                    " ".join(a.name for a in node.names) if isinstance(node, ast.Import) else
                    node.attr if isinstance(node, ast.Attribute) else None)
            if text and any(p in text or (p.startswith("_") and text == p.lstrip(".")) for p in RAY_PRIVATE):
                found.append(f"{name}:{node.lineno} {text}")
    assert [f for f in found if not f.startswith(owner + ":")] == []
    assert any(f.startswith(owner + ":") for f in found)  # the adapter itself: the test looks where it should


def test_the_run_directorys_names_are_written_once():
    """A run's file names are spelled in sweep/record/layout.py only; everything else imports them."""
    names = ('"gansweep.json"', '"results.parquet"', '"curves.parquet"', '"results.csv"', '"curves.csv"',
             '".gansweep.lock"', '".gansweep.lease"')
    owner = "sweep.record.layout"
    spelled = [f"{m}: {n}" for m, text in sources().items() for n in names if n in text]
    assert [s for s in spelled if not s.startswith(owner + ":")] == []
    assert len([s for s in spelled if s.startswith(owner + ":")]) == len(names)  # it looks where it should


def test_imports_sit_at_the_top_unless_a_comment_says_why():
    """A project import inside a function is a lazy load, and outside sweep/cli (whose commands load
    what they run: `gansweep --help` imports every command's module) it says why on a `# lazy:` line
    above its block (torch for `status`, Ray until a run's checks pass): issue 41 counted 163."""
    texts = sources()
    unexplained, lazy = [], 0
    for name, tree in modules().items():
        if name.startswith("sweep.cli"):
            continue
        lines = texts[name].split("\n")
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _is_project(node):
                    lazy += 1
                    j = node.lineno - 1
                    while j > 0 and lines[j - 1].strip().startswith(("from ", "import ")):
                        j -= 1  # the top of its block of imports
                    if "# lazy:" not in lines[j - 1]:
                        unexplained.append(f"{name}:{node.lineno}")
    assert unexplained == []
    assert 0 < lazy <= 30, lazy  # the test looks where it should; and they stay few


def _is_project(node) -> bool:
    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    return any(n.split(".")[0] in PACKAGES for n in names)
