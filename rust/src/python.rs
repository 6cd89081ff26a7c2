//! PyO3 binding layer: a thin translation between Python values and the pure core.
//!
//! Every call that touches many lines releases the GIL. Panics are caught here and turned
//! into `CorePanic` exceptions, so a bug in the core can never abort the interpreter.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyList};

use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::RecordBatchStreamReader;
use arrow_array::{RecordBatch, StructArray};

use crate::als::AlsStream;
use crate::arrow_ingest::{ColumnMapping, IngestStats};

use crate::aggregate::{self, KeySnapshot, WindowQuery};
use crate::attribution::{self, Rule, SourceContext};
use crate::classify::{Classifier, StatusSet};
use crate::flags::FLAG_NAMES;
use crate::generator::{self, Clients, GenConfig, Latency, ServiceSpec, Style, VersionSpec};
use crate::malformed::{Reason, ReasonCounts};
use crate::parse::ndjson::{Mapping, Unit};
use crate::parse::unwrap::Wrapping;
use crate::parse::{detect, Format};
use crate::pipeline::{self, Pipeline};

create_exception!(
    _native,
    CorePanic,
    PyRuntimeError,
    "A bug in the Rust core (a panic) was caught."
);

/// Run `f`, turning a panic into `CorePanic`.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        CorePanic::new_err(format!("panic in canary-stream core: {msg}"))
    })
}

// ---------------------------------------------------------------- config parsing

/// Reads a config dict, rejecting unknown keys with the field path.
struct Fields<'py> {
    dict: Option<Bound<'py, PyDict>>,
    path: String,
    seen: Vec<String>,
}

impl<'py> Fields<'py> {
    fn new(obj: Option<&Bound<'py, PyAny>>, path: &str) -> PyResult<Self> {
        let dict = match obj {
            None => None,
            Some(o) if o.is_none() => None,
            Some(o) => Some(
                o.cast::<PyDict>()
                    .map_err(|_| PyValueError::new_err(format!("{path}: expected a mapping")))?
                    .clone(),
            ),
        };
        Ok(Fields {
            dict,
            path: path.to_string(),
            seen: Vec::new(),
        })
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn raw(&mut self, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.seen.push(key.to_string());
        match &self.dict {
            None => Ok(None),
            Some(d) => Ok(d.get_item(key)?.filter(|v| !v.is_none())),
        }
    }

    fn get<T: FromPyObjectOwned<'py>>(&mut self, key: &str) -> PyResult<Option<T>> {
        match self.raw(key)? {
            None => Ok(None),
            Some(v) => v.extract::<T>().map(Some).map_err(|e| {
                let e: PyErr = e.into();
                PyValueError::new_err(format!("{}: {}", self.field(key), e.value(v.py())))
            }),
        }
    }

    fn finish(self) -> PyResult<()> {
        if let Some(d) = &self.dict {
            for k in d.keys() {
                let k: String = k.extract().unwrap_or_default();
                if !self.seen.contains(&k) {
                    return Err(PyValueError::new_err(format!(
                        "{}: unknown field",
                        self.field(&k)
                    )));
                }
            }
        }
        Ok(())
    }
}

use pyo3::conversion::FromPyObjectOwned;

fn bad(field: String, msg: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{field}: {msg}"))
}

fn parse_format(field: &str, s: &str) -> PyResult<Option<Format>> {
    if s == "auto" {
        return Ok(None);
    }
    Format::from_name(s).map(Some).ok_or_else(|| {
        let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
        bad(
            field.into(),
            format!(
                "unknown format {s:?}; expected auto or one of {}",
                names.join(", ")
            ),
        )
    })
}

fn parse_unit(field: String, s: &str) -> PyResult<Unit> {
    Unit::from_name(s).ok_or_else(|| {
        bad(
            field,
            format!("unknown unit {s:?}; expected ns, us, ms or s"),
        )
    })
}

/// Copy the named fields of a config dict, when present, onto a struct's fields of the
/// same name: `typed_fields!(f, c, seed: u64, rps: f64)`.
macro_rules! typed_fields {
    ($f:ident, $m:ident, $($name:ident: $ty:ty),+ $(,)?) => {
        $(
            if let Some(v) = $f.get::<$ty>(stringify!($name))? {
                $m.$name = v;
            }
        )+
    };
}

/// [`typed_fields`] for string fields.
macro_rules! string_fields {
    ($f:ident, $m:ident, $($name:ident),+ $(,)?) => {
        typed_fields!($f, $m, $($name: String),+);
    };
}

