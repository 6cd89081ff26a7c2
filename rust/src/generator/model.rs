//! The traffic model: precomputed per-(service, version) strings and the sampler that
//! draws one event per line. Every line consumes the same random draws whatever the
//! format and the line kind, so one seed describes the same traffic in every format.

use super::formats;
use super::rng::Rng;
use super::{GenConfig, Latency, LineKind, Style};

/// Requests that time out get this duration (Envoy's default route timeout, 15 s).
pub const TIMEOUT_MS: f64 = 15_000.0;
/// Pods per version (the upstream host is one of them).
pub const PODS: usize = 3;
/// Cap on sampled latencies (heavy-tailed models can draw absurd values).
const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// What happened to a request, before it is rendered in a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served by the application with this (non-5xx) status.
    Ok(u16),
    /// The application answered 500.
    AppError,
    /// No connection to the upstream (Envoy 503 `UF,URX`, nginx 502).
    ConnectFailure,
    /// The upstream did not answer in time (504, Envoy `UT`).
    Timeout,
    /// The client went away before the response (Envoy 0 `DC`, nginx 499).
    Reset,
}

/// One (service, version) with everything its lines need, rendered once.
#[derive(Debug, Clone)]
pub struct Key {
    pub service: u16,
    pub version: u16,
    pub port: u16,
    /// `<name>.<ns>`
    pub target: Vec<u8>,
    pub version_name: Vec<u8>,
    /// `<name>.<ns>:<port>`
    pub authority: Vec<u8>,
    /// Istio `upstream_cluster` for the configured [`Style`].
    pub cluster: Vec<u8>,
    /// Istio `requested_server_name`; empty = absent.
    pub sni: Vec<u8>,
    /// nginx `$proxy_upstream_name`: `<ns>-<name>-<port>`.
    pub nginx_upstream: Vec<u8>,
    /// nginx `$proxy_alternative_upstream_name`; empty unless this is the canary.
    pub nginx_alternative: Vec<u8>,
    /// Pod IPs of this version.
    pub pods: [[u8; 4]; PODS],
    /// ClusterIP of the service.
    pub vip: [u8; 4],
    pub error_rate: f64,
    pub reset_rate: f64,
    pub latency: Latency,
}

/// All keys plus their cumulative weights.
#[derive(Debug, Clone)]
pub struct Plan {
    pub keys: Vec<Key>,
    cumulative: Vec<f64>,
}

impl Plan {
    pub fn new(cfg: &GenConfig) -> Plan {
        let mut keys = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (si, s) in cfg.services.iter().enumerate() {
            let fqdn = |host: &str| format!("{host}.{}.svc.cluster.local", s.namespace);
            // Distinct, stable addresses per service and version.
            let vip = [10, 96, (si * 37 % 256) as u8, (10 + si * 11 % 240) as u8];
            for (vi, v) in s.versions.iter().enumerate() {
                let (cluster, sni) = match cfg.attribution {
                    Style::Subset => (
                        format!("outbound|{}|{}|{}", s.port, v.name, fqdn(&s.name)),
                        String::new(),
                    ),
                    Style::HostSuffix => (
                        format!(
                            "outbound|{}||{}",
                            s.port,
                            fqdn(&format!("{}-{}", s.name, v.name))
                        ),
                        String::new(),
                    ),
                    Style::Sni => (
                        format!("inbound|{}||", s.port),
                        format!("outbound_.{}_.{}_.{}", s.port, v.name, fqdn(&s.name)),
                    ),
                };
                let subnet = (1 + (si * 8 + vi) % 250) as u8;
                let pods = [0u8, 1, 2].map(|p| [10, 244, subnet, 10 + p * 17 + (vi as u8 % 7)]);
                total += v.weight;
                cumulative.push(total);
                keys.push(Key {
                    service: si as u16,
                    version: vi as u16,
                    port: s.port,
                    target: format!("{}.{}", s.name, s.namespace).into_bytes(),
                    version_name: v.name.clone().into_bytes(),
                    authority: format!("{}.{}:{}", s.name, s.namespace, s.port).into_bytes(),
                    cluster: cluster.into_bytes(),
                    sni: sni.into_bytes(),
                    nginx_upstream: format!("{}-{}-{}", s.namespace, s.name, s.port).into_bytes(),
                    nginx_alternative: if v.name == "canary" {
                        format!("{}-{}-canary-{}", s.namespace, s.name, s.port).into_bytes()
                    } else {
                        Vec::new()
                    },
                    pods,
                    vip,
                    error_rate: v.error_rate,
                    reset_rate: v.reset_rate,
                    latency: v.latency,
                });
            }
        }
        Plan { keys, cumulative }
    }

