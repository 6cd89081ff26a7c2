//! Python binding of the Kafka fetcher (`canary_stream._native.KafkaFetcher`).

use std::os::raw::{c_int, c_void};
use std::time::Duration;

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::batch::{BufferPool, DecodeOptions};
use super::client::{FetchConfig, Fetcher, NodeRequest, PartitionRequest};
use crate::python::guarded;

/// One leader and its partitions as Python passes them: `(host, port, [(topic, partition, offset)])`.
type NodeArg = (String, u16, Vec<(String, i32, i64)>);

/// Fetches record batches from partition leaders and decodes them into line buffers, with the
/// GIL released. Not thread-safe: one caller at a time (the Kafka source's fetch loop).
#[pyclass(module = "canary_stream._native", name = "KafkaFetcher")]
pub struct PyKafkaFetcher {
    // Boxed: the envelope searchers hold 32-byte aligned AVX2 vectors, and a pyclass's contents
    // live in Python's object memory, aligned to 16 only (aligned loads from there segfault).
    inner: Box<Fetcher>,
}

fn positive(name: &str, v: i64) -> PyResult<i64> {
    if v <= 0 {
        return Err(PyValueError::new_err(format!(
            "kafka.{name}: must be positive, got {v}"
        )));
    }
    Ok(v)
}

#[pymethods]
impl PyKafkaFetcher {
    #[new]
    #[pyo3(signature = (*, client_id="canary-stream".to_string(), max_wait_ms=100, max_bytes=32<<20,
        partition_max_bytes=4<<20, max_records=50_000, connect_timeout_ms=5_000,
        request_timeout_ms=30_000, check_crcs=true, max_record_bytes=4<<20,
        target_header="target".to_string(), version_header="version".to_string(),
        key_attribution=true, envelope_key=None, pipeline=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        client_id: String,
        max_wait_ms: i64,
        max_bytes: i64,
        partition_max_bytes: i64,
        max_records: i64,
        connect_timeout_ms: i64,
        request_timeout_ms: i64,
        check_crcs: bool,
        max_record_bytes: i64,
        target_header: String,
        version_header: String,
        key_attribution: bool,
        envelope_key: Option<String>,
        pipeline: bool,
    ) -> PyResult<Self> {
        if !(0..=i32::MAX as i64).contains(&max_wait_ms) {
            return Err(PyValueError::new_err(format!(
                "kafka.fetch_max_wait_ms: must be >= 0, got {max_wait_ms}"
            )));
        }
        let cfg = FetchConfig {
            client_id,
            max_wait_ms: max_wait_ms as i32,
            min_bytes: 1,
            max_bytes: positive("fetch_max_bytes", max_bytes)?.min(i32::MAX as i64) as i32,
            partition_max_bytes: positive("max_partition_fetch_bytes", partition_max_bytes)?
                .min(i32::MAX as i64) as i32,
            pipeline,
            max_records: positive("max_records", max_records)? as u64,
            connect_timeout: Duration::from_millis(positive(
                "connect_timeout_ms",
                connect_timeout_ms,
            )? as u64),
            request_timeout: Duration::from_millis(positive(
                "request_timeout_ms",
                request_timeout_ms,
            )? as u64),
            decode: DecodeOptions {
                check_crcs,
                max_record_bytes: positive("max_record_bytes", max_record_bytes)? as usize,
                target_header: target_header.into_bytes(),
                version_header: version_header.into_bytes(),
                key_attribution,
                envelope_key,
            },
        };
        Ok(PyKafkaFetcher {
            inner: Box::new(Fetcher::new(cfg)),
        })
    }

    /// Fetch once. `nodes`: ``[(host, port, [(topic, partition, offset), ...]), ...]``, one entry
    /// per leader. Returns ``(partitions, node_errors)``: per partition ``(topic, partition,
    /// fetch_offset, error_code, next_offset, high_watermark, log_start_offset, records,
    /// value_bytes, groups, skipped, partial_tail)`` with ``groups`` a list of ``(target,
    /// version, lines: KafkaLines, records)`` and ``skipped`` a dict of reason -> count; per broker that
    /// failed ``(host, port, message)``.
    fn fetch<'py>(
        &mut self,
        py: Python<'py>,
        nodes: Vec<NodeArg>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let requests: Vec<NodeRequest> = nodes
            .into_iter()
            .map(|(host, port, parts)| NodeRequest {
                host,
                port,
                partitions: parts
                    .into_iter()
                    .map(|(topic, partition, offset)| PartitionRequest {
                        topic,
                        partition,
                        offset,
                    })
                    .collect(),
            })
            .collect();
        let inner = &mut self.inner;
        let (results, errors) = py.detach(|| guarded(|| inner.fetch(&requests)))?;
        let pool = self.inner.pool();
        let parts = PyList::empty(py);
        for r in results {
            let groups = PyList::empty(py);
            for g in r.lines.groups {
                let lines = Bound::new(
                    py,
                    PyKafkaLines {
                        data: g.data,
                        pool: Some(pool.clone()),
                    },
                )?;
                groups.append((g.target, g.version, lines, g.records))?;
            }
            let skipped = PyDict::new(py);
            for (why, n) in &r.lines.skipped {
                skipped.set_item(why.name(), n)?;
            }
            parts.append(PyTuple::new(
                py,
                [
                    r.topic.into_pyobject(py)?.into_any(),
                    r.partition.into_pyobject(py)?.into_any(),
                    r.fetch_offset.into_pyobject(py)?.into_any(),
                    r.error_code.into_pyobject(py)?.into_any(),
                    r.lines.next_offset.into_pyobject(py)?.into_any(),
                    r.high_watermark.into_pyobject(py)?.into_any(),
                    r.log_start_offset.into_pyobject(py)?.into_any(),
                    r.lines.records.into_pyobject(py)?.into_any(),
                    r.lines.value_bytes.into_pyobject(py)?.into_any(),
                    groups.into_any(),
                    skipped.into_any(),
                    pyo3::types::PyBool::new(py, r.lines.partial_tail)
                        .to_owned()
                        .into_any(),
                ],
            )?)?;
        }
        let errs = PyList::empty(py);
        for e in errors {
            errs.append((e.host, e.port, e.message))?;
        }
        PyTuple::new(py, [parts.into_any(), errs.into_any()])
    }

    /// Fetches answered by the pipelined request already in flight.
    #[getter]
    fn pipelined(&self) -> u64 {
        self.inner.pipelined()
    }

    /// Pipelined requests whose responses were dropped (the next fetch asked for other offsets).
    #[getter]
    fn discarded(&self) -> u64 {
        self.inner.discarded()
    }

    /// Idle line buffers in the pool (given back by dropped `KafkaLines`).
    #[getter]
    fn pooled_buffers(&self) -> usize {
        self.inner.pool().idle()
    }

    /// Close every broker connection (the next fetch reconnects).
    fn close(&mut self) {
        self.inner.close();
    }
}

