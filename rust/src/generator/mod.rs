//! Deterministic generator of realistic access logs in every supported [`Format`].
//!
//! The tests, the benchmarks and the bundled sample log use it. One call to
//! [`generate`] writes `cfg.lines` lines (each ending in `\n`) and, optionally, one
//! [`Truth`] per line that says what the line means: which service and version served
//! it, its status, its latency as written, whether it is malformed.
//!
//! Determinism: the same [`GenConfig`] gives byte-identical output on every platform
//! and crate version; see [`rng`] for why the PRNG and the distributions are
//! hand-rolled. The underlying event stream (who served what, when, with which
//! outcome) does not depend on the format, so the same seed in two formats describes
//! the same traffic; only the per-format rendering differs (see [`Truth`]).
//!
//! Traffic model: events arrive at `rps` per second of event time from `start_ms`.
//! Each event picks a (service, version) by `weight` (weights are relative across the
//! whole config), then an outcome: a reset with probability `reset_rate`, a 5xx with
//! probability `error_rate` (half connection failures, 30 % application 500s, 20 %
//! upstream timeouts), otherwise a status from a realistic mix (mostly 200, some
//! 201/204/301/404). Latency comes from the version's [`Latency`] model.
//!
//! Per-format conventions (the attribution code relies on them):
//! - Istio ([`Style`]): target `<name>.<ns>`; version = the subset (Subset, Sni) or the
//!   host suffix (HostSuffix). Durations are integer ms (truncated, as Envoy logs them).
//! - nginx: target `$proxy_upstream_name` = `<ns>-<name>-<port>`; the version named
//!   `canary` fills the second bracket (`[<ns>-<name>-canary-<port>]`), `primary` leaves
//!   it empty. Times are seconds with ms resolution; `$time_local` has whole seconds.
//! - Linkerd: inbound server-side lines without any version (the real system takes it
//!   from the pod's log path); `host` = `<name>.<ns>:<port>`; `total_ns` in ns.
//! - NDJSON: keys of `ndjson::Mapping::default()`: `timestamp` (ms number), `target`
//!   (`<name>.<ns>`), `version`, `status`, `duration_ms` (µs resolution), `grpc_status`
//!   on the gRPC share of requests only.

pub mod rng;
pub mod write;

mod formats;
mod model;
#[cfg(test)]
mod tests;

use crate::flags::Flags;
use crate::parse::Format;

/// Everything that determines a generated log.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Output format.
    pub format: Format,
    /// PRNG seed; same config + seed → same bytes.
    pub seed: u64,
    /// Number of lines to write (requests, TCP and malformed lines together).
    pub lines: usize,
    /// Event time of the first line, ms since the Unix epoch.
    pub start_ms: i64,
    /// Lines per second of event time (> 0).
    pub rps: f64,
    /// Services and their versions; at least one.
    pub services: Vec<ServiceSpec>,
    /// How Istio lines reveal the version (ignored by the other formats).
    pub attribution: Style,
    /// Probability that a line is replaced by a bad one (truncated, binary garbage,
    /// non-numeric status, empty), 0..=1.
    pub malformed_rate: f64,
    /// Maximum lateness of a line's timestamp in ms: each timestamp is moved back by a
    /// uniform 0..=out_of_order_ms (Envoy writes a line at request end but logs the start
    /// time, so lines are naturally out of order). 0 = sorted.
    pub out_of_order_ms: i64,
    /// Istio JSON only: render every value as a string with `"-"` for absent (the
    /// TEXT-encoded JSON-looking format) instead of Envoy's typed JSON.
    pub json_all_strings: bool,
    /// Istio TEXT only: probability that a line is a TCP entry (`"- - -"`), 0..=1.
    pub tcp_rate: f64,
    /// Who sends the requests: mostly browsers and tools, or in-mesh services.
    pub clients: Clients,
}

/// The client population, which decides the `User-Agent` and `X-Forwarded-For` values
/// (the traffic itself -- services, outcomes, latencies, timestamps -- is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clients {
    /// Edge-facing traffic: a third browsers with long user agents, the rest tools and
    /// HTTP libraries; 20 % of requests carry an `X-Forwarded-For`.
    #[default]
    Mixed,
    /// Service-to-service traffic inside the mesh: Go, gRPC, Envoy health checks, curl,
    /// kube-probe and other library clients, plus 1 in 8 requests relayed from the ingress
    /// gateway with a browser user agent -- only those carry an `X-Forwarded-For`.
    Mesh,
}

