//! Rendering of one event as a line of each format, plus malformed variants.

use super::model::{Event, Key, Line, Outcome, Plan};
use super::rng::Rng;
use super::write::{
    push_addr, push_hex, push_ip, push_milli, push_padded, push_u64, push_uuid, Clock,
};
use super::{Clients, GenConfig, LineKind, Style, Truth};
use crate::flags::Flags;
use crate::parse::Format;

/// Realistic User-Agent headers (none contains a `"` or a backslash). In-mesh
/// clients dominate, so the short ones appear several times (uniform pick).
pub const USER_AGENTS: [&[u8]; 16] = [
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    b"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.104 Mobile Safari/537.36",
    b"Go-http-client/1.1",
    b"Go-http-client/1.1",
    b"Go-http-client/2.0",
    b"curl/8.5.0",
    b"python-requests/2.32.3",
    b"okhttp/4.12.0",
    b"grpc-go/1.68.0",
    b"grpc-java-netty/1.66.0",
    b"k6/0.55.0 (https://k6.io/)",
    b"Apache-HttpClient/4.5.14 (Java/17.0.12)",
    b"axios/1.7.7",
];

/// User agents of service-to-service traffic (the same uniform pick as [`USER_AGENTS`]):
/// Go's and gRPC's default clients dominate; 2 of 16 are browsers whose requests came in
/// through the ingress gateway.
pub const MESH_USER_AGENTS: [&[u8]; 16] = [
    b"Go-http-client/1.1",
    b"Go-http-client/1.1",
    b"Go-http-client/1.1",
    b"Go-http-client/1.1",
    b"Go-http-client/2.0",
    b"grpc-go/1.68.0",
    b"grpc-go/1.68.0",
    b"grpc-java-netty/1.66.0",
    b"Envoy/HC",
    b"curl/8.5.0",
    b"kube-probe/1.31",
    b"python-requests/2.32.3",
    b"okhttp/4.12.0",
    b"ReactorNetty/1.1.22",
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
];

/// Linkerd `client.id` of the callers (`-` = not meshed).
pub const CALLERS: [&[u8]; 4] = [
    b"frontend.test.serviceaccount.identity.linkerd.cluster.local",
    b"loadtester.test.serviceaccount.identity.linkerd.cluster.local",
    b"ingress-nginx.ingress-nginx.serviceaccount.identity.linkerd.cluster.local",
    b"-",
];

pub const REFERERS: [&[u8]; 4] = [
    b"-",
    b"https://shop.example.com/",
    b"https://shop.example.com/cart?step=2",
    b"https://www.google.com/",
];

const CATEGORIES: [&[u8]; 8] = [
    b"books", b"garden", b"toys", b"audio", b"kitchen", b"sports", b"games", b"office",
];

const GRPC_METHODS: [&[u8]; 4] = [
    b"/podinfo.v1.InfoService/GetInfo",
    b"/podinfo.v1.UserService/ListUsers",
    b"/podinfo.v1.EchoService/Echo",
    b"/grpc.health.v1.Health/Check",
];

/// Average line length guess, for reserving the output buffer.
pub fn typical_line_len(cfg: &GenConfig) -> usize {
    match cfg.format {
        Format::IstioJson => 800,
        Format::IstioText => 440,
        Format::LinkerdJson => 460,
        Format::LinkerdApache => 160,
        Format::Nginx => 330,
        Format::Ndjson => 230,
    }
}

/// The Envoy view of an outcome.
struct Envoy {
    status: u16,
    flags: &'static [u8],
    flag_bits: Flags,
    details: &'static [u8],
    transport_failure: Option<&'static [u8]>,
    bytes_sent: u64,
    duration_ms: u64,
    upstream_service_time: Option<u64>,
    /// Whether an upstream connection existed (`UPSTREAM_LOCAL_ADDRESS` present).
    connected: bool,
}

fn flag_bits(names: &[u8]) -> Flags {
    Flags::parse(names)
}

/// Renders lines; holds the per-second timestamp cache.
pub struct Writer<'a> {
    cfg: &'a GenConfig,
    plan: &'a Plan,
    clock: Clock,
}

