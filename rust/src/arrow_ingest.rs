//! Columnar ingest: fold Arrow arrays into the aggregator. (stub: being implemented)