fn mapping_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Mapping> {
    let mut f = Fields::new(obj, "mapping")?;
    let mut m = Mapping::default();
    string_fields!(
        f,
        m,
        status,
        duration,
        timestamp,
        target,
        version,
        grpc_status,
        flags,
        upstream_cluster,
        sni,
        upstream_host,
        authority
    );
    if let Some(u) = f.get::<String>("duration_unit")? {
        m.duration_unit = parse_unit(f.field("duration_unit"), &u)?;
    }
    if let Some(u) = f.get::<String>("timestamp_unit")? {
        m.timestamp_unit = parse_unit(f.field("timestamp_unit"), &u)?;
    }
    if m.status.is_empty() {
        return Err(bad(f.field("status"), "must name the status field"));
    }
    f.finish()?;
    Ok(m)
}

fn rules_from(field: String, names: Vec<String>) -> PyResult<Vec<Rule>> {
    names
        .iter()
        .map(|n| {
            Rule::from_name(n).ok_or_else(|| {
                let all: Vec<_> = Rule::ALL.iter().map(|r| r.name()).collect();
                bad(
                    field.clone(),
                    format!("unknown rule {n:?}; expected one of {}", all.join(", ")),
                )
            })
        })
        .collect()
}

fn attribution_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<attribution::Config> {
    let mut f = Fields::new(obj, "attribution")?;
    let mut c = attribution::Config::default();
    if let Some(r) = f.get::<Vec<String>>("rules")? {
        c.rules = rules_from(f.field("rules"), r)?;
    }
    if let Some(p) = f.get::<HashMap<String, Vec<String>>>("per_target")? {
        for (t, r) in p {
            let rules = rules_from(format!("{}.{t}", f.field("per_target")), r)?;
            c.per_target.insert(t, rules);
        }
    }
    if let Some(pairs) = f.get::<Vec<Vec<String>>>("suffixes")? {
        c.suffixes = pairs
            .into_iter()
            .map(|p| match <[String; 2]>::try_from(p) {
                Ok([s, v]) => Ok((s, v)),
                Err(_) => Err(bad(
                    f.field("suffixes"),
                    "each entry must be [suffix, version]",
                )),
            })
            .collect::<PyResult<_>>()?;
    }
    if let Some(d) = f.get::<String>("cluster_domain")? {
        c.cluster_domain = d;
    }
    c.default_version = f.get::<String>("default_version")?;
    typed_fields!(f, c, pod_plain_version: String);
    f.finish()?;
    Ok(c)
}

fn classifier_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Classifier> {
    let mut f = Fields::new(obj, "classifier")?;
    let mut c = Classifier::default();
    if let Some(preset) = f.get::<String>("preset")? {
        c = match preset.as_str() {
            "default" => Classifier::default(),
            "flagger" => Classifier::flagger(),
            other => {
                return Err(bad(
                    f.field("preset"),
                    format!("unknown preset {other:?}; expected default or flagger"),
                ))
            }
        };
    }
    if let Some(codes) = f.get::<Vec<u16>>("failure_status")? {
        let mut set = StatusSet::empty();
        for s in codes {
            if s > 999 {
                return Err(bad(
                    f.field("failure_status"),
                    format!("{s} is not an HTTP status"),
                ));
            }
            set.insert(s);
        }
        c.failure_status = set;
    }
    if let Some(codes) = f.get::<Vec<u16>>("grpc_failure")? {
        let mut mask = 0u32;
        for g in codes {
            if g > 16 {
                return Err(bad(
                    f.field("grpc_failure"),
                    format!("{g} is not a gRPC status code (0-16)"),
                ));
            }
            mask |= 1 << g;
        }
        c.grpc_failure_mask = mask;
    }
    f.finish()?;
    Ok(c)
}

fn aggregate_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<aggregate::Config> {
    let mut f = Fields::new(obj, "aggregate")?;
    let mut c = aggregate::Config::default();
    typed_fields!(
        f,
        c,
        ring_secs: u32,
        allowed_lateness_ms: i64,
        max_future_ms: i64,
        max_keys: usize,
        idle_evict_ms: i64,
        thresholds_ms: Vec<f64>,
    );
    f.finish()?;
    Ok(c)
}