impl Clients {
    /// The name used in configs (`mixed`, `mesh`).
    pub fn name(self) -> &'static str {
        match self {
            Clients::Mixed => "mixed",
            Clients::Mesh => "mesh",
        }
    }

    /// The value for a config name.
    pub fn from_name(name: &str) -> Option<Clients> {
        match name {
            "mixed" => Some(Clients::Mixed),
            "mesh" => Some(Clients::Mesh),
            _ => None,
        }
    }
}

/// One Kubernetes service with its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Service name, a DNS label such as `podinfo`.
    pub name: String,
    /// Namespace, a DNS label such as `test`.
    pub namespace: String,
    /// Service port, e.g. 9898.
    pub port: u16,
    /// At least one version.
    pub versions: Vec<VersionSpec>,
}

/// One version (subset / Deployment) of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSpec {
    /// Version name, a DNS label: `primary`, `canary`, `v1`, ...
    pub name: String,
    /// Relative traffic share (relative to all versions of all services), >= 0.
    pub weight: f64,
    /// Share of requests answered with a 5xx, 0..=1.
    pub error_rate: f64,
    /// Share of requests where the client went away (Envoy status 0 + `DC`), 0..=1.
    pub reset_rate: f64,
    /// Latency of successful requests.
    pub latency: Latency,
}

/// Latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Log-normal with the given median and shape.
    LogNormal { median_ms: f64, sigma: f64 },
    /// Mixture of two log-normals with the same shape: `slow_share` of requests
    /// around `slow_ms`, the rest around `fast_ms` (e.g. cache misses).
    Bimodal {
        fast_ms: f64,
        slow_ms: f64,
        slow_share: f64,
        sigma: f64,
    },
    /// Pareto with minimum `scale_ms` and tail index `shape` (heavy tail).
    Pareto { scale_ms: f64, shape: f64 },
    /// Always the same value.
    Constant(f64),
}

impl Latency {
    /// The distribution's median when it has a closed form (not for `Bimodal`).
    pub fn median_ms(&self) -> Option<f64> {
        match *self {
            Latency::LogNormal { median_ms, .. } => Some(median_ms),
            Latency::Pareto { scale_ms, shape } => Some(scale_ms * 2f64.powf(1.0 / shape)),
            Latency::Constant(c) => Some(c),
            Latency::Bimodal { .. } => None,
        }
    }
}

/// How an Istio line shows the serving version (see the reference, §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Client side with DestinationRule subsets:
    /// `outbound|<port>|<version>|<name>.<ns>.svc.cluster.local`.
    Subset,
    /// Client side, one Service per version (Flagger):
    /// `outbound|<port>||<name>-<version>.<ns>.svc.cluster.local`.
    HostSuffix,
    /// Server side with mTLS: cluster `inbound|<port>||`, version in the SNI
    /// `outbound_.<port>_.<version>_.<name>.<ns>.svc.cluster.local`.
    Sni,
}

/// What kind of line was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A well-formed HTTP request line.
    Request,
    /// An Istio TCP entry (`"- - -"`); well formed, but not HTTP.
    Tcp,
    /// A request line cut off at 10–60 % of its length.
    Truncated,
    /// Random bytes that are not valid UTF-8.
    Binary,
    /// A request line whose status is not a number (`2x0`).
    BadNumber,
    /// An empty line.
    Empty,
}

impl LineKind {
    /// Not a well-formed line of the format.
    pub fn is_malformed(self) -> bool {
        !matches!(self, LineKind::Request | LineKind::Tcp)
    }
}

/// What one generated line means. For `Truncated`/`BadNumber` lines the fields describe
/// the request the line was made from; for `Binary`/`Empty` only `ts_ms` is meaningful.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// Timestamp as written in the line, ms (nginx: whole seconds; Linkerd: ns truncated).
    pub ts_ms: i64,
    /// Index into `cfg.services`.
    pub service: u16,
    /// Index into `cfg.services[service].versions`.
    pub version: u16,
    /// HTTP status as written (0 = no response).
    pub status: u16,
    /// gRPC status when the line has one (NDJSON gRPC requests).
    pub grpc_status: Option<u16>,
    /// Latency as written, in ms (`None` for Linkerd `apache`, which has none).
    /// Parsers may differ by float rounding (e.g. ns → ms).
    pub latency_ms: Option<f64>,
    /// Envoy response flags as written (Istio formats; empty elsewhere).
    pub flags: Flags,
    /// What kind of line this is.
    pub kind: LineKind,
    /// Same as `kind.is_malformed()`.
    pub malformed: bool,
}

