//! Bytes in, aggregated events out. (stub: being implemented by the lead)