    /// Key index for a uniform draw `u` in `[0, 1)`; zero-weight keys are never chosen.
    fn pick(&self, u: f64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = u * total;
        let i = self.cumulative.partition_point(|&c| c <= x);
        i.min(self.keys.len().saturating_sub(1))
    }
}

/// One request event with every random choice its rendering needs.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub key: usize,
    pub ts_ms: i64,
    /// Sub-millisecond part of the timestamp (Linkerd logs ns).
    pub sub_ms_ns: u32,
    pub outcome: Outcome,
    /// Sampled latency, ms (before any per-format quantisation).
    pub latency_ms: f64,
    /// Index into the route table (method + path shape).
    pub route: usize,
    /// Numeric id used in paths.
    pub id: u32,
    /// Random bits for hex parts of paths.
    pub hex: u64,
    pub user_agent: usize,
    pub http2: bool,
    /// NDJSON renders this request as gRPC.
    pub grpc: bool,
    /// nginx shows a retried request (first attempt 502).
    pub nginx_retry: bool,
    /// A connection failure with a transport failure reason.
    pub transport_reason: bool,
    pub xff: Option<[u8; 4]>,
    pub request_id: (u64, u64),
    pub client_ip: [u8; 4],
    pub client_port: u16,
    pub local_port: u16,
    pub pod: usize,
    pub bytes_in: u32,
    pub bytes_out: u32,
    /// Proxy overhead: duration minus upstream service time, ms.
    pub overhead_ms: u64,
    pub processing_ns: u32,
    pub caller: usize,
    pub referer: usize,
    pub request_length: u32,
    pub public_ip: [u8; 4],
}

/// One line to write: its kind, the event it is made from, where to truncate.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    pub kind: LineKind,
    pub event: Event,
    /// Truncated lines keep this fraction of their bytes (0.1..0.6).
    pub keep: f64,
}

/// Number of route shapes (see `formats::push_path`).
pub const ROUTES: u64 = 10;
const USER_AGENT_COUNT: u64 = formats::USER_AGENTS.len() as u64;
const CALLERS: u64 = formats::CALLERS.len() as u64;
const REFERERS: u64 = formats::REFERERS.len() as u64;

/// Draws lines in order.
pub struct Sampler<'a> {
    cfg: &'a GenConfig,
    plan: &'a Plan,
    rng: Rng,
    garbage: Rng,
    step_ms: f64,
}

