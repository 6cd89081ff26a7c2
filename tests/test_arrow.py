"""Columnar ingest through the Arrow PyCapsule interface (Polars and PyArrow)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from canary_stream import Aggregator, AggregatorConfig, Windowing

T0 = 1_795_669_200_000


def frame(n: int = 10_000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    canary = rng.random(n) < 0.2
    return pl.DataFrame(
        {
            "target": ["podinfo.test"] * n,
            "version": np.where(canary, "canary", "primary"),
            "status": np.where(rng.random(n) < np.where(canary, 0.05, 0.01), 503, 200).astype(np.int32),
            "latency_ms": rng.lognormal(np.log(20.0), 0.7, n),
            "timestamp": T0 + np.arange(n, dtype=np.int64) * 5,
        }
    )


def expected(df: pl.DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    g = df.group_by("target", "version").agg(pl.len(), (pl.col("status") < 500).sum().alias("ok"))
    return {(r["target"], r["version"]): (r["len"], r["ok"]) for r in g.iter_rows(named=True)}


def got(agg: Aggregator) -> dict[tuple[str, str], tuple[int, int]]:
    return {(s.target, s.version): (s.requests, s.successes) for s in agg.snapshot(None)}


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda df: df, id="polars-utf8view"),
        pytest.param(
            lambda df: df.with_columns(pl.col("target", "version").cast(pl.Categorical)),
            id="polars-categorical",
        ),
        pytest.param(lambda df: df.to_arrow(), id="pyarrow-table"),
        pytest.param(lambda df: df.to_arrow().to_batches()[0], id="pyarrow-recordbatch"),
        pytest.param(
            lambda df: df.to_arrow().cast(
                pa.schema(
                    [
                        ("target", pa.dictionary(pa.int8(), pa.string())),
                        ("version", pa.large_string()),
                        ("status", pa.uint16()),
                        ("latency_ms", pa.float32()),
                        ("timestamp", pa.timestamp("ms", tz="UTC")),
                    ]
                )
            ),
            id="pyarrow-dictionary-large-string-timestamp",
        ),
    ],
)
def test_every_arrow_encoding_gives_exact_counts(convert: object) -> None:
    df = frame()
    agg = Aggregator(AggregatorConfig(format="ndjson"))
    res = agg.ingest_arrow(convert(df))  # type: ignore[operator]
    assert (res["rows"], res["accepted"]) == (df.height, df.height)
    assert got(agg) == expected(df)
    [canary] = [s for s in agg.snapshot(None) if s.version == "canary"]
    exact = np.sort(df.filter(pl.col("version") == "canary")["latency_ms"].to_numpy())
    want = exact[int(0.99 * (len(exact) - 1))]
    assert canary.p99_ms == pytest.approx(want, rel=0.0101)


def test_nulls_are_counted_per_reason() -> None:
    df = pl.DataFrame(
        {
            "target": ["t", "t", None, "t"],
            "version": ["v", "v", "v", "v"],
            "status": [200, None, 200, 500],
            "latency_ms": [1.0, 2.0, 3.0, None],
            "timestamp": [T0, T0, T0, T0],
        }
    )
    agg = Aggregator()
    res = agg.ingest_arrow(df)
    assert res["accepted"] == 2
    assert res["rejected"] == {"missing_field": 1, "unattributable_version": 1}
    [s] = agg.snapshot(None)
    assert (s.requests, s.latency_count, s.failures) == (2, 1, 1)
    assert agg.totals().malformed == {"missing_field": 1, "unattributable_version": 1}


def test_column_mapping_and_units() -> None:
    df = pl.DataFrame({"svc": ["a"], "ver": ["b"], "code": [200], "dur_us": [1500], "ts": [T0]})
    agg = Aggregator()
    agg.ingest_arrow(
        df,
        {
            "target": "svc",
            "version": "ver",
            "status": "code",
            "latency": "dur_us",
            "latency_unit": "us",
            "timestamp": "ts",
        },
    )
    [s] = agg.snapshot(None)
    assert (s.target, s.version, s.p50_ms) == ("a", "b", pytest.approx(1.5, rel=0.01))


def test_wrong_columns_are_named() -> None:
    agg = Aggregator()
    with pytest.raises(ValueError, match="status"):
        agg.ingest_arrow(
            pl.DataFrame({"target": ["t"], "version": ["v"], "status": ["200"], "latency_ms": [1.0]})
        )
    with pytest.raises(ValueError, match="latency_ms"):
        agg.ingest_arrow(pl.DataFrame({"target": ["t"], "version": ["v"], "status": [200]}))
    with pytest.raises(ValueError, match="Arrow data"):
        agg.ingest_arrow([1, 2, 3])
    assert agg.snapshot(None) == []


def test_key_limit_and_memory_are_visible() -> None:
    df = pl.DataFrame(
        {
            "target": ["t"] * 3,
            "version": ["a", "b", "c"],
            "status": [200] * 3,
            "latency_ms": [1.0] * 3,
            "timestamp": [T0] * 3,
        }
    )
    agg = Aggregator(AggregatorConfig(windowing=Windowing(max_keys=2, ring_secs=60)))
    agg.ingest_arrow(df)
    assert agg.totals().skipped == {"key_limit": 1}
    mem = agg.memory()
    assert len(mem["keys"]) == 2
    assert all(0 < k["bytes"] <= 256 * 1024 for k in mem["keys"])
    assert mem["total_bytes"] >= sum(k["bytes"] for k in mem["keys"])