impl<'a> Writer<'a> {
    pub fn new(cfg: &'a GenConfig, plan: &'a Plan) -> Writer<'a> {
        Writer {
            cfg,
            plan,
            clock: Clock::default(),
        }
    }

    /// The request's `User-Agent` for the configured client population.
    fn user_agent(&self, ev: &Event) -> &'static [u8] {
        let table = match self.cfg.clients {
            Clients::Mixed => &USER_AGENTS,
            Clients::Mesh => &MESH_USER_AGENTS,
        };
        table[ev.user_agent % table.len()]
    }

    /// The request's `X-Forwarded-For`. In the mesh only requests relayed from the
    /// ingress gateway (the browser ones) carry it, always with the public client address.
    fn xff(&self, ev: &Event) -> Option<[u8; 4]> {
        match self.cfg.clients {
            Clients::Mixed => ev.xff,
            Clients::Mesh if self.user_agent(ev).starts_with(b"Mozilla/") => {
                Some(ev.xff.unwrap_or(ev.public_ip))
            }
            Clients::Mesh => None,
        }
    }

    /// Append one line (with its `\n`) and return its truth.
    pub fn write(&mut self, out: &mut Vec<u8>, line: &Line, garbage: &mut Rng) -> Truth {
        let ev = &line.event;
        let key = &self.plan.keys[ev.key];
        let mut truth = Truth {
            ts_ms: ev.ts_ms,
            service: key.service,
            version: key.version,
            status: 0,
            grpc_status: None,
            latency_ms: None,
            flags: Flags::NONE,
            kind: line.kind,
            malformed: line.kind.is_malformed(),
        };
        let start = out.len();
        match line.kind {
            LineKind::Request => self.request(out, ev, key, false, &mut truth),
            LineKind::BadNumber => self.request(out, ev, key, true, &mut truth),
            LineKind::Truncated => {
                self.request(out, ev, key, false, &mut truth);
                let len = out.len() - start;
                let keep = ((len as f64 * line.keep) as usize).clamp(1, len.saturating_sub(1));
                out.truncate(start + keep);
            }
            LineKind::Tcp => self.istio_tcp(out, ev, key, &mut truth),
            LineKind::Binary => push_garbage(out, garbage),
            LineKind::Empty => {}
        }
        out.push(b'\n');
        truth
    }

    fn request(&mut self, out: &mut Vec<u8>, ev: &Event, key: &Key, bad: bool, t: &mut Truth) {
        match self.cfg.format {
            Format::IstioText => self.istio_text(out, ev, key, bad, t),
            Format::IstioJson => self.istio_json(out, ev, key, bad, t),
            Format::LinkerdJson => self.linkerd_json(out, ev, key, bad, t),
            Format::LinkerdApache => self.linkerd_apache(out, ev, key, bad, t),
            Format::Nginx => self.nginx(out, ev, key, bad, t),
            Format::Ndjson => self.ndjson(out, ev, key, bad, t),
        }
    }

    fn envoy(&self, ev: &Event, t: &mut Truth) -> Envoy {
        let duration_ms = ev.latency_ms as u64; // Envoy truncates to whole ms
        let served = |status: u16, bytes_sent: u64| Envoy {
            status,
            flags: b"-",
            flag_bits: Flags::NONE,
            details: b"via_upstream",
            transport_failure: None,
            bytes_sent,
            duration_ms,
            upstream_service_time: Some(duration_ms.saturating_sub(ev.overhead_ms)),
            connected: true,
        };
        let e = match ev.outcome {
            Outcome::Ok(s) => served(s, ok_body_bytes(s, ev)),
            Outcome::AppError => served(500, 22),
            Outcome::ConnectFailure if ev.transport_reason => Envoy {
                status: 503,
                flags: b"UF,URX",
                flag_bits: flag_bits(b"UF,URX"),
                details: b"upstream_reset_before_response_started{connection_failure,delayed_connect_error:_111}",
                transport_failure: Some(b"delayed connect error: 111"),
                bytes_sent: 190,
                duration_ms,
                upstream_service_time: None,
                connected: false,
            },
            Outcome::ConnectFailure => Envoy {
                status: 503,
                flags: b"UF,URX",
                flag_bits: flag_bits(b"UF,URX"),
                details: b"upstream_reset_before_response_started{connection_failure}",
                transport_failure: None,
                bytes_sent: 91,
                duration_ms,
                upstream_service_time: None,
                connected: false,
            },
            Outcome::Timeout => Envoy {
                status: 504,
                flags: b"UT",
                flag_bits: flag_bits(b"UT"),
                details: b"response_timeout",
                transport_failure: None,
                bytes_sent: 24,
                duration_ms,
                upstream_service_time: None,
                connected: true,
            },
            Outcome::Reset => Envoy {
                status: 0,
                flags: b"DC",
                flag_bits: flag_bits(b"DC"),
                details: b"downstream_remote_disconnect",
                transport_failure: None,
                bytes_sent: 0,
                duration_ms,
                upstream_service_time: None,
                connected: true,
            },
        };
        t.status = e.status;
        t.flags = e.flag_bits;
        t.latency_ms = Some(duration_ms as f64);
        e
    }

    /// Client side (Subset, HostSuffix) or server side (Sni) addresses:
    /// (upstream_host, upstream_local, downstream_local, downstream_remote).
    fn istio_addrs(&self, ev: &Event, key: &Key) -> Addrs {
        let pod = key.pods[ev.pod % key.pods.len()];
        let remote = (ev.client_ip, ev.client_port);
        match self.cfg.attribution {
            Style::Subset | Style::HostSuffix => Addrs {
                upstream_host: (pod, key.port),
                upstream_local: (ev.client_ip, ev.local_port),
                downstream_local: (key.vip, key.port),
                downstream_remote: remote,
            },
            Style::Sni => Addrs {
                upstream_host: (pod, key.port),
                upstream_local: ([127, 0, 0, 6], ev.local_port),
                downstream_local: (pod, key.port),
                downstream_remote: remote,
            },
        }
    }

    fn istio_text(&mut self, out: &mut Vec<u8>, ev: &Event, key: &Key, bad: bool, t: &mut Truth) {
        let e = self.envoy(ev, t);
        let a = self.istio_addrs(ev, key);
        out.push(b'[');
        self.clock.push_rfc3339_ms(out, ev.ts_ms);
        out.extend_from_slice(b"] \"");
        push_method_path(out, ev, false);
        out.extend_from_slice(if ev.http2 {
            b" HTTP/2\" "
        } else {
            b" HTTP/1.1\" "
        });
        push_status(out, e.status, bad);
        out.push(b' ');
        out.extend_from_slice(e.flags);
        out.push(b' ');
        out.extend_from_slice(e.details);
        out.extend_from_slice(b" - \"");
        out.extend_from_slice(e.transport_failure.unwrap_or(b"-"));
        out.extend_from_slice(b"\" ");
        push_u64(out, request_bytes(ev));
        out.push(b' ');
        push_u64(out, e.bytes_sent);
        out.push(b' ');
        push_u64(out, e.duration_ms);
        out.push(b' ');
        match e.upstream_service_time {
            Some(v) => push_u64(out, v),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b" \"");
        match self.xff(ev) {
            Some(ip) => push_ip(out, ip),
            None => out.push(b'-'),
        }
        out.extend_from_slice(b"\" \"");
        out.extend_from_slice(self.user_agent(ev));
        out.extend_from_slice(b"\" \"");
        push_uuid(out, ev.request_id.0, ev.request_id.1);
        out.extend_from_slice(b"\" \"");
        out.extend_from_slice(&key.authority);
        out.extend_from_slice(b"\" \"");
        push_addr(out, a.upstream_host.0, a.upstream_host.1);
        out.extend_from_slice(b"\" ");
        out.extend_from_slice(&key.cluster);
        out.push(b' ');
        if e.connected {
            push_addr(out, a.upstream_local.0, a.upstream_local.1);
        } else {
            out.push(b'-');
        }
        out.push(b' ');
        push_addr(out, a.downstream_local.0, a.downstream_local.1);
        out.push(b' ');
        push_addr(out, a.downstream_remote.0, a.downstream_remote.1);
        out.push(b' ');
        if key.sni.is_empty() {
            out.push(b'-');
        } else {
            out.extend_from_slice(&key.sni);
        }
        out.extend_from_slice(b" default");
    }

    /// An Envoy TCP proxy entry: the HTTP fields are `-`.
    fn istio_tcp(&mut self, out: &mut Vec<u8>, ev: &Event, key: &Key, t: &mut Truth) {
        let a = self.istio_addrs(ev, key);
        let duration_ms = ev.latency_ms as u64;
        t.latency_ms = Some(duration_ms as f64);
        out.push(b'[');
        self.clock.push_rfc3339_ms(out, ev.ts_ms);
        out.extend_from_slice(b"] \"- - -\" 0 - - - \"-\" ");
        push_u64(out, ev.bytes_in as u64);
        out.push(b' ');
        push_u64(out, ev.bytes_out as u64);
        out.push(b' ');
        push_u64(out, duration_ms);
        out.extend_from_slice(b" - \"-\" \"-\" \"-\" \"-\" \"");
        push_addr(out, a.upstream_host.0, a.upstream_host.1);
        out.extend_from_slice(b"\" ");
        out.extend_from_slice(&key.cluster);
        out.push(b' ');
        push_addr(out, a.upstream_local.0, a.upstream_local.1);
        out.push(b' ');
        push_addr(out, a.downstream_local.0, a.downstream_local.1);
        out.push(b' ');
        push_addr(out, a.downstream_remote.0, a.downstream_remote.1);
        out.push(b' ');
        if key.sni.is_empty() {
            out.push(b'-');
        } else {
            out.extend_from_slice(&key.sni);
        }
        out.extend_from_slice(b" -");
    }

    fn istio_json(&mut self, out: &mut Vec<u8>, ev: &Event, key: &Key, bad: bool, t: &mut Truth) {
        let e = self.envoy(ev, t);
        let a = self.istio_addrs(ev, key);
        let strings = self.cfg.json_all_strings;
        // Typed Envoy JSON: numbers unquoted, absent = null. All-strings: quoted, absent = "-".
        let q: &[u8] = if strings { b"\"" } else { b"" };
        let absent: &[u8] = if strings { b"\"-\"" } else { b"null" };
        out.extend_from_slice(b"{\"start_time\":\"");
        self.clock.push_rfc3339_ms(out, ev.ts_ms);
        out.extend_from_slice(b"\",\"route_name\":\"default\",\"method\":\"");
        push_method(out, ev, false);
        out.extend_from_slice(b"\",\"path\":\"");
        push_path(out, ev, false);
        out.extend_from_slice(b"\",\"protocol\":\"");
        out.extend_from_slice(if ev.http2 { b"HTTP/2" } else { b"HTTP/1.1" });
        out.extend_from_slice(b"\",\"response_code\":");
        if bad {
            out.extend_from_slice(b"\"2x0\"");
        } else {
            out.extend_from_slice(q);
            push_u64(out, e.status as u64);
            out.extend_from_slice(q);
        }
        out.extend_from_slice(b",\"response_flags\":\"");
        out.extend_from_slice(e.flags);
        out.extend_from_slice(b"\",\"response_code_details\":\"");
        out.extend_from_slice(e.details);
        out.extend_from_slice(b"\",\"connection_termination_details\":");
        out.extend_from_slice(absent);
        out.extend_from_slice(b",\"bytes_received\":");
        out.extend_from_slice(q);
        push_u64(out, request_bytes(ev));
        out.extend_from_slice(q);
        out.extend_from_slice(b",\"bytes_sent\":");
        out.extend_from_slice(q);
        push_u64(out, e.bytes_sent);
        out.extend_from_slice(q);
        out.extend_from_slice(b",\"duration\":");
        out.extend_from_slice(q);
        push_u64(out, e.duration_ms);
        out.extend_from_slice(q);
        out.extend_from_slice(b",\"upstream_service_time\":");
        match e.upstream_service_time {
            // A response header: a string even in typed output.
            Some(v) => {
                out.push(b'"');
                push_u64(out, v);
                out.push(b'"');
            }
            None => out.extend_from_slice(absent),
        }
        out.extend_from_slice(b",\"x_forwarded_for\":");
        match self.xff(ev) {
            Some(ip) => {
                out.push(b'"');
                push_ip(out, ip);
                out.push(b'"');
            }
            None => out.extend_from_slice(absent),
        }
        out.extend_from_slice(b",\"user_agent\":\"");
        out.extend_from_slice(self.user_agent(ev));
        out.extend_from_slice(b"\",\"request_id\":\"");
        push_uuid(out, ev.request_id.0, ev.request_id.1);
        out.extend_from_slice(b"\",\"authority\":\"");
        out.extend_from_slice(&key.authority);
        out.extend_from_slice(b"\",\"upstream_host\":\"");
        push_addr(out, a.upstream_host.0, a.upstream_host.1);
        out.extend_from_slice(b"\",\"upstream_cluster\":\"");
        out.extend_from_slice(&key.cluster);
        out.extend_from_slice(b"\",\"upstream_local_address\":");
        if e.connected {
            out.push(b'"');
            push_addr(out, a.upstream_local.0, a.upstream_local.1);
            out.push(b'"');
        } else {
            out.extend_from_slice(absent);
        }
        out.extend_from_slice(b",\"downstream_local_address\":\"");
        push_addr(out, a.downstream_local.0, a.downstream_local.1);
        out.extend_from_slice(b"\",\"downstream_remote_address\":\"");
        push_addr(out, a.downstream_remote.0, a.downstream_remote.1);
        out.extend_from_slice(b"\",\"requested_server_name\":");
        if key.sni.is_empty() {
            out.extend_from_slice(absent);
        } else {
            out.push(b'"');
            out.extend_from_slice(&key.sni);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"upstream_transport_failure_reason\":");
        match e.transport_failure {
            Some(r) => {
                out.push(b'"');
                out.extend_from_slice(r);
                out.push(b'"');
            }
            None => out.extend_from_slice(absent),
        }
        out.push(b'}');
    }

    fn linkerd_common(&self, ev: &Event, t: &mut Truth) -> u16 {
        let status = match ev.outcome {
            Outcome::Ok(s) => s,
            Outcome::AppError => 500,
            Outcome::ConnectFailure => 503,
            Outcome::Timeout => 504,
            // The app reset the connection: the proxy answers 502 Bad Gateway.
            Outcome::Reset => 502,
        };
        t.status = status;
        status
    }

    fn linkerd_json(&mut self, out: &mut Vec<u8>, ev: &Event, key: &Key, bad: bool, t: &mut Truth) {
        let status = self.linkerd_common(ev, t);
        let total_ns = (ev.latency_ms * 1e6) as u64;
        t.latency_ms = Some(total_ns as f64 / 1e6);
        out.extend_from_slice(b"{\"client.addr\":\"");
        push_addr(out, ev.client_ip, ev.client_port);
        out.extend_from_slice(b"\",\"client.id\":\"");
        out.extend_from_slice(CALLERS[ev.caller % CALLERS.len()]);
        out.extend_from_slice(b"\",\"host\":\"");
        out.extend_from_slice(&key.authority);
        out.extend_from_slice(b"\",\"method\":\"");
        push_method(out, ev, false);
        out.extend_from_slice(b"\",\"processing_ns\":\"");
        push_u64(out, ev.processing_ns as u64);
        out.extend_from_slice(b"\",\"request_bytes\":\"");
        let req = request_bytes(ev);
        if req > 0 {
            push_u64(out, req);
        }
        out.extend_from_slice(b"\",\"response_bytes\":\"");
        push_u64(out, self.simple_body_bytes(ev, status));
        out.extend_from_slice(b"\",\"status\":");
        push_status_json(out, status, bad);
        out.extend_from_slice(b",\"timestamp\":\"");
        self.clock.push_rfc3339_ns(out, ev.ts_ms, ev.sub_ms_ns);
        out.extend_from_slice(b"\",\"total_ns\":\"");
        push_u64(out, total_ns);
        out.extend_from_slice(b"\",\"trace_id\":\"");
        if ev.hex & 1 == 0 {
            push_hex(out, ev.request_id.0, 16);
            push_hex(out, ev.request_id.1, 16);
        }
        out.extend_from_slice(b"\",\"uri\":\"");
        push_linkerd_uri(out, ev, key);
        out.extend_from_slice(b"\",\"user_agent\":\"");
        out.extend_from_slice(self.user_agent(ev));
        out.extend_from_slice(b"\",\"version\":\"");
        out.extend_from_slice(if ev.http2 { b"HTTP/2.0" } else { b"HTTP/1.1" });
        out.extend_from_slice(b"\"}");
    }

    fn linkerd_apache(
        &mut self,
        out: &mut Vec<u8>,
        ev: &Event,
        key: &Key,
        bad: bool,
        t: &mut Truth,
    ) {
        let status = self.linkerd_common(ev, t);
        push_addr(out, ev.client_ip, ev.client_port);
        out.push(b' ');
        out.extend_from_slice(CALLERS[ev.caller % CALLERS.len()]);
        out.extend_from_slice(b" - [");
        self.clock.push_rfc3339_ns(out, ev.ts_ms, ev.sub_ms_ns);
        out.extend_from_slice(b"] \"");
        push_method(out, ev, false);
        out.push(b' ');
        push_linkerd_uri(out, ev, key);
        out.extend_from_slice(if ev.http2 {
            b" HTTP/2.0\" "
        } else {
            b" HTTP/1.1\" "
        });
        push_status(out, status, bad);
    }

    /// Response body size when the format has no Envoy-specific error bodies.
    fn simple_body_bytes(&self, ev: &Event, status: u16) -> u64 {
        match ev.outcome {
            Outcome::Ok(s) => ok_body_bytes(s, ev),
            _ if status == 0 || status == 499 => 0,
            _ => 22,
        }
    }

    fn nginx(&mut self, out: &mut Vec<u8>, ev: &Event, key: &Key, bad: bool, t: &mut Truth) {
        let ms = ev.latency_ms as u64; // $request_time has ms resolution
        let (status, body) = match ev.outcome {
            Outcome::Ok(s) => (s, ok_body_bytes(s, ev)),
            Outcome::AppError => (500, 22),
            Outcome::ConnectFailure => (502, 157),
            Outcome::Timeout => (504, 160),
            Outcome::Reset => (499, 0),
        };
        t.status = status;
        t.latency_ms = Some(ms as f64);
        t.ts_ms = ev.ts_ms.div_euclid(1000) * 1000;
        push_ip(out, ev.public_ip);
        out.extend_from_slice(b" - - [");
        self.clock.push_nginx(out, ev.ts_ms);
        out.extend_from_slice(b"] \"");
        push_method_path(out, ev, false);
        out.extend_from_slice(if ev.http2 {
            b" HTTP/2.0\" "
        } else {
            b" HTTP/1.1\" "
        });
        push_status(out, status, bad);
        out.push(b' ');
        push_u64(out, body);
        out.extend_from_slice(b" \"");
        out.extend_from_slice(REFERERS[ev.referer % REFERERS.len()]);
        out.extend_from_slice(b"\" \"");
        out.extend_from_slice(self.user_agent(ev));
        out.extend_from_slice(b"\" ");
        push_u64(out, ev.request_length as u64 + request_bytes(ev));
        out.push(b' ');
        push_milli(out, ms);
        out.extend_from_slice(b" [");
        out.extend_from_slice(&key.nginx_upstream);
        out.extend_from_slice(b"] [");
        out.extend_from_slice(&key.nginx_alternative);
        out.extend_from_slice(b"] ");
        let pod = |k: usize| key.pods[(ev.pod + k) % key.pods.len()];
        let upstream_ms = ms.saturating_sub(ev.overhead_ms);
        match ev.outcome {
            Outcome::ConnectFailure => {
                // Every endpoint refused: three attempts, all 502.
                let each = upstream_ms / 3;
                for k in 0..3 {
                    if k > 0 {
                        out.extend_from_slice(b", ");
                    }
                    push_addr(out, pod(k), key.port);
                }
                out.extend_from_slice(b" 0, 0, 0 ");
                for k in 0..3 {
                    if k > 0 {
                        out.extend_from_slice(b", ");
                    }
                    push_milli(out, each);
                }
                out.extend_from_slice(b" 502, 502, 502 ");
            }
            Outcome::Ok(s) if ev.nginx_retry => {
                // First endpoint failed, the next one answered.
                let first = upstream_ms.min(2 + ev.overhead_ms);
                push_addr(out, pod(1), key.port);
                out.extend_from_slice(b", ");
                push_addr(out, pod(0), key.port);
                out.extend_from_slice(b" 0, ");
                push_u64(out, body);
                out.push(b' ');
                push_milli(out, first);
                out.extend_from_slice(b", ");
                push_milli(out, upstream_ms - first);
                out.extend_from_slice(b" 502, ");
                push_u64(out, s as u64);
                out.push(b' ');
            }
            Outcome::Reset => {
                push_addr(out, pod(0), key.port);
                out.extend_from_slice(b" 0 ");
                push_milli(out, upstream_ms);
                out.extend_from_slice(b" - ");
            }
            _ => {
                push_addr(out, pod(0), key.port);
                out.push(b' ');
                // A timed-out upstream sent nothing; nginx's 504 page is its own.
                push_u64(out, if status == 504 { 0 } else { body });
                out.push(b' ');
                push_milli(out, upstream_ms);
                out.push(b' ');
                push_u64(out, status as u64);
                out.push(b' ');
            }
        }
        push_hex(out, ev.request_id.0, 16);
        push_hex(out, ev.request_id.1, 16);
    }

    fn ndjson(&mut self, out: &mut Vec<u8>, ev: &Event, key: &Key, bad: bool, t: &mut Truth) {
        let grpc = ev.grpc && ev.outcome != Outcome::Reset;
        let (status, grpc_status) = match (grpc, ev.outcome) {
            (true, Outcome::Ok(404)) => (200, Some(5)), // NOT_FOUND
            (true, Outcome::Ok(_)) => (200, Some(0)),
            (true, Outcome::AppError) => (200, Some(13)), // INTERNAL
            (true, Outcome::ConnectFailure) => (200, Some(14)), // UNAVAILABLE
            (true, Outcome::Timeout) => (200, Some(4)),   // DEADLINE_EXCEEDED
            (_, Outcome::Ok(s)) => (s, None),
            (_, Outcome::AppError) => (500, None),
            (_, Outcome::ConnectFailure) => (503, None),
            (_, Outcome::Timeout) => (504, None),
            (_, Outcome::Reset) => (0, None),
        };
        let micros = (ev.latency_ms * 1000.0) as u64;
        t.status = status;
        t.grpc_status = grpc_status;
        t.latency_ms = Some(micros as f64 / 1000.0);
        out.extend_from_slice(b"{\"timestamp\":");
        push_u64(out, ev.ts_ms.max(0) as u64);
        out.extend_from_slice(b",\"target\":\"");
        out.extend_from_slice(&key.target);
        out.extend_from_slice(b"\",\"version\":\"");
        out.extend_from_slice(&key.version_name);
        out.extend_from_slice(b"\",\"method\":\"");
        push_method(out, ev, grpc);
        out.extend_from_slice(b"\",\"path\":\"");
        push_path(out, ev, grpc);
        out.extend_from_slice(b"\",\"status\":");
        push_status_json(out, status, bad);
        out.extend_from_slice(b",\"duration_ms\":");
        push_milli(out, micros);
        out.extend_from_slice(b",\"bytes\":");
        push_u64(out, self.simple_body_bytes(ev, status));
        out.extend_from_slice(b",\"request_id\":\"");
        push_uuid(out, ev.request_id.0, ev.request_id.1);
        out.push(b'"');
        if let Some(g) = grpc_status {
            out.extend_from_slice(b",\"grpc_status\":");
            push_u64(out, g as u64);
        }
        out.push(b'}');
    }
}