fn pipeline_config(cfg: Option<&Bound<'_, PyAny>>) -> PyResult<pipeline::Config> {
    let mut f = Fields::new(cfg, "")?;
    let mut c = pipeline::Config::default();
    if let Some(s) = f.get::<String>("format")? {
        c.format = parse_format("format", &s)?;
    }
    if let Some(n) = f.get::<usize>("max_line_bytes")? {
        c.max_line_bytes = n;
    }
    if let Some(w) = f.get::<String>("wrapping")? {
        c.wrapping = match w.as_str() {
            "auto" => Wrapping::Auto,
            "none" => Wrapping::None,
            "cri" => Wrapping::Cri,
            "docker" => Wrapping::Docker,
            other => {
                return Err(bad(
                    "wrapping".into(),
                    format!("unknown wrapping {other:?}; expected auto, none, cri or docker"),
                ))
            }
        };
    }
    c.mapping = mapping_from(f.raw("mapping")?.as_ref())?;
    c.attribution = attribution_from(f.raw("attribution")?.as_ref())?;
    c.classifier = classifier_from(f.raw("classifier")?.as_ref())?;
    c.aggregate = aggregate_from(f.raw("aggregate")?.as_ref())?;
    f.finish()?;
    Ok(c)
}

// ---------------------------------------------------------------- results to Python

fn reasons_dict<'py>(py: Python<'py>, r: &ReasonCounts) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, n) in r.nonzero() {
        d.set_item(name, n)?;
    }
    Ok(d)
}

fn snapshot_dict<'py>(py: Python<'py>, s: &KeySnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("target", &s.target)?;
    d.set_item("version", &s.version)?;
    d.set_item("start_ms", s.start_ms)?;
    d.set_item("end_ms", s.end_ms)?;
    d.set_item("requests", s.requests)?;
    d.set_item("successes", s.successes)?;
    d.set_item("failures", s.failures)?;
    d.set_item("status_0", s.status_0)?;
    d.set_item("status_2xx", s.status_2xx)?;
    d.set_item("status_3xx", s.status_3xx)?;
    d.set_item("status_4xx", s.status_4xx)?;
    d.set_item("status_5xx", s.status_5xx)?;
    d.set_item("rps", s.rps)?;
    d.set_item("success_rate", s.success_rate)?;
    d.set_item("latency_count", s.latency_count)?;
    d.set_item("p50_ms", s.p50_ms)?;
    d.set_item("p90_ms", s.p90_ms)?;
    d.set_item("p99_ms", s.p99_ms)?;
    d.set_item("p999_ms", s.p999_ms)?;
    d.set_item("min_ms", s.min_ms)?;
    d.set_item("max_ms", s.max_ms)?;
    d.set_item("mean_ms", s.mean_ms)?;
    let flags = PyDict::new(py);
    for (i, n) in s.flags.iter().enumerate() {
        if *n > 0 {
            flags.set_item(FLAG_NAMES[i], n)?;
        }
    }
    d.set_item("flags", flags)?;
    let exceed = PyList::empty(py);
    for (t, n) in &s.exceed {
        exceed.append((t, n))?;
    }
    d.set_item("exceed", exceed)?;
    let codes = PyDict::new(py);
    for (code, n) in &s.status_codes {
        codes.set_item(code, n)?;
    }
    d.set_item("status_codes", codes)?;
    d.set_item("status_codes_overflow", s.status_codes_overflow)?;
    let series = PyList::empty(py);
    for b in &s.series {
        let p = PyDict::new(py);
        p.set_item("start_ms", b.start_ms)?;
        p.set_item("requests", b.requests)?;
        p.set_item("successes", b.successes)?;
        p.set_item("failures", b.failures)?;
        p.set_item("latency_count", b.latency_count)?;
        p.set_item("exceed", b.exceed.clone())?;
        series.append(p)?;
    }
    d.set_item("series", series)?;
    Ok(d)
}

// ---------------------------------------------------------------- the generator

/// Largest `lines` the Python layer lets the generator produce in one call.
const MAX_GENERATED_LINES: usize = 50_000_000;

fn latency_from(field: String, obj: &Bound<'_, PyAny>) -> PyResult<Latency> {
    let mut f = Fields::new(Some(obj), &field)?;
    let kind: String = f.get("kind")?.ok_or_else(|| {
        bad(
            f.field("kind"),
            "required (lognormal, bimodal, pareto, constant)",
        )
    })?;
    let need = |f: &mut Fields<'_>, k: &str| -> PyResult<f64> {
        f.get::<f64>(k)?.ok_or_else(|| bad(f.field(k), "required"))
    };
    let l = match kind.as_str() {
        "lognormal" => Latency::LogNormal {
            median_ms: need(&mut f, "median_ms")?,
            sigma: need(&mut f, "sigma")?,
        },
        "bimodal" => Latency::Bimodal {
            fast_ms: need(&mut f, "fast_ms")?,
            slow_ms: need(&mut f, "slow_ms")?,
            slow_share: need(&mut f, "slow_share")?,
            sigma: need(&mut f, "sigma")?,
        },
        "pareto" => Latency::Pareto {
            scale_ms: need(&mut f, "scale_ms")?,
            shape: need(&mut f, "shape")?,
        },
        "constant" => Latency::Constant(need(&mut f, "value_ms")?),
        other => {
            return Err(bad(
                f.field("kind"),
                format!("unknown latency kind {other:?}"),
            ))
        }
    };
    f.finish()?;
    Ok(l)
}

