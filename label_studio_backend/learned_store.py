"""Where learned evidence lives: on disk under ``SIMAGES_HOME``, or in Redis (``SIMAGES_CACHE_URL``) for replicas.

Per project: a counter per field (``learned_labels.Contribution``), what each annotation id
contributed (so an updated annotation replaces its counts instead of adding them twice, and a deleted
one takes them back), the number of annotations counted and the *generation* that names the state in
``model_version``. Every change is one atomic step: a Lua script in Redis (concurrent webhooks on
several replicas), a diskcache transaction on disk (SQLite's lock, several processes on one folder).

Unlike the response cache this is not a cache: it is never evicted. A Redis that stops answering
mid-run costs the learned labels of the predictions made meanwhile (one WARNING, then DEBUG), and
webhooks answer 503 while it is away; at start a Redis that does not answer stops the backend.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import diskcache

from simages_core.shared_store import SharedStoreError, connect_from_env

from .learned_labels import Contribution, Evidence
from .region_memo_store import MEMO_FOLDER, DiskMemoStore, MemoStore, MemoStoreError, RedisMemoStore

if TYPE_CHECKING:
    from simages_core.shared_store import SharedRedis

logger = logging.getLogger("simages_label_studio")

STORE_FOLDER = "label-studio-learned-labels"
"""The on-disk store's folder under ``SIMAGES_HOME``."""
REDIS_PREFIX = "simages:learned:"


class LearnedStoreError(Exception):
    """The store could not be read or written (Redis gone, disk full); the message names it, no secret."""


@dataclass(frozen=True)
class Applied:
    """What a change did: annotations now counted, the generation, and whether it moved."""

    annotations: int
    generation: int
    moved: bool


class LearnedStore(Protocol):
    def apply(self, project: str, annotation_id: int, contribution: Contribution) -> Applied: ...
    def evidence(self, project: str) -> Evidence: ...
    def next_generation(self, project: str) -> int: ...
    def projects(self, project_id: int) -> list[str]: ...
    def memos(self) -> MemoStore: ...
    def close(self) -> None: ...

    @property
    def where(self) -> str: ...


def _replace(counts: dict[str, int], old: Mapping[str, int], new: Mapping[str, int]) -> None:
    for key, value in old.items():
        counts[key] = counts.get(key, 0) - value
    for key, value in new.items():
        counts[key] = counts.get(key, 0) + value
    for key in [k for k, v in counts.items() if v <= 0]:
        del counts[key]


_NEW_META = {"generation": 0, "since": 0, "annotations": 0}


class DiskLearnedStore:
    """Evidence in a diskcache folder: per project one counter dict and one meta dict, per annotation its counts."""

    def __init__(self, directory: Path, every: int) -> None:
        self.directory = directory
        self.every = every
        try:
            self._cache = diskcache.Cache(str(directory), timeout=10, eviction_policy="none")
        except (OSError, sqlite3.Error) as exc:
            raise LearnedStoreError(f"learned labels store {directory}: cannot open ({exc})") from None
        self._lock = threading.Lock()  # diskcache transactions are per process; threads take turns too
        self._memos: DiskMemoStore | None = None

    def memos(self) -> MemoStore:
        """Answered regions' memos, in a bounded folder beside this one (opened at first use)."""
        with self._lock:
            if self._memos is None:
                try:
                    self._memos = DiskMemoStore(self.directory.parent / MEMO_FOLDER)
                except MemoStoreError as exc:
                    raise LearnedStoreError(str(exc)) from None
            return self._memos

    def projects(self, project_id: int) -> list[str]:
        """Every stored project key of a Label Studio project id (one per Label Studio instance)."""
        try:
            keys = [k[1] for k in self._cache.iterkeys() if isinstance(k, tuple) and k[0] == "meta"]
        except (OSError, sqlite3.Error) as exc:
            raise LearnedStoreError(f"learned labels store {self.directory}: cannot read ({exc})") from None
        return sorted(k for k in keys if isinstance(k, str) and k.split(".", 1)[0] == str(project_id))

    @property
    def where(self) -> str:
        return str(self.directory)

    def apply(self, project: str, annotation_id: int, contribution: Contribution) -> Applied:
        try:
            with self._lock, self._cache.transact():
                counts: dict[str, int] = self._cache.get(("counts", project), {})
                meta: dict[str, int] = {**_NEW_META, **self._cache.get(("meta", project), {})}
                key = ("contribution", project, annotation_id)
                old: dict[str, int] | None = self._cache.get(key)
                _replace(counts, old or {}, contribution.counts)
                moved = False
                if contribution.empty:
                    self._cache.delete(key)
                else:
                    self._cache.set(key, dict(contribution.counts))
                if old is None and not contribution.empty:
                    meta["annotations"] += 1
                    meta["since"] += 1
                    if meta["since"] >= self.every:
                        meta.update(generation=meta["generation"] + 1, since=0)
                        moved = True
                elif old is not None and contribution.empty:
                    meta["annotations"] -= 1
                self._cache.set(("counts", project), counts)
                self._cache.set(("meta", project), meta)
                return Applied(meta["annotations"], meta["generation"], moved)
        except (OSError, sqlite3.Error) as exc:
            raise LearnedStoreError(f"learned labels store {self.directory}: cannot write ({exc})") from None

    def evidence(self, project: str) -> Evidence:
        try:
            counts = self._cache.get(("counts", project), {})
            meta = {**_NEW_META, **self._cache.get(("meta", project), {})}
        except (OSError, sqlite3.Error) as exc:
            raise LearnedStoreError(f"learned labels store {self.directory}: cannot read ({exc})") from None
        return Evidence.from_counts(counts, meta["annotations"], meta["generation"])

    def next_generation(self, project: str) -> int:
        try:
            with self._lock, self._cache.transact():
                meta = {**_NEW_META, **self._cache.get(("meta", project), {})}
                meta.update(generation=meta["generation"] + 1, since=0)
                self._cache.set(("meta", project), meta)
                return meta["generation"]
        except (OSError, sqlite3.Error) as exc:
            raise LearnedStoreError(f"learned labels store {self.directory}: cannot write ({exc})") from None

    def close(self) -> None:
        if self._memos is not None:
            self._memos.close()
        self._cache.close()


