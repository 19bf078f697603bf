"""A run's record in object storage (s3://, gs://, any URI pyarrow.fs reads), beside Tune's experiment.

    gansweep run --preset mini --name m --storage s3://bucket/gansweep   # record: s3://bucket/gansweep/m/
    gansweep resume s3://bucket/gansweep/m                               # from any machine, any folder

With a URI as --storage, Tune keeps its experiment under <URI>/<name>/tune and gansweep mirrors
the run's record beside it: the manifest, sweep.yaml, the tables, samples, weights, failures.log
and the slurm/ folder. The driver works in a local folder, ./runs/<name> (its working copy), and
pushes every file that changed after each write of the tables and of the manifest; `resume`,
`status` and `report` given the URI first pull the record into that folder.

Atomic on object storage: write-then-rename is not (a rename is a copy and a delete), but a PUT
is: an object appears whole or not at all, so each file is uploaded as one object under its final
name, never renamed. Files go up samples and weights first, then the curves, then the results,
and the manifest last, so a table never names samples that are not there yet; a driver that dies
between two files leaves tables one flush apart, which `resume` heals from Tune's records like any
stale table (sweep/record/heal.py).

Credentials and endpoint come from the environment, as for Tune itself (pyarrow's S3 client reads
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import UserError
from sweep.record.layout import LOCAL_ONLY, MANIFEST, TUNE_DIR, UPLOAD_ORDER

log = logging.getLogger("gansweep")
BUCKET_SCHEMES = ("s3", "gs", "gcs")  # URIs whose first path part is a bucket that must exist


# The store's answers that retrying cannot change: the sweep stops cleanly on them (resumable) instead of
# failing trial after trial (pyarrow's AWS error names)
STORE_FAULTS = ("NETWORK_CONNECTION", "ACCESS_DENIED", "NO_SUCH_BUCKET", "INVALID_ACCESS_KEY_ID",
                "SIGNATURE_DOES_NOT_MATCH", "EXPIRED_TOKEN")


def store_fault(error: BaseException | str) -> str | None:
    """The store's reason when an error (or its message, e.g. a trial's error file) says the storage
    cannot be reached or refuses (STORE_FAULTS); else None."""
    text = str(error)
    if re.search(r"AWS Error (" + "|".join(STORE_FAULTS) + r")\b", text) is None:
        return None
    return store_reason(text)


def store_reason(e: BaseException | str) -> str:
    """The store's own reason in a pyarrow error, without its request ids: e.g. "ACCESS_DENIED" or
    "NETWORK_CONNECTION: curlCode: 7, Could not connect to server"."""
    text = str(e)
    m = re.search(r"AWS Error (\w+) during \w+ operation: ?([^;\n]*)", text)
    if m is None:
        return (text.strip().splitlines() or ["no reason given"])[0][:300]
    detail = re.sub(r"\s*\(Request ID:[^)]*\)", "", m.group(2)).strip().rstrip(".")
    return m.group(1) + (f": {detail}" if detail and detail != "No response body" else "")


def is_uri(text: str | os.PathLike) -> bool:
    return "://" in str(text)


def working_copy(uri: str) -> Path:
    """The local folder a URI's run is worked on in: ./runs/<name>, as `gansweep run` uses."""
    return Path("runs") / uri.rstrip("/").rsplit("/", 1)[-1]


def record_uri(tune_path: str) -> str:
    """A run's URI in object storage from its Tune experiment's (RUN_URI/tune): where its record and
    lease live beside it."""
    return tune_path.rstrip("/").removesuffix(f"/{TUNE_DIR}")


@dataclass(frozen=True)
class Storage:
    """--storage, read once: where runs live, a folder (local, or shared by a cluster's nodes) or a
    URI in object storage. `gansweep run` and `gansweep slurm` ask it where a run goes."""
    root: str  # the folder as given, or the URI without a trailing '/'
    remote: bool  # object storage: the run is worked on in a local copy and mirrored there

    @classmethod
    def parse(cls, text: str) -> "Storage":
        return cls(text.rstrip("/"), True) if is_uri(text) else cls(str(text), False)

    def run_dir(self, name: str) -> Path:
        """This machine's folder of run `name`: ROOT/name, or its working copy ./runs/name."""
        return working_copy(f"{self.root}/{name}") if self.remote else Path(self.root) / name

    def tune_path(self, name: str) -> str:
        """Where run `name`'s Tune experiment lives: RUN_URI/tune, or the run folder's tune/ (absolute,
        as Tune needs)."""
        return f"{self.root}/{name}/{TUNE_DIR}" if self.remote else str((self.run_dir(name) / TUNE_DIR).resolve())

    def run_uri(self, name: str) -> str | None:
        """Run `name`'s URI in object storage (its record and lease), or None for a folder."""
        return f"{self.root}/{name}" if self.remote else None