fn gen_config_from(obj: &Bound<'_, PyAny>) -> PyResult<GenConfig> {
    let mut f = Fields::new(Some(obj), "")?;
    let fmt_name: String = f.get("format")?.unwrap_or_else(|| "istio-text".into());
    let format = parse_format("format", &fmt_name)?
        .ok_or_else(|| bad("format".into(), "the generator needs a concrete format"))?;
    let mut c = GenConfig::demo(format);
    typed_fields!(f, c, seed: u64);
    if let Some(v) = f.get::<usize>("lines")? {
        if v > MAX_GENERATED_LINES {
            return Err(bad(
                "lines".into(),
                format!("at most {MAX_GENERATED_LINES} per call"),
            ));
        }
        c.lines = v;
    }
    typed_fields!(
        f,
        c,
        start_ms: i64,
        rps: f64,
        malformed_rate: f64,
        out_of_order_ms: i64,
        json_all_strings: bool,
        tcp_rate: f64,
    );
    if let Some(v) = f.get::<String>("clients")? {
        c.clients = Clients::from_name(&v).ok_or_else(|| {
            bad(
                "clients".into(),
                format!("unknown {v:?}; expected mixed or mesh"),
            )
        })?;
    }
    if let Some(v) = f.get::<String>("attribution")? {
        c.attribution = match v.as_str() {
            "subset" => Style::Subset,
            "host_suffix" => Style::HostSuffix,
            "sni" => Style::Sni,
            other => {
                return Err(bad(
                    "attribution".into(),
                    format!("unknown style {other:?}; expected subset, host_suffix or sni"),
                ))
            }
        };
    }
    if let Some(list) = f.raw("services")? {
        let list = list
            .cast::<PyList>()
            .map_err(|_| bad("services".into(), "expected a list"))?;
        let mut services = Vec::new();
        for (si, item) in list.iter().enumerate() {
            let at = format!("services[{si}]");
            let mut sf = Fields::new(Some(&item), &at)?;
            let name: String = sf
                .get("name")?
                .ok_or_else(|| bad(sf.field("name"), "required"))?;
            let namespace: String = sf.get("namespace")?.unwrap_or_else(|| "default".into());
            let port: u16 = sf.get("port")?.unwrap_or(80);
            let mut versions = Vec::new();
            if let Some(vl) = sf.raw("versions")? {
                let vl = vl
                    .cast::<PyList>()
                    .map_err(|_| bad(sf.field("versions"), "expected a list"))?;
                for (vi, v) in vl.iter().enumerate() {
                    let vat = format!("{at}.versions[{vi}]");
                    let mut vf = Fields::new(Some(&v), &vat)?;
                    let vname: String = vf
                        .get("name")?
                        .ok_or_else(|| bad(vf.field("name"), "required"))?;
                    let latency = match vf.raw("latency")? {
                        Some(l) => latency_from(vf.field("latency"), &l)?,
                        None => Latency::LogNormal {
                            median_ms: 20.0,
                            sigma: 0.6,
                        },
                    };
                    versions.push(VersionSpec {
                        name: vname,
                        weight: vf.get("weight")?.unwrap_or(1.0),
                        error_rate: vf.get("error_rate")?.unwrap_or(0.0),
                        reset_rate: vf.get("reset_rate")?.unwrap_or(0.0),
                        latency,
                    });
                    vf.finish()?;
                }
            }
            sf.finish()?;
            services.push(ServiceSpec {
                name,
                namespace,
                port,
                versions,
            });
        }
        c.services = services;
    }
    f.finish()?;
    c.validate().map_err(PyValueError::new_err)?;
    Ok(c)
}

/// Generate access-log lines (deterministic for a given config and seed). The config
/// starts from the demo rollout of its `format`; every given key overrides it.
#[pyfunction]
fn generate<'py>(py: Python<'py>, config: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let cfg = gen_config_from(config)?;
    let out = py.detach(|| {
        guarded(|| {
            let mut out = Vec::new();
            generator::generate(&cfg, &mut out, None).map(|_| out)
        })
    })?;
    let out = out.map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
}