struct Addrs {
    upstream_host: ([u8; 4], u16),
    upstream_local: ([u8; 4], u16),
    downstream_local: ([u8; 4], u16),
    downstream_remote: ([u8; 4], u16),
}

/// Status as a bare token; a malformed line gets a non-numeric one.
fn push_status(out: &mut Vec<u8>, status: u16, bad: bool) {
    if bad {
        out.extend_from_slice(b"2x0");
    } else {
        push_u64(out, status as u64);
    }
}

/// Status as a JSON number; a malformed line gets a non-numeric string.
fn push_status_json(out: &mut Vec<u8>, status: u16, bad: bool) {
    if bad {
        out.extend_from_slice(b"\"2x0\"");
    } else {
        push_u64(out, status as u64);
    }
}

/// Response body bytes of a successful request.
fn ok_body_bytes(status: u16, ev: &Event) -> u64 {
    match status {
        200 => ev.bytes_out as u64,
        201 => 64 + (ev.hex & 0x7f),
        404 => 19, // "404 page not found\n"
        _ => 0,
    }
}

/// Request body bytes (0 for methods without a body).
fn request_bytes(ev: &Event) -> u64 {
    match method(ev, false) {
        b"POST" | b"PUT" => ev.bytes_in as u64,
        _ => 0,
    }
}