def run_argument(text: str) -> tuple[Path, "RecordStore | None"]:
    """A run named on a command line (resume, status, report, compare): a path as given, or a URI
    in object storage as (its working copy ./runs/<name>, its store)."""
    if is_uri(text):
        return working_copy(text), RecordStore(text)
    return Path(text), None


def _rank(rel: str) -> int:
    return next((i for i, prefix in enumerate(UPLOAD_ORDER) if rel.startswith(prefix)), 0)


class RecordStore:
    """The record of one run under a storage URI, and what this process last pushed there."""

    def __init__(self, uri: str):
        from pyarrow import fs as pafs

        self.uri = uri.rstrip("/")
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for bad URIs and clients
            raise UserError(f"{uri}: cannot open this storage ({e})") from None
        self._pushed: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) pushed

    def __repr__(self) -> str:
        return f"RecordStore({self.uri!r})"

    def push(self, folder: Path, paths: list[Path] | None = None) -> int:
        """Upload every file of the working copy that changed since the last push (or, given paths, those
        of them that changed: a finished point's kept files, without listing the whole copy); returns how
        many."""
        changed = []
        for path in sorted(folder.rglob("*") if paths is None else paths):
            rel = path.relative_to(folder).as_posix()
            if not path.is_file() or rel.split("/", 1)[0] in LOCAL_ONLY or ".tmp" in path.name:
                continue
            st = path.stat()
            if self._pushed.get(rel) != (st.st_size, st.st_mtime_ns):
                changed.append((rel, path, (st.st_size, st.st_mtime_ns)))
        for rel, path, stamp in sorted(changed, key=lambda c: _rank(c[0])):
            with self.fs.open_output_stream(f"{self.root}/{rel}") as out:  # one PUT: whole or absent
                out.write(path.read_bytes())
            self._pushed[rel] = stamp
        return len(changed)

    def reach(self) -> None:
        """Refuse, in one line naming the URI and the store's own reason, storage that cannot be reached
        or refuses: its endpoint down, no such bucket, wrong credentials, no permission to list. Reads
        only, so it leaves nothing behind (pyarrow's delete of a probe object would leave a folder
        marker); a store that lets this through but refuses writes stops the sweep at its first write."""
        from pyarrow import fs as pafs

        bucket = self.root.split("/", 1)[0]
        try:
            if self.uri.split("://", 1)[0] in BUCKET_SCHEMES and \
                    self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise UserError(f"{self.uri}: cannot reach this storage: no such bucket {bucket!r}")
            self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError as e:  # pyarrow's errors of the store, its network and its credentials
            raise self._unreachable(e) from None

    def _unreachable(self, e: OSError) -> UserError:
        return UserError(f"{self.uri}: cannot reach this storage: {store_reason(e)}")

    def check(self) -> None:
        """Refuse storage that cannot be reached (reach) or a URI that holds no run, before anything is
        made locally."""
        from pyarrow import fs as pafs

        self.reach()
        try:
            found = self.fs.get_file_info(f"{self.root}/{MANIFEST}").type == pafs.FileType.File
        except OSError as e:
            raise self._unreachable(e) from None
        if not found:
            raise UserError(f"{self.uri}: no run there ({MANIFEST} not found)")

    def pull(self, folder: Path) -> int:
        """Download the record (not Tune's experiment, which Tune reads where it is) into folder,
        replacing what is there; returns how many files. Refuses a URI that holds no run."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        files = {i.path[len(self.root) + 1:]: i for i in infos if i.type == pafs.FileType.File}
        files = {rel: i for rel, i in files.items() if rel.split("/", 1)[0] not in LOCAL_ONLY}
        if MANIFEST not in files:
            raise UserError(f"{self.uri}: no run there ({MANIFEST} not found)")
        for rel, info in files.items():
            dest = folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".pull.tmp")
            with self.fs.open_input_stream(info.path) as src:
                tmp.write_bytes(src.read())
            os.replace(tmp, dest)  # locally, rename is atomic
            st = dest.stat()
            self._pushed[rel] = (st.st_size, st.st_mtime_ns)  # the store has it already
        log.debug("pulled %d files of %s into %s", len(files), self.uri, folder)
        return len(files)