/// Like [`generate`], plus the ground truth of every line as columns.
#[pyfunction]
fn generate_with_truth<'py>(
    py: Python<'py>,
    config: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
    let cfg = gen_config_from(config)?;
    let (bytes, truth) = py
        .detach(|| guarded(|| generator::generate_vec(&cfg)))?
        .map_err(PyValueError::new_err)?;
    let d = PyDict::new(py);
    d.set_item("ts_ms", truth.iter().map(|t| t.ts_ms).collect::<Vec<_>>())?;
    d.set_item(
        "target",
        truth
            .iter()
            .map(|t| cfg.expected_target(t))
            .collect::<Vec<_>>(),
    )?;
    d.set_item(
        "version",
        truth
            .iter()
            .map(|t| cfg.expected_version(t))
            .collect::<Vec<_>>(),
    )?;
    d.set_item("status", truth.iter().map(|t| t.status).collect::<Vec<_>>())?;
    d.set_item(
        "grpc_status",
        truth.iter().map(|t| t.grpc_status).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "latency_ms",
        truth.iter().map(|t| t.latency_ms).collect::<Vec<_>>(),
    )?;
    d.set_item("flags", truth.iter().map(|t| t.flags.0).collect::<Vec<_>>())?;
    d.set_item(
        "kind",
        truth
            .iter()
            .map(|t| format!("{:?}", t.kind).to_lowercase())
            .collect::<Vec<_>>(),
    )?;
    d.set_item(
        "malformed",
        truth.iter().map(|t| t.malformed).collect::<Vec<_>>(),
    )?;
    Ok((PyBytes::new(py, &bytes), d))
}

// ---------------------------------------------------------------- the pipeline

/// A parser + attribution + aggregator for one stream. Not thread-safe: one owner.
#[pyclass(module = "canary_stream._native", name = "Pipeline")]
struct PyPipeline {
    inner: Pipeline,
}

/// What `feed` reads: a `bytes` object, or any C-contiguous buffer of bytes (the HTTP source
/// hands on the `bytearray` a request body was received into, so that it is not copied again).
enum Input<'py> {
    Bytes(Bound<'py, PyBytes>),
    Buffer(PyBuffer<u8>),
}

impl<'py> Input<'py> {
    fn of(data: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            return Ok(Input::Bytes(bytes.clone()));
        }
        let buffer = PyBuffer::<u8>::get(data)?;
        if !buffer.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "feed: data must be bytes or a contiguous buffer of bytes",
            ));
        }
        Ok(Input::Buffer(buffer))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Input::Bytes(b) => b.as_bytes(),
            // SAFETY: the buffer stays exported while `self` lives (PyBuffer releases it on drop),
            // so its owner cannot resize or free the memory (a bytearray refuses to resize while
            // exported); it is C-contiguous (checked in `of`) and `len_bytes` long. Its contents
            // could still be written by other Python code while the GIL is released: the callers
            // (the sources) hand over buffers nothing else holds.
            Input::Buffer(b) => unsafe {
                std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes())
            },
        }
    }
}

