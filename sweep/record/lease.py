"""One writer per run in object storage: a lease object beside the record, RUN_URI/.gansweep.lease.

The local run lock (sweep/runner/lock.py) guards one machine's working copy; two machines resuming
one bucket run would each have their own. So `run` and `resume` with s3:// storage hold a lease:

  * taken by a conditional PUT that creates the object only if it is absent (S3's If-None-Match: *),
    holding its holder (host, pid, command, since);
  * renewed every BEAT_S seconds by a PUT conditional on the lease being the one this driver last
    wrote (If-Match: its ETag): a driver whose lease was taken over finds out at its next beat and
    stops the sweep cleanly (the `on_lost` it was given);
  * live while renewed: a second driver is refused in one line naming the holder. A lease not renewed
    for STALE_S seconds (the store's own clock: its Date against the object's Last-Modified, so the
    machines' clocks need not agree), or whose holder's process is gone from this same host, is taken
    over by a PUT conditional on the stale lease's ETag: of two drivers taking it at once, one wins;
  * deleted when the driver ends (conditional on its ETag); a SIGKILLed driver leaves it, stale after
    STALE_S seconds, at once for a resume on the same host.

Needs boto3 (`pip install 'gansweep[s3]'`): pyarrow's S3 client has no conditional writes. Other
stores (gs://, ...) get a warning instead: keep to one driver at a time there.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from sweep.errors import UserError
from sweep.record.layout import LEASE

BEAT_S = 20.0  # how often a holder renews its lease
STALE_S = 90.0  # a lease not renewed for this long is taken over (4 beats missed, and some)

log = logging.getLogger("gansweep")


class Lease:
    """`with Lease(uri, "resume", on_lost):` holds the run's lease for the block's life."""

    def __init__(self, uri: str, command: str, on_lost: Callable[[str], None]):
        self.uri, self.command, self.on_lost = uri.rstrip("/"), command, on_lost
        self.etag: str | None = None
        self.client = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the store -------------------------------------------------------------------------------
    def _s3(self):
        if self.client is None:
            try:
                import boto3
            except ImportError:
                raise UserError(f"{self.uri}: a run in s3:// holds a lease that keeps a second driver off it, "
                                "which needs boto3: pip install 'gansweep[s3]'") from None
            parts = urlsplit(self.uri)
            query = parse_qs(parts.query)
            endpoint = None
            if "endpoint_override" in query:  # pyarrow's form: s3://bucket/path?endpoint_override=host:port
                scheme = query.get("scheme", ["https"])[0]
                endpoint = f"{scheme}://{query['endpoint_override'][0]}"
            self.client = boto3.client("s3", endpoint_url=endpoint)  # else AWS_ENDPOINT_URL, as pyarrow
            self.bucket, self.key = parts.netloc, f"{parts.path.strip('/')}/{LEASE}".lstrip("/")
        return self.client

    def _put(self, **condition) -> str:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
              "since": self._since, "beat": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        r = self._s3().put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(me).encode(), **condition)
        return r["ETag"]

    def _read(self) -> tuple[dict, str, float]:
        """(the lease's holder, its ETag, seconds since it was last written by the store's clock)."""
        r = self._s3().get_object(Bucket=self.bucket, Key=self.key)
        try:
            holder = json.loads(r["Body"].read())
        except ValueError:
            holder = {}
        now = r["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        age = (parsedate_to_datetime(now) - r["LastModified"]).total_seconds() if now else 0.0
        return holder if isinstance(holder, dict) else {}, r["ETag"], age

    # --- taking, renewing, giving back ---------------------------------------------------------
    def __enter__(self) -> "Lease":
        if not self.uri.startswith("s3://"):
            log.warning("%s: no lease on this store (s3:// only): make sure no other gansweep writes this run",
                        self.uri)
            return self
        self._since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            self.etag = self._put(IfNoneMatch="*")
        except Exception as e:
            if not _precondition_failed(e):
                raise UserError(f"{self.uri}: cannot take the run's lease: {_reason(e)}") from None
            self._take_over()
        self._thread = threading.Thread(target=self._beat, name="gansweep-lease", daemon=True)
        self._thread.start()
        return self

    def _take_over(self) -> None:
        try:
            holder, etag, age = self._read()
        except Exception as e:
            if _no_such_key(e):  # given back meanwhile: take it as new
                self.etag = self._put(IfNoneMatch="*")
                return
            raise UserError(f"{self.uri}: cannot read the run's lease: {_reason(e)}") from None
        who = describe(holder)
        gone = holder.get("host") == socket.gethostname() and not _alive(holder.get("pid"))
        if age < STALE_S and not gone:
            raise UserError(f"{self.uri} is in use by {who}, its lease renewed {age:.0f}s ago: wait for it to "
                            f"end, or stop it (a lease not renewed for {STALE_S:.0f}s is taken over)")
        try:
            self.etag = self._put(IfMatch=etag)
        except Exception as e:
            if _precondition_failed(e):
                raise UserError(f"{self.uri}: another driver took the run's lease at the same moment") from None
            raise UserError(f"{self.uri}: cannot take the run's lease: {_reason(e)}") from None
        why = "whose process is gone" if gone else f"not renewed for {age:.0f}s"
        log.warning("took over the lease of %s from %s, %s", self.uri, who, why)

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except Exception as e:
                if _precondition_failed(e):
                    try:
                        who = describe(self._read()[0])
                    except Exception:
                        who = "another driver"
                    log.error("the lease of %s was taken over by %s: this driver stops writing the run", self.uri,
                              who)
                    self.etag = None
                    self.on_lost(who)
                    return
                log.debug("could not renew the lease of %s (%s); retrying in %.0fs", self.uri, _reason(e), BEAT_S)

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.etag is not None:
            try:
                self._s3().delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
            except Exception as e:  # stale after STALE_S seconds anyway
                log.debug("could not give back the lease of %s: %s", self.uri, _reason(e))
            self.etag = None
        return False


def describe(holder: dict) -> str:
    """`gansweep resume` (pid 123 on host, since ...), from a lease's holder."""
    if not {"command", "pid", "host"} <= set(holder):
        return "another gansweep driver"
    return f"`gansweep {holder['command']}` (pid {holder['pid']} on {holder['host']}, since {holder.get('since', '?')})"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, TypeError, ValueError):  # not ours to signal, or no pid: count it alive
        return True
    return True


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _precondition_failed(e: Exception) -> bool:
    # 412 PreconditionFailed; 409 ConditionalRequestConflict: another conditional write in flight
    return _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _no_such_key(e: Exception) -> bool:
    return _code(e) in ("NoSuchKey", "404")


def _reason(e: Exception) -> str:
    return _code(e) or (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
