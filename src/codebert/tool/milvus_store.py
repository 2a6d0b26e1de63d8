"""`codebert index --store milvus`: the vectors in Milvus, an existing distributed vector database.

Past one machine's memory (docs/scale.md: 100M functions' vectors alone are 150 GB), the vectors go
to a Milvus cluster, which shards and replicates them; `--milvus-uri http://host:19530` names one.
Without a URI the store is Milvus Lite (the `milvus-lite` package: the same engine embedded in the
process, one file `INDEX/milvus.db`), so the same code runs on a laptop, in the tests and against
a cluster, through the `pymilvus` client.

What lives where: each function's vector, language and path in a Milvus collection; everything
else (files, functions, their text, the lexical index) stays in the generation's SQLite file,
which is small beside the vectors, is what an update diffs against, and is read only for the k
hits of a query. Each generation is its own collection, `<prefix>_g<generation>`, filled before
the manifest names it and dropped when a later generation replaces it, so an update killed at
any moment leaves the previous generation whole (as with the local store). The builder also keeps
the generation's vectors in `vectors-g.npy` (memory-mapped when read): an update re-encodes only
changed files and writes the new collection from them.

Search: FLAT (exact) up to --exact-limit vectors, HNSW (M 32, efConstruction 128, ef 128) above,
by inner product of unit vectors (= cosine); a language filter is a scalar filter in the search,
a path filter an id filter.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from codebert.errors import UserError

LITE_FILE = "milvus.db"
HNSW = {"M": 32, "efConstruction": 128}
EF_SEARCH = 128
INSERT_BATCH = 5_000


def default_uri(index: Path) -> str:
    return str((index / LITE_FILE).resolve())


def collection_prefix(index: Path) -> str:
    """A collection name prefix unique to this index folder (several indexes may share one cluster)."""
    return "codebert_" + hashlib.sha256(str(index.resolve()).encode()).hexdigest()[:12]


def collection(prefix: str, generation: int) -> str:
    return f"{prefix}_g{generation}"


@functools.lru_cache(maxsize=4)
def client(uri: str):
    # Imported here: pymilvus only for an index that uses Milvus.
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri)
    except Exception as exc:  # noqa: BLE001 -- pymilvus raises its own and grpc's errors for an unreachable server
        raise UserError(f"Milvus at {uri}: cannot connect ({str(exc).splitlines()[0][:200]})") from None


def write_generation(uri: str, name: str, vectors: np.ndarray, ids: np.ndarray, languages: list[str], paths: list[str],
                     exact_limit: int) -> None:
    """A new collection `name` holding the vectors with their language and path, indexed and loaded."""
    # Imported here: pymilvus only for an index that uses Milvus.
    from pymilvus import DataType

    milvus = client(uri)
    if milvus.has_collection(name):  # a leftover of an update that was killed: start it again
        milvus.drop_collection(name)
    dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else 1
    schema = milvus.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("language", DataType.VARCHAR, max_length=64)
    schema.add_field("path", DataType.VARCHAR, max_length=4096)
    params = milvus.prepare_index_params()
    if len(ids) > exact_limit:
        params.add_index("vector", index_type="HNSW", metric_type="IP", params=HNSW)
    else:
        params.add_index("vector", index_type="FLAT", metric_type="IP")
    milvus.create_collection(name, schema=schema, index_params=params)
    for start in range(0, len(ids), INSERT_BATCH):
        stop = min(start + INSERT_BATCH, len(ids))
        milvus.insert(name, [{"id": int(ids[i]), "vector": vectors[i].tolist(), "language": languages[i], "path": paths[i][:4096]}
                             for i in range(start, stop)])
    milvus.flush(name)
    milvus.load_collection(name)


def drop_others(uri: str, prefix: str, keep: str) -> None:
    """Drop this index's collections other than `keep` (older generations, leftovers of killed updates)."""
    milvus = client(uri)
    for name in milvus.list_collections():
        if name.startswith(prefix + "_g") and name != keep:
            milvus.drop_collection(name)


class MilvusSearch:
    """The query side: top-k by inner product in one generation's collection."""

    def __init__(self, uri: str, name: str):
        self.uri, self.name = uri, name
        milvus = client(uri)
        if not milvus.has_collection(name):
            raise UserError(f"Milvus at {uri} has no collection {name}: run `codebert index` on the same paths again to rebuild it")
        milvus.load_collection(name)

    def search(self, vectors: np.ndarray, k: int, language: str | None, allowed: np.ndarray | None) -> list[list[tuple[int, float]]]:
        clauses = []
        if language is not None:
            clauses.append(f'language == "{language}"')  # a known language (checked against SQLite before)
        if allowed is not None:
            if not len(allowed):
                return [[] for _ in vectors]
            clauses.append(f"id in [{','.join(str(int(i)) for i in allowed)}]")
        found = client(self.uri).search(self.name, data=[v.tolist() for v in vectors], limit=k, filter=" and ".join(clauses),
                                        search_params={"metric_type": "IP", "params": {"ef": max(EF_SEARCH, k)}})
        return [[(int(hit["id"]), float(hit["distance"])) for hit in row] for row in found]

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        rows = client(self.uri).query(self.name, ids=[int(i) for i in ids], output_fields=["vector"])
        return {int(r["id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows}