fn context(pod: String, namespace: String, target: String, version: String) -> SourceContext {
    SourceContext {
        pod,
        namespace,
        target,
        version,
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[pymethods]
impl PyPipeline {
    #[new]
    #[pyo3(signature = (config=None))]
    fn new(config: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let cfg = pipeline_config(config)?;
        let inner = Pipeline::new(cfg).map_err(PyValueError::new_err)?;
        Ok(PyPipeline { inner })
    }

    /// Feed bytes (any number of lines; a trailing partial line is kept for the next call).
    /// Returns (lines, accepted) for this call. The GIL is released while parsing.
    #[pyo3(signature = (data, *, pod=String::new(), namespace=String::new(), target=String::new(), version=String::new(), now_ms=None))]
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        pod: String,
        namespace: String,
        target: String,
        version: String,
        now_ms: Option<i64>,
    ) -> PyResult<(u64, u64)> {
        let ctx = context(pod, namespace, target, version);
        let now = now_ms.unwrap_or_else(wall_ms);
        let inner = &mut self.inner;
        let input = Input::of(data)?;
        let bytes = input.bytes();
        let stats = py.detach(|| guarded(|| inner.feed(bytes, &ctx, now)))?;
        Ok((stats.lines, stats.accepted))
    }

    /// Fold gRPC-framed Envoy `StreamAccessLogsMessage`s of one ALS stream (`stream` keeps the
    /// node identity of its first message). Returns (entries, accepted). GIL released.
    #[pyo3(signature = (data, stream, *, now_ms=None))]
    fn feed_als(
        &mut self,
        py: Python<'_>,
        data: &[u8],
        mut stream: PyRefMut<'_, PyAlsStream>,
        now_ms: Option<i64>,
    ) -> PyResult<(u64, u64)> {
        let now = now_ms.unwrap_or_else(wall_ms);
        let inner = &mut self.inner;
        let st = &mut stream.inner;
        let stats = py.detach(|| guarded(|| st.feed_framed(inner, data, now)))?;
        Ok((stats.lines, stats.accepted))
    }

    /// End of stream: process a last line without a newline.
    #[pyo3(signature = (*, pod=String::new(), namespace=String::new(), target=String::new(), version=String::new(), now_ms=None))]
    fn finish(
        &mut self,
        pod: String,
        namespace: String,
        target: String,
        version: String,
        now_ms: Option<i64>,
    ) -> PyResult<(u64, u64)> {
        let ctx = context(pod, namespace, target, version);
        let now = now_ms.unwrap_or_else(wall_ms);
        let stats = guarded(|| self.inner.finish(&ctx, now))?;
        Ok((stats.lines, stats.accepted))
    }

    /// Per-key figures over a window (`window_ms=None`: since the key appeared).
    #[pyo3(signature = (window_ms=None, *, end_ms=None, target=None, series=false))]
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
        window_ms: Option<i64>,
        end_ms: Option<i64>,
        target: Option<String>,
        series: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        if let Some(w) = window_ms {
            if w <= 0 {
                return Err(bad("window_ms".into(), "must be positive"));
            }
        }
        let q = WindowQuery {
            window_ms,
            end_ms,
            target,
            series,
        };
        let agg = self.inner.aggregator();
        let snaps = py.detach(|| guarded(|| agg.snapshot(&q)))?;
        let out = PyList::empty(py);
        for s in &snaps {
            out.append(snapshot_dict(py, s)?)?;
        }
        Ok(out)
    }

    /// Running totals: bytes, lines, accepted, and the skipped lines per reason.
    fn totals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.inner.totals();
        let d = PyDict::new(py);
        d.set_item("bytes", t.bytes)?;
        d.set_item("lines", t.lines)?;
        d.set_item("accepted", t.accepted)?;
        let malformed = ReasonCounts(std::array::from_fn(|i| {
            if Reason::ALL[i].is_malformed() {
                t.reasons.0[i]
            } else {
                0
            }
        }));
        let skipped = ReasonCounts(std::array::from_fn(|i| {
            if Reason::ALL[i].is_malformed() {
                0
            } else {
                t.reasons.0[i]
            }
        }));
        d.set_item("malformed", reasons_dict(py, &malformed)?)?;
        d.set_item("skipped", reasons_dict(py, &skipped)?)?;
        d.set_item("pending_bytes", self.inner.pending_bytes())?;
        Ok(d)
    }

    /// The format in use (`None` until detected).
    #[getter]
    fn format(&self) -> Option<&'static str> {
        self.inner.format().map(Format::name)
    }

    /// Newest event time seen, ms since the epoch.
    #[getter]
    fn watermark_ms(&self) -> Option<i64> {
        self.inner.aggregator().watermark_ms()
    }

    /// Map an upstream host (`ip` or `ip:port`) to a version (the controller feeds pod IPs).
    fn set_host(&mut self, host: &str, version: &str) {
        self.inner.attributor_mut().set_host(host, version);
    }

    fn remove_host(&mut self, host: &str) -> bool {
        self.inner.attributor_mut().remove_host(host)
    }

    fn replace_hosts(&mut self, hosts: HashMap<String, String>) {
        self.inner.attributor_mut().replace_hosts(hosts);
    }

    /// Latency thresholds (ms) whose exceedances are counted for every key of `target`.
    fn set_thresholds(&mut self, target: &str, thresholds_ms: Vec<f64>) -> PyResult<()> {
        self.inner
            .aggregator_mut()
            .set_thresholds(target, thresholds_ms)
            .map_err(PyValueError::new_err)
    }

    /// Drop keys idle for `idle_evict_ms` before `now_ms`; returns how many.
    fn evict_idle(&mut self, now_ms: i64) -> usize {
        self.inner.aggregator_mut().evict_idle(now_ms)
    }

    /// Memory held: `{"total_bytes": n, "keys": [{"target", "version", "bytes"}]}`.
    fn memory<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let agg = self.inner.aggregator();
        let d = PyDict::new(py);
        d.set_item("total_bytes", agg.memory_bytes())?;
        let keys = PyList::empty(py);
        for (id, target, version) in agg.keys() {
            let k = PyDict::new(py);
            k.set_item("target", target)?;
            k.set_item("version", version)?;
            k.set_item("bytes", agg.key_memory_bytes(id))?;
            keys.append(k)?;
        }
        d.set_item("keys", keys)?;
        Ok(d)
    }

    /// Fold Arrow data (anything with `__arrow_c_stream__` or `__arrow_c_array__`: a
    /// Polars DataFrame, a pyarrow Table or RecordBatch) into the aggregator, zero-copy.
    #[pyo3(signature = (data, mapping=None, now_ms=None))]
    fn ingest_arrow<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        mapping: Option<&Bound<'py, PyAny>>,
        now_ms: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mapping = column_mapping_from(mapping)?;
        let batches = import_arrow(data)?;
        let now = now_ms.unwrap_or_else(wall_ms);
        let inner = &mut self.inner;
        let result = py.detach(|| {
            guarded(|| {
                let mut total = IngestStats::default();
                for b in &batches {
                    let s = inner.ingest_batch(b, &mapping, now)?;
                    total.rows += s.rows;
                    total.accepted += s.accepted;
                    total.reasons.merge(&s.reasons);
                }
                Ok::<_, String>(total)
            })
        })?;
        let stats = result.map_err(PyValueError::new_err)?;
        let d = PyDict::new(py);
        d.set_item("rows", stats.rows)?;
        d.set_item("accepted", stats.accepted)?;
        d.set_item("rejected", reasons_dict(py, &stats.reasons)?)?;
        Ok(d)
    }
}