fn method(ev: &Event, grpc: bool) -> &'static [u8] {
    if grpc {
        return b"POST";
    }
    match ev.outcome {
        Outcome::Ok(201) => b"POST",
        Outcome::Ok(204) => b"DELETE",
        Outcome::Ok(301) | Outcome::Ok(404) => b"GET",
        _ => match ev.route {
            3 => b"POST",
            7 => b"PUT",
            _ => b"GET",
        },
    }
}

fn push_method(out: &mut Vec<u8>, ev: &Event, grpc: bool) {
    out.extend_from_slice(method(ev, grpc));
}

/// Path with query string; ids and hex parts vary per request.
fn push_path(out: &mut Vec<u8>, ev: &Event, grpc: bool) {
    let id = ev.id as u64;
    if grpc {
        out.extend_from_slice(GRPC_METHODS[ev.route % GRPC_METHODS.len()]);
        return;
    }
    match ev.outcome {
        Outcome::Ok(201) => return out.extend_from_slice(b"/api/v1/orders"),
        Outcome::Ok(204) => {
            out.extend_from_slice(b"/api/v1/users/");
            push_u64(out, id);
            out.extend_from_slice(b"/sessions/");
            return push_hex(out, ev.hex, 8);
        }
        Outcome::Ok(301) => return out.extend_from_slice(b"/docs"),
        Outcome::Ok(404) => {
            out.extend_from_slice(b"/api/v1/orders/");
            return push_u64(out, id + 900_000);
        }
        _ => {}
    }
    match ev.route {
        0 => out.extend_from_slice(b"/api/info"),
        1 => {
            out.extend_from_slice(b"/api/v1/users/");
            push_u64(out, id);
        }
        2 => {
            out.extend_from_slice(b"/api/v1/users/");
            push_u64(out, id);
            out.extend_from_slice(b"/orders?page=");
            push_u64(out, id % 20 + 1);
            out.extend_from_slice(b"&limit=20");
        }
        3 => out.extend_from_slice(b"/api/echo"),
        4 => {
            out.extend_from_slice(b"/static/js/app.");
            push_hex(out, ev.hex, 8);
            out.extend_from_slice(b".js");
        }
        5 => {
            out.extend_from_slice(b"/api/v1/products?category=");
            out.extend_from_slice(CATEGORIES[(id % 8) as usize]);
            out.extend_from_slice(b"&sort=price&offset=");
            push_u64(out, (id % 50) * 24);
        }
        6 => {
            out.extend_from_slice(b"/cache/");
            push_hex(out, ev.hex, 16);
        }
        7 => {
            out.extend_from_slice(b"/api/v1/users/");
            push_u64(out, id);
            out.extend_from_slice(b"/preferences");
        }
        8 => out.extend_from_slice(b"/healthz"),
        _ => {
            out.extend_from_slice(b"/api/v1/orders/");
            push_padded(out, id, 8);
        }
    }
}

fn push_method_path(out: &mut Vec<u8>, ev: &Event, grpc: bool) {
    push_method(out, ev, grpc);
    out.push(b' ');
    push_path(out, ev, grpc);
}

/// Linkerd logs an absolute URI for HTTP/2 from meshed clients, a path for HTTP/1.
fn push_linkerd_uri(out: &mut Vec<u8>, ev: &Event, key: &Key) {
    if ev.http2 {
        out.extend_from_slice(b"http://");
        out.extend_from_slice(&key.authority);
    }
    push_path(out, ev, false);
}

/// 16–200 random bytes, at least one of them 0xFF (never valid UTF-8), no line breaks.
fn push_garbage(out: &mut Vec<u8>, r: &mut Rng) {
    let n = r.range(16, 200) as usize;
    let start = out.len();
    for _ in 0..n {
        let b = r.next_u64() as u8;
        out.push(if b == b'\n' || b == b'\r' {
            b | 0x80
        } else {
            b
        });
    }
    let at = start + r.below(n as u64) as usize;
    if let Some(b) = out.get_mut(at) {
        *b = 0xff;
    }
}