impl GenConfig {
    /// A canary-rollout sample: `podinfo.test:9898` with `primary` (90 %) and `canary`
    /// (10 %); the canary is slower (a bimodal tail) and fails more often.
    pub fn demo(format: Format) -> GenConfig {
        GenConfig {
            format,
            seed: 42,
            lines: 10_000,
            start_ms: 1_795_669_200_000, // 2026-11-26T05:00:00Z
            rps: 200.0,
            services: vec![ServiceSpec {
                name: "podinfo".into(),
                namespace: "test".into(),
                port: 9898,
                versions: vec![
                    VersionSpec {
                        name: "primary".into(),
                        weight: 0.9,
                        error_rate: 0.005,
                        reset_rate: 0.001,
                        latency: Latency::LogNormal {
                            median_ms: 12.0,
                            sigma: 0.5,
                        },
                    },
                    VersionSpec {
                        name: "canary".into(),
                        weight: 0.1,
                        error_rate: 0.03,
                        reset_rate: 0.003,
                        latency: Latency::Bimodal {
                            fast_ms: 15.0,
                            slow_ms: 120.0,
                            slow_share: 0.1,
                            sigma: 0.45,
                        },
                    },
                ],
            }],
            attribution: Style::Subset,
            malformed_rate: 0.0,
            out_of_order_ms: 0,
            json_all_strings: false,
            tcp_rate: 0.0,
            clients: Clients::Mixed,
        }
    }

    /// Check every field; the error names the bad field (`services[0].versions[1].weight: ...`).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rps.is_finite() && self.rps > 0.0) {
            return Err(format!("rps: must be finite and > 0, got {}", self.rps));
        }
        check_rate("malformed_rate", self.malformed_rate)?;
        check_rate("tcp_rate", self.tcp_rate)?;
        if self.tcp_rate > 0.0 && self.format != Format::IstioText {
            return Err(format!(
                "tcp_rate: TCP lines exist in istio-text only, not {}",
                self.format.name()
            ));
        }
        if self.json_all_strings && self.format != Format::IstioJson {
            return Err(format!(
                "json_all_strings: applies to istio-json only, not {}",
                self.format.name()
            ));
        }
        if self.out_of_order_ms < 0 || self.out_of_order_ms > 86_400_000 {
            return Err(format!(
                "out_of_order_ms: must be 0..=86400000, got {}",
                self.out_of_order_ms
            ));
        }
        // Timestamps must stay within 1970..=9999 (RFC 3339 four-digit years).
        const MAX_MS: i64 = 253_402_300_799_000;
        let span_ms = self.lines as f64 * 1000.0 / self.rps;
        let end_ms = self.start_ms as f64 + span_ms;
        if self.start_ms < self.out_of_order_ms || end_ms.is_nan() || end_ms >= MAX_MS as f64 {
            return Err(format!(
                "start_ms: timestamps must stay within 1970..=9999 (start {}, jitter {}, span {} ms)",
                self.start_ms, self.out_of_order_ms, span_ms
            ));
        }
        if self.services.is_empty() {
            return Err("services: at least one service is needed".into());
        }
        if self.services.len() > u16::MAX as usize {
            return Err("services: at most 65535".into());
        }
        let mut total_weight = 0.0;
        for (si, s) in self.services.iter().enumerate() {
            let at = format!("services[{si}]");
            check_label(&format!("{at}.name"), &s.name)?;
            check_label(&format!("{at}.namespace"), &s.namespace)?;
            if s.port == 0 {
                return Err(format!("{at}.port: must be > 0"));
            }
            if s.versions.is_empty() {
                return Err(format!("{at}.versions: at least one version is needed"));
            }
            if s.versions.len() > u16::MAX as usize {
                return Err(format!("{at}.versions: at most 65535"));
            }
            for (vi, v) in s.versions.iter().enumerate() {
                let at = format!("{at}.versions[{vi}]");
                check_label(&format!("{at}.name"), &v.name)?;
                if s.versions[..vi].iter().any(|o| o.name == v.name) {
                    return Err(format!("{at}.name: duplicate version name {:?}", v.name));
                }
                if self.format == Format::Nginx && v.name != "primary" && v.name != "canary" {
                    return Err(format!(
                        "{at}.name: nginx knows only `primary` (main backend) and `canary`, got {:?}",
                        v.name
                    ));
                }
                if !(v.weight.is_finite() && v.weight >= 0.0) {
                    return Err(format!("{at}.weight: must be finite and >= 0"));
                }
                total_weight += v.weight;
                check_rate(&format!("{at}.error_rate"), v.error_rate)?;
                check_rate(&format!("{at}.reset_rate"), v.reset_rate)?;
                if v.error_rate + v.reset_rate > 1.0 {
                    return Err(format!("{at}.error_rate: error_rate + reset_rate exceed 1"));
                }
                check_latency(&format!("{at}.latency"), &v.latency)?;
            }
        }
        if !(total_weight > 0.0 && total_weight.is_finite()) {
            return Err("services: the version weights must sum to a finite value > 0".into());
        }
        Ok(())
    }

    /// The target the attribution code should report for a truth line of this config
    /// (`<name>.<ns>`, or `<ns>-<name>-<port>` for nginx).
    pub fn expected_target(&self, t: &Truth) -> Option<String> {
        let s = self.services.get(t.service as usize)?;
        Some(match self.format {
            Format::Nginx => format!("{}-{}-{}", s.namespace, s.name, s.port),
            _ => format!("{}.{}", s.name, s.namespace),
        })
    }

    /// The version visible in the line itself (`None` for Linkerd, whose lines carry none).
    pub fn expected_version(&self, t: &Truth) -> Option<&str> {
        if matches!(self.format, Format::LinkerdJson | Format::LinkerdApache) {
            return None;
        }
        let s = self.services.get(t.service as usize)?;
        Some(s.versions.get(t.version as usize)?.name.as_str())
    }
}