fn column_mapping_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<ColumnMapping> {
    let mut f = Fields::new(obj, "mapping")?;
    let mut m = ColumnMapping::default();
    string_fields!(f, m, target, version, status, latency, timestamp);
    m.success = f.get::<String>("success")?;
    if let Some(u) = f.get::<String>("latency_unit")? {
        m.latency_unit = parse_unit(f.field("latency_unit"), &u)?;
    }
    f.finish()?;
    Ok(m)
}

/// Import Arrow data through the PyCapsule interface, holding the GIL (a stream's
/// callbacks may need it); the batches themselves are then processed without it.
fn import_arrow(data: &Bound<'_, PyAny>) -> PyResult<Vec<RecordBatch>> {
    if data.hasattr("__arrow_c_stream__")? {
        let capsule = data.call_method0("__arrow_c_stream__")?;
        let capsule = capsule
            .cast::<PyCapsule>()
            .map_err(|_| PyValueError::new_err("__arrow_c_stream__ did not return a PyCapsule"))?;
        let ptr = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
        // SAFETY: the capsule holds a valid FFI_ArrowArrayStream (Arrow PyCapsule
        // interface); from_raw moves it out and marks the capsule's copy released.
        let reader = unsafe { RecordBatchStreamReader::from_raw(ptr.as_ptr().cast()) }
            .map_err(|e| PyValueError::new_err(format!("arrow stream: {e}")))?;
        return reader
            .map(|b| b.map_err(|e| PyValueError::new_err(format!("arrow stream: {e}"))))
            .collect();
    }
    if data.hasattr("__arrow_c_array__")? {
        let pair = data.call_method0("__arrow_c_array__")?;
        let (schema, array): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
        let schema = schema
            .cast::<PyCapsule>()
            .map_err(|_| PyValueError::new_err("__arrow_c_array__: schema is not a PyCapsule"))?;
        let array = array
            .cast::<PyCapsule>()
            .map_err(|_| PyValueError::new_err("__arrow_c_array__: array is not a PyCapsule"))?;
        let schema_ptr = schema.pointer_checked(Some(c"arrow_schema"))?;
        let array_ptr = array.pointer_checked(Some(c"arrow_array"))?;
        // SAFETY: the capsules hold a valid schema and array (Arrow PyCapsule interface);
        // the array is moved out (its capsule copy marked released), the schema borrowed.
        let data = unsafe {
            let array = FFI_ArrowArray::from_raw(array_ptr.as_ptr().cast());
            let schema: &FFI_ArrowSchema = &*schema_ptr.as_ptr().cast::<FFI_ArrowSchema>();
            from_ffi(array, schema)
        }
        .map_err(|e| PyValueError::new_err(format!("arrow array: {e}")))?;
        let structs = StructArray::from(data);
        return Ok(vec![RecordBatch::from(structs)]);
    }
    Err(PyValueError::new_err(
        "expected Arrow data (an object with __arrow_c_stream__ or __arrow_c_array__, e.g. a Polars DataFrame or a pyarrow Table)",
    ))
}