impl<'a> Sampler<'a> {
    pub fn new(cfg: &'a GenConfig, plan: &'a Plan) -> Sampler<'a> {
        Sampler {
            cfg,
            plan,
            rng: Rng::new(cfg.seed),
            // Separate stream: garbage length must not shift the main stream.
            garbage: Rng::new(cfg.seed ^ 0x6a09_e667_f3bc_c908),
            step_ms: 1000.0 / cfg.rps,
        }
    }

    /// Random source for binary garbage lines.
    pub fn garbage_rng(&mut self) -> &mut Rng {
        &mut self.garbage
    }

    /// The line at position `i` (calls must come in order 0, 1, 2, ...).
    pub fn next_line(&mut self, i: usize) -> Line {
        let cfg = self.cfg;
        let r = &mut self.rng;
        let base = cfg.start_ms + (i as f64 * self.step_ms).floor() as i64;
        let late = r.below(cfg.out_of_order_ms as u64 + 1) as i64;
        let u_bad = r.f64();
        let bad_kind = r.below(4);
        let keep = 0.1 + 0.5 * r.f64();
        let u_tcp = r.f64();
        let kind = if u_bad < cfg.malformed_rate {
            [
                LineKind::Truncated,
                LineKind::Binary,
                LineKind::BadNumber,
                LineKind::Empty,
            ][bad_kind as usize]
        } else if u_tcp < cfg.tcp_rate {
            LineKind::Tcp
        } else {
            LineKind::Request
        };
        let event = self.event(base - late);
        Line { kind, event, keep }
    }

    fn event(&mut self, ts_ms: i64) -> Event {
        let r = &mut self.rng;
        let key_index = self.plan.pick(r.f64());
        let key = &self.plan.keys[key_index];
        let u_outcome = r.f64();
        let u_detail = r.f64();
        let outcome = if u_outcome < key.reset_rate {
            Outcome::Reset
        } else if u_outcome < key.reset_rate + key.error_rate {
            if u_detail < 0.5 {
                Outcome::ConnectFailure
            } else if u_detail < 0.8 {
                Outcome::AppError
            } else {
                Outcome::Timeout
            }
        } else {
            Outcome::Ok(match u_detail {
                u if u < 0.90 => 200,
                u if u < 0.93 => 201,
                u if u < 0.95 => 204,
                u if u < 0.96 => 301,
                _ => 404,
            })
        };
        let served = sample_latency(r, &key.latency);
        let u_lat = r.f64();
        let latency_ms = match outcome {
            Outcome::Ok(_) | Outcome::AppError => served,
            // Connection refused, retried twice: a few ms in the proxy.
            Outcome::ConnectFailure => 0.3 + 4.0 * u_lat,
            Outcome::Timeout => TIMEOUT_MS + 5.0 * u_lat,
            // The client gave up after waiting a while.
            Outcome::Reset => 2.0 * served + 2000.0 * u_lat,
        }
        .clamp(0.0, MAX_LATENCY_MS);
        let public_ip =
            [[203u8, 0, 113], [198, 51, 100], [192, 0, 2], [100, 64, 12]][r.below(4) as usize];
        Event {
            key: key_index,
            ts_ms,
            sub_ms_ns: r.below(1_000_000) as u32,
            outcome,
            latency_ms,
            route: r.below(ROUTES) as usize,
            id: r.range(1, 99_999) as u32,
            hex: r.next_u64(),
            user_agent: r.below(USER_AGENT_COUNT) as usize,
            http2: r.chance(0.3),
            grpc: r.chance(0.15),
            nginx_retry: r.chance(0.02),
            transport_reason: r.chance(0.3),
            xff: if r.chance(0.2) {
                Some([
                    public_ip[0],
                    public_ip[1],
                    public_ip[2],
                    r.range(1, 254) as u8,
                ])
            } else {
                None
            },
            request_id: (r.next_u64(), r.next_u64()),
            client_ip: [10, 244, r.range(1, 63) as u8, r.range(2, 254) as u8],
            client_port: r.range(32_768, 60_999) as u16,
            local_port: r.range(32_768, 60_999) as u16,
            pod: r.below(PODS as u64) as usize,
            bytes_in: r.range(24, 2_400) as u32,
            bytes_out: r.log_normal(900.0, 1.0).clamp(2.0, 5_000_000.0) as u32,
            overhead_ms: r.below(3),
            processing_ns: r.range(15_000, 250_000) as u32,
            caller: r.below(CALLERS) as usize,
            referer: r.below(REFERERS) as usize,
            request_length: r.range(300, 1_100) as u32,
            public_ip: [
                public_ip[0],
                public_ip[1],
                public_ip[2],
                r.range(1, 254) as u8,
            ],
        }
    }
}

fn sample_latency(r: &mut Rng, l: &Latency) -> f64 {
    match *l {
        Latency::LogNormal { median_ms, sigma } => r.log_normal(median_ms, sigma),
        Latency::Bimodal {
            fast_ms,
            slow_ms,
            slow_share,
            sigma,
        } => {
            let median = if r.chance(slow_share) {
                slow_ms
            } else {
                fast_ms
            };
            r.log_normal(median, sigma)
        }
        Latency::Pareto { scale_ms, shape } => r.pareto(scale_ms, shape),
        Latency::Constant(c) => c,
    }
}