fn check_rate(field: &str, v: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{field}: must be within 0..=1, got {v}"))
    }
}

fn check_label(field: &str, s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(ok_char)
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be a DNS label (a-z, 0-9, '-', 1..=63 chars), got {s:?}"
        ))
    }
}

fn check_latency(field: &str, l: &Latency) -> Result<(), String> {
    let pos = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v <= 3_600_000.0 {
            Ok(())
        } else {
            Err(format!(
                "{field}.{name}: must be within (0, 3600000], got {v}"
            ))
        }
    };
    let sigma = |v: f64| {
        if (0.0..=5.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("{field}.sigma: must be within 0..=5, got {v}"))
        }
    };
    match *l {
        Latency::LogNormal {
            median_ms,
            sigma: s,
        } => {
            pos("median_ms", median_ms)?;
            sigma(s)
        }
        Latency::Bimodal {
            fast_ms,
            slow_ms,
            slow_share,
            sigma: s,
        } => {
            pos("fast_ms", fast_ms)?;
            pos("slow_ms", slow_ms)?;
            check_rate(&format!("{field}.slow_share"), slow_share)?;
            sigma(s)
        }
        Latency::Pareto { scale_ms, shape } => {
            pos("scale_ms", scale_ms)?;
            if shape.is_finite() && shape >= 0.5 {
                Ok(())
            } else {
                Err(format!(
                    "{field}.shape: must be finite and >= 0.5, got {shape}"
                ))
            }
        }
        Latency::Constant(c) => {
            if c.is_finite() && (0.0..=3_600_000.0).contains(&c) {
                Ok(())
            } else {
                Err(format!(
                    "{field}: constant must be within 0..=3600000, got {c}"
                ))
            }
        }
    }
}

/// Append `cfg.lines` lines to `out`; with `truth`, also push one [`Truth`] per line.
/// Fails (writing nothing) when `cfg` does not validate.
pub fn generate(
    cfg: &GenConfig,
    out: &mut Vec<u8>,
    truth: Option<&mut Vec<Truth>>,
) -> Result<(), String> {
    cfg.validate()?;
    let plan = model::Plan::new(cfg);
    let mut w = formats::Writer::new(cfg, &plan);
    // Reserve up front, but never more than 256 MiB: a huge `lines` must fail by
    // growing (or be refused by the caller), not by one giant allocation.
    const MAX_RESERVE: usize = 256 << 20;
    let bytes = cfg.lines.saturating_mul(formats::typical_line_len(cfg));
    out.reserve(bytes.min(MAX_RESERVE));
    let mut truth = truth;
    if let Some(t) = truth.as_deref_mut() {
        t.reserve(cfg.lines.min(MAX_RESERVE / std::mem::size_of::<Truth>()));
    }
    let mut sampler = model::Sampler::new(cfg, &plan);
    for i in 0..cfg.lines {
        let line = sampler.next_line(i);
        let t = w.write(out, &line, sampler.garbage_rng());
        if let Some(v) = truth.as_deref_mut() {
            v.push(t);
        }
    }
    Ok(())
}

/// Convenience: generate into new buffers.
pub fn generate_vec(cfg: &GenConfig) -> Result<(Vec<u8>, Vec<Truth>), String> {
    let mut out = Vec::new();
    let mut truth = Vec::new();
    generate(cfg, &mut out, Some(&mut truth))?;
    Ok((out, truth))
}