# Atomic replace of one annotation's contribution. KEYS: 1 counts hash, 2 contributions hash (annotation
# id -> JSON of its counts), 3 meta hash {generation, since}. ARGV: 1 annotation id, 2 new counts JSON
# ("{}" un-learns), 3 every. Returns {annotations, generation, moved}.
_APPLY = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  for field, n in pairs(cjson.decode(old)) do
    if redis.call('HINCRBY', KEYS[1], field, -n) <= 0 then redis.call('HDEL', KEYS[1], field) end
  end
end
local new = cjson.decode(ARGV[2])
local empty = next(new) == nil
for field, n in pairs(new) do redis.call('HINCRBY', KEYS[1], field, n) end
if empty then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
local moved = 0
if (not old) and (not empty) then
  if redis.call('HINCRBY', KEYS[3], 'since', 1) >= tonumber(ARGV[3]) then
    redis.call('HINCRBY', KEYS[3], 'generation', 1)
    redis.call('HSET', KEYS[3], 'since', 0)
    moved = 1
  end
end
return {redis.call('HLEN', KEYS[2]), tonumber(redis.call('HGET', KEYS[3], 'generation') or '0'), moved}
"""


class RedisLearnedStore:
    """Evidence in Redis hashes under ``simages:learned:<project>:``, shared by every replica."""

    def __init__(self, shared: SharedRedis, every: int) -> None:
        self._shared = shared
        self.every = every
        self._apply = shared.client.register_script(_APPLY)
        self._memos = RedisMemoStore(shared)

    def memos(self) -> MemoStore:
        """Answered regions' memos, in the same Redis: any replica may receive the annotation."""
        return self._memos

    def projects(self, project_id: int) -> list[str]:
        """Every stored project key of a Label Studio project id (one per Label Studio instance)."""
        with self._call("read") as client:
            keys = list(client.scan_iter(match=f"{REDIS_PREFIX}{project_id}*:meta", count=500))
        names = [(k.decode() if isinstance(k, bytes) else k)[len(REDIS_PREFIX) : -len(":meta")] for k in keys]
        return sorted(n for n in names if n.split(".", 1)[0] == str(project_id))

    @property
    def where(self) -> str:
        return str(self._shared.where)

    def _keys(self, project: str) -> list[str]:
        base = f"{REDIS_PREFIX}{project}:"
        return [base + "counts", base + "contributions", base + "meta"]

    @contextmanager
    def _call(self, what: str) -> Iterator[Any]:
        """The Redis client; its failures become a ``LearnedStoreError`` naming the Redis (no credentials)."""
        try:
            with self._shared.calling() as client:
                yield client
        except SharedStoreError as exc:
            raise LearnedStoreError(f"learned labels: cannot {what}: {exc}") from None

    def apply(self, project: str, annotation_id: int, contribution: Contribution) -> Applied:
        payload = json.dumps(dict(contribution.counts), separators=(",", ":"))
        with self._call("write"):
            annotations, generation, moved = self._apply(
                keys=self._keys(project), args=[annotation_id, payload, self.every]
            )
        return Applied(int(annotations), int(generation), bool(moved))

    def evidence(self, project: str) -> Evidence:
        counts_key, contrib_key, meta_key = self._keys(project)
        with self._call("read") as client:
            pipe = client.pipeline(transaction=True)
            pipe.hgetall(counts_key)
            pipe.hlen(contrib_key)
            pipe.hget(meta_key, "generation")
            counts, annotations, generation = pipe.execute()
        parsed = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in counts.items()}
        return Evidence.from_counts(parsed, int(annotations), int(generation or 0))

    def next_generation(self, project: str) -> int:
        meta_key = self._keys(project)[2]
        with self._call("write") as client:
            pipe = client.pipeline(transaction=True)
            pipe.hincrby(meta_key, "generation", 1)
            pipe.hset(meta_key, "since", 0)
            generation, _ = pipe.execute()
        return int(generation)

    def close(self) -> None:
        self._shared.close()


def open_learned_store(simages_home: Path, every: int) -> LearnedStore:
    """Redis when ``SIMAGES_CACHE_URL`` is set (``SharedStoreUnavailable`` when it does not answer), else disk."""
    shared = connect_from_env()
    if shared is None:
        return DiskLearnedStore(simages_home / STORE_FOLDER, every)
    return RedisLearnedStore(shared, every)