/// The lines of one `(target, version)` group of a partition fetch, handed to Python without a
/// copy: a read-only bytes-like object (buffer protocol) that `Aggregator.feed` reads in place.
/// Immutable: the bytes never change while the object lives, so an exported view stays valid.
/// Its buffer goes back to the fetcher's pool when Python drops it: an exported view holds a
/// reference to the object, so no buffer still visible from Python is ever reused.
#[pyclass(module = "canary_stream._native", name = "KafkaLines", frozen)]
pub struct PyKafkaLines {
    data: Vec<u8>,
    pool: Option<BufferPool>,
}

impl Drop for PyKafkaLines {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.data));
        }
    }
}

#[pymethods]
impl PyKafkaLines {
    /// Export the lines read-only (a request for a writable buffer raises BufferError).
    ///
    /// # Safety
    /// Called by Python with a valid `Py_buffer` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("KafkaLines: no buffer view to fill"));
        }
        let data = &slf.get().data;
        let len = ffi::Py_ssize_t::try_from(data.len())
            .map_err(|_| PyBufferError::new_err("KafkaLines: too large"))?;
        // SAFETY: `view` is non-null and Python's to fill. PyBuffer_FillInfo takes a new reference
        // to `slf` in `view.obj`, so the object (and the Vec it owns) outlives the export; the Vec
        // is never modified or moved while the object lives (frozen class, no mutating method).
        // readonly = 1: a PyBUF_WRITABLE request fails with BufferError. The format is a static
        // string: nothing to free in __releasebuffer__.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut c_void,
                len,
                1,
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(PyErr::take(slf.py())
                .unwrap_or_else(|| PyBufferError::new_err("KafkaLines: export failed")))
        }
    }

    /// Bytes of lines held.
    fn __len__(&self) -> usize {
        self.data.len()
    }

    fn __repr__(&self) -> String {
        format!("<KafkaLines of {} bytes>", self.data.len())
    }
}

/// Add the classes to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyKafkaFetcher>()?;
    m.add_class::<PyKafkaLines>()
}
