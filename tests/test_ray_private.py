"""sweep/runner/ray_private.py against the installed Ray: every private name it uses still exists, on
real Ray objects where the name is an instance's. Ray is pinned; on an upgrade, what moved fails here,
by name, instead of a patch silently doing nothing."""
import importlib

import pytest

from sweep.runner import ray_private


@pytest.mark.parametrize("module, name", ray_private.INTERNALS)
def test_every_private_name_the_adapter_uses_exists(module, name):
    assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone from this Ray"


def _instances() -> dict:
    """One real object of each class whose attributes the adapter reads or sets."""
    from ray import tune
    from ray._private.node import Node
    from ray._private.parameter import RayParams
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.experiment import Trial
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return {"_ExperimentCheckpointManager": _ExperimentCheckpointManager(storage=None, checkpoint_period="auto"),
            "RayParams": RayParams(), "Node": Node, "Tuner": tune.Tuner(lambda config: None),
            "BasicVariantGenerator": BasicVariantGenerator(max_concurrent=2),
            "Trial": Trial("gansweep_test", stub=True)}


def test_every_attribute_the_adapter_reads_or_sets_exists_on_rays_objects():
    objects = _instances()
    missing = [f"{cls}.{attr}" for cls, attrs in ray_private.OBJECT_ATTRIBUTES.items() for attr in attrs
               if not hasattr(objects[cls], attr)]
    assert missing == []


def test_checkpoint_names_reads_a_pickled_checkpoint_manager():
    """The names in Tune's pickled checkpoint manager, in order (a real one, pickled as Tune does)."""
    import cloudpickle
    import pyarrow.fs
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
    fs = pyarrow.fs.LocalFileSystem()
    for i in (3, 4):
        manager.register_checkpoint(_TrainingResult(Checkpoint(f"/runs/r/tune/pack-a_00001/checkpoint_00000{i}", fs), {}))
    assert ray_private.checkpoint_names(cloudpickle.dumps(manager)) == [
        ("pack-a_00001", "checkpoint_000003"), ("pack-a_00001", "checkpoint_000004")]


def test_the_saved_states_checked_before_a_resume_are_the_files_tune_writes():
    """sweep/runner/cluster.py checks the newest of each before Tune resumes (the experiment state
    reads as JSON, the others are whole pickles); sweep/measure/scale.py measures the first."""
    from ray.tune.callback import CallbackList
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from sweep.runner.cluster import EXPERIMENT_STATES, SAVED_STATES

    assert EXPERIMENT_STATES == TuneController.CKPT_FILE_TMPL.format("*")
    assert SAVED_STATES == (BasicVariantGenerator.CKPT_FILE_TMPL.format("*"), CallbackList.CKPT_FILE_TMPL.format("*"))