/// Guess the format of a sample of lines; `None` when nothing matches.
#[pyfunction]
fn detect_format(sample: &[u8]) -> PyResult<Option<&'static str>> {
    guarded(|| detect::detect(sample).map(Format::name))
}

/// Parse lines without aggregating (debugging, tests): one dict per non-blank line,
/// `{"ok": bool, "reason": str | None, ...fields}`.
#[pyfunction]
#[pyo3(signature = (data, format, mapping=None))]
fn parse_lines<'py>(
    py: Python<'py>,
    data: &[u8],
    format: &str,
    mapping: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let fmt = parse_format("format", format)?
        .ok_or_else(|| bad("format".into(), "parse_lines needs a concrete format"))?;
    let mapping = mapping_from(mapping)?;
    let out = PyList::empty(py);
    let mut err: Option<PyErr> = None;
    guarded(|| {
        pipeline::parse_each(fmt, &mapping, data, |_line, res| {
            if err.is_some() {
                return;
            }
            let d = PyDict::new(py);
            let r = (|| -> PyResult<()> {
                match res {
                    Err(reason) => {
                        d.set_item("ok", false)?;
                        d.set_item("reason", reason.name())?;
                    }
                    Ok(rec) => {
                        d.set_item("ok", true)?;
                        d.set_item("reason", py.None())?;
                        d.set_item("ts_ms", rec.ts_ms)?;
                        d.set_item("status", rec.status)?;
                        d.set_item("grpc_status", rec.grpc_status)?;
                        d.set_item("latency_ms", rec.latency_ms)?;
                        d.set_item("flags", rec.flags.names().collect::<Vec<_>>())?;
                        d.set_item("upstream_cluster", rec.upstream_cluster)?;
                        d.set_item("sni", rec.sni)?;
                        d.set_item("upstream_host", rec.upstream_host)?;
                        d.set_item("authority", rec.authority)?;
                        d.set_item("target", rec.target)?;
                        d.set_item("version", rec.version)?;
                    }
                }
                out.append(&d)
            })();
            if let Err(e) = r {
                err = Some(e);
            }
        })
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Names of the malformed/skip reasons, in a stable order.
#[pyfunction]
fn reason_names() -> Vec<(&'static str, bool)> {
    Reason::ALL
        .iter()
        .map(|r| (r.name(), r.is_malformed()))
        .collect()
}

/// For tests of the panic guard only: panics inside the core.
#[pyfunction]
fn _panic_for_test() -> PyResult<()> {
    guarded(|| panic!("deliberate test panic"))
}

/// State of one Envoy ALS stream: the node identity sent in its first message.
#[pyclass(module = "canary_stream._native", name = "AlsStream")]
#[derive(Default)]
struct PyAlsStream {
    inner: AlsStream,
}

#[pymethods]
impl PyAlsStream {
    #[new]
    fn new() -> Self {
        PyAlsStream::default()
    }

    /// The node identity (`None` before the identifier arrived): node_id, log_name, pod,
    /// namespace, workload, version.
    fn identity<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(id) = self.inner.identity() else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("node_id", &id.node_id)?;
        d.set_item("log_name", &id.log_name)?;
        d.set_item("pod", &id.pod)?;
        d.set_item("namespace", &id.namespace)?;
        d.set_item("workload", &id.workload)?;
        d.set_item("version", &id.version)?;
        Ok(Some(d))
    }

    /// Messages and entries taken in so far.
    #[getter]
    fn messages(&self) -> u64 {
        self.inner.messages
    }

    #[getter]
    fn entries(&self) -> u64 {
        self.inner.entries
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPipeline>()?;
    m.add_class::<PyAlsStream>()?;
    crate::kafka::py::register(m)?;
    m.add_function(wrap_pyfunction!(detect_format, m)?)?;
    m.add_function(wrap_pyfunction!(parse_lines, m)?)?;
    m.add_function(wrap_pyfunction!(reason_names, m)?)?;
    m.add_function(wrap_pyfunction!(generate, m)?)?;
    m.add_function(wrap_pyfunction!(generate_with_truth, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add("CorePanic", m.py().get_type::<CorePanic>())?;
    m.add("FLAG_NAMES", FLAG_NAMES.to_vec())?;
    m.add(
        "FORMATS",
        Format::ALL.iter().map(|f| f.name()).collect::<Vec<_>>(),
    )?;
    Ok(())
}
