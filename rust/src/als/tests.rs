use super::*;
use crate::aggregate::{KeySnapshot, WindowQuery};
use crate::pipeline::Config;
use proptest::prelude::*;

const T0: i64 = 1_795_000_000; // seconds; 2026-11

fn pipeline() -> Pipeline {
    Pipeline::new(Config::default()).unwrap()
}

fn snapshot(p: &Pipeline) -> Vec<KeySnapshot> {
    p.aggregator().snapshot(&WindowQuery {
        window_ms: None,
        end_ms: None,
        target: None,
        series: false,
    })
}

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.into())),
    }
}

fn strukt(pairs: &[(&str, Value)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// An Istio sidecar node of `pod` in `ns` with these labels.
fn node(pod: &str, ns: &str, workload: &str, labels: &[(&str, &str)]) -> Node {
    let labels = strukt(&labels.iter().map(|(k, v)| (*k, s(v))).collect::<Vec<_>>());
    Node {
        id: format!("sidecar~10.0.0.1~{pod}.{ns}~{ns}.svc.cluster.local"),
        cluster: format!("{workload}.{ns}"),
        metadata: Some(strukt(&[
            ("NAME", s(pod)),
            ("NAMESPACE", s(ns)),
            ("WORKLOAD_NAME", s(workload)),
            (
                "LABELS",
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            ),
        ])),
    }
}

#[derive(Clone)]
struct E {
    cluster: String,
    code: Option<u32>,
    ms: u32,
    sec: i64,
    peer_version: Option<String>,
    grpc: Option<String>,
    uf: bool,
}

fn e(cluster: &str, code: u32, ms: u32) -> E {
    E {
        cluster: cluster.into(),
        code: Some(code),
        ms,
        sec: T0,
        peer_version: None,
        grpc: None,
        uf: false,
    }
}

fn entry(x: &E) -> HttpAccessLogEntry {
    let mut fso = HashMap::new();
    if let Some(v) = &x.peer_version {
        let peer = strukt(&[
            ("workload", s("reviews-x")),
            ("version", s(v)),
            ("namespace", s("default")),
        ]);
        fso.insert(
            "upstream_peer".to_string(),
            Any {
                type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                value: peer.encode_to_vec(),
            },
        );
    }
    let mut trailers = HashMap::new();
    if let Some(g) = &x.grpc {
        trailers.insert("grpc-status".to_string(), g.clone());
    }
    HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            start_time: Some(Time {
                seconds: x.sec,
                nanos: 5_000_000,
            }),
            duration: Some(Time {
                seconds: i64::from(x.ms / 1000),
                nanos: ((x.ms % 1000) * 1_000_000) as i32,
            }),
            upstream_cluster: x.cluster.clone(),
            response_flags: x.uf.then(|| ResponseFlags {
                upstream_connection_failure: true,
                upstream_retry_limit_exceeded: true,
                ..ResponseFlags::default()
            }),
            route_name: "default".into(),
            filter_state_objects: fso,
            ..AccessLogCommon::default()
        }),
        request: Some(HttpRequestProperties {
            authority: "reviews:9080".into(),
        }),
        response: Some(HttpResponseProperties {
            response_code: x.code.map(|value| UInt32Value { value }),
            response_trailers: trailers,
            ..HttpResponseProperties::default()
        }),
    }
}

fn message(ident: Option<Node>, entries: &[E]) -> Vec<u8> {
    StreamAccessLogsMessage {
        identifier: ident.map(|n| Identifier {
            node: Some(n),
            log_name: "canary".into(),
        }),
        http_logs: Some(HttpEntries {
            log_entry: entries.iter().map(entry).collect(),
        }),
        tcp_logs: None,
    }
    .encode_to_vec()
}

fn by_key(p: &Pipeline) -> Vec<(String, String, u64, u64)> {
    snapshot(p)
        .into_iter()
        .map(|k| (k.target, k.version, k.requests, k.failures))
        .collect()
}

#[test]
fn inbound_entries_take_the_version_from_the_node() {
    let mut p = pipeline();
    // Flagger: `podinfo-primary-…` (no version label) and the plain `podinfo-…` canary pods.
    let mut primary = AlsStream::new();
    let mut canary = AlsStream::new();
    let inbound = "inbound|9898||";
    let m = message(
        Some(node(
            "podinfo-primary-5d8f7c6b9d-x2x4z",
            "test",
            "podinfo-primary",
            &[
                ("app", "podinfo-primary"),
                ("service.istio.io/canonical-revision", "latest"),
            ],
        )),
        &[
            e(inbound, 200, 10),
            e(inbound, 200, 12),
            e(inbound, 500, 30),
        ],
    );
    primary.feed_message(&mut p, &m, 0);
    let m = message(
        Some(node(
            "podinfo-7b9c4d5f6-abcde",
            "test",
            "podinfo",
            &[("app", "podinfo")],
        )),
        &[e(inbound, 200, 20)],
    );
    canary.feed_message(&mut p, &m, 0);
    // Later messages carry no identifier: the stream remembers it.
    canary.feed_message(&mut p, &message(None, &[e(inbound, 503, 40)]), 0);
    assert_eq!(
        by_key(&p),
        vec![
            ("podinfo.test".into(), "canary".into(), 2, 1),
            ("podinfo.test".into(), "primary".into(), 3, 1),
        ]
    );
    assert_eq!(canary.identity().unwrap().pod, "podinfo-7b9c4d5f6-abcde");
    assert_eq!(canary.identity().unwrap().log_name, "canary");
}

#[test]
fn a_version_label_wins_and_latest_is_ignored() {
    let n = node(
        "reviews-v2-5d8f7c6b9d-x2x4z",
        "default",
        "reviews-v2",
        &[("app", "reviews"), ("version", "v2")],
    );
    assert_eq!(NodeIdentity::from_node(&n, "x").version, "v2");
    let n = node(
        "reviews-v2-5d8f7c6b9d-x2x4z",
        "default",
        "reviews-v2",
        &[("service.istio.io/canonical-revision", "latest")],
    );
    assert_eq!(NodeIdentity::from_node(&n, "x").version, "");
    // Without metadata the pod and namespace come from the node id.
    let bare = Node {
        id: "sidecar~10.1.2.3~web-6f7d8-zzz.shop~shop.svc.cluster.local".into(),
        ..Node::default()
    };
    let id = NodeIdentity::from_node(&bare, "");
    assert_eq!(
        (id.pod.as_str(), id.namespace.as_str()),
        ("web-6f7d8-zzz", "shop")
    );
}

#[test]
fn outbound_entries_use_peer_metadata_then_the_cluster() {
    let mut p = pipeline();
    let mut st = AlsStream::new();
    let client = node(
        "frontend-1-2",
        "default",
        "frontend",
        &[("app", "frontend")],
    );
    let host = "outbound|9080||reviews.default.svc.cluster.local";
    let mut v1 = e(host, 200, 5);
    v1.peer_version = Some("v1".into());
    let mut v2 = e(host, 503, 7);
    v2.peer_version = Some("v2".into());
    let mut latest = e(
        "outbound|9080|canary|reviews.default.svc.cluster.local",
        200,
        5,
    );
    latest.peer_version = Some("".into()); // no version label: the subset decides
    let m = message(
        Some(client),
        &[v1.clone(), v2.clone(), v1, latest, v2.clone()],
    );
    let stats = st.feed_message(&mut p, &m, 0);
    assert_eq!((stats.lines, stats.accepted), (5, 5));
    assert_eq!(
        by_key(&p),
        vec![
            ("reviews.default".into(), "canary".into(), 1, 0),
            ("reviews.default".into(), "v1".into(), 2, 0),
            ("reviews.default".into(), "v2".into(), 2, 2),
        ]
    );
}

#[test]
fn fields_map_to_the_record() {
    let mut p = pipeline();
    let mut st = AlsStream::new();
    let mut x = e("outbound|80|canary|web.prod.svc.cluster.local", 200, 1500);
    x.grpc = Some("14".into()); // UNAVAILABLE: a failure despite HTTP 200
    x.uf = true;
    let mut none = e("outbound|80|canary|web.prod.svc.cluster.local", 0, 3);
    none.code = None; // no response sent
    st.feed_message(&mut p, &message(None, &[x, none]), 0);
    let k = &snapshot(&p)[0];
    assert_eq!(
        (k.requests, k.failures, k.status_0, k.status_2xx),
        (2, 2, 1, 1)
    );
    assert_eq!(k.max_ms.map(|v| v.round()), Some(1500.0));
    let names: Vec<&str> = FLAG_NAMES
        .iter()
        .zip(k.flags.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(names, vec!["UF", "URX"]);
    assert_eq!(k.start_ms, T0 * 1000);
}

#[test]
fn bad_entries_are_counted_and_the_rest_kept() {
    let mut p = pipeline();
    let mut st = AlsStream::new();
    let good = entry(&e("outbound|80|canary|web.prod.svc.cluster.local", 200, 3)).encode_to_vec();
    // An entry whose bytes are not a message (a length running past its end).
    let bad = vec![0x0a, 0x7f, 0x01];
    let mut wrapper = Vec::new();
    for ent in [&good, &bad, &good] {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut wrapper);
        prost::encoding::encode_varint(ent.len() as u64, &mut wrapper);
        wrapper.extend_from_slice(ent);
    }
    let mut msg = Vec::new();
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut msg);
    prost::encoding::encode_varint(wrapper.len() as u64, &mut msg);
    msg.extend_from_slice(&wrapper);
    let stats = st.feed_message(&mut p, &msg, 0);
    assert_eq!((stats.lines, stats.accepted), (3, 2));
    assert_eq!(p.totals().reasons.get(Reason::BadProtobuf), 1);

    // Cut the message inside its third entry: the two entries before the cut are kept.
    let cut = &msg[..msg.len() - 4];
    let stats = st.feed_message(&mut p, cut, 0);
    assert_eq!(stats.accepted, 1); // the first good one (the second is the bad entry)
    assert_eq!(p.totals().reasons.get(Reason::BadProtobuf), 3);
}

#[test]
fn tcp_intermediate_and_out_of_range_values_are_counted() {
    let mut p = pipeline();
    let mut st = AlsStream::new();
    let tcp = StreamAccessLogsMessage {
        identifier: None,
        http_logs: None,
        tcp_logs: Some(TcpEntries {
            log_entry: vec![vec![], vec![0x0a, 0x00]],
        }),
    }
    .encode_to_vec();
    st.feed_message(&mut p, &tcp, 0);
    let mut inter = entry(&e("outbound|80|canary|web.prod.svc.cluster.local", 200, 3));
    inter
        .common_properties
        .as_mut()
        .unwrap()
        .intermediate_log_entry = true;
    let mut huge = entry(&e("outbound|80|canary|web.prod.svc.cluster.local", 200, 3));
    huge.response.as_mut().unwrap().response_code = Some(UInt32Value { value: 70_000 });
    let mut neg = entry(&e("outbound|80|canary|web.prod.svc.cluster.local", 200, 3));
    neg.common_properties.as_mut().unwrap().start_time = Some(Time {
        seconds: 1,
        nanos: -5,
    });
    let msg = StreamAccessLogsMessage {
        identifier: None,
        http_logs: Some(HttpEntries {
            log_entry: vec![inter, huge, neg],
        }),
        tcp_logs: None,
    }
    .encode_to_vec();
    st.feed_message(&mut p, &msg, 0);
    let t = p.totals();
    assert_eq!((t.lines, t.accepted), (5, 0));
    assert_eq!(t.reasons.get(Reason::NotHttp), 2);
    assert_eq!(t.reasons.get(Reason::IntermediateEntry), 1);
    assert_eq!(t.reasons.get(Reason::BadNumber), 1);
    assert_eq!(t.reasons.get(Reason::BadTimestamp), 1);
}

#[test]
fn framed_buffers_split_into_messages() {
    let mut p = pipeline();
    let mut st = AlsStream::new();
    let a = message(
        None,
        &[e("outbound|80|canary|web.prod.svc.cluster.local", 200, 3)],
    );
    let b = message(
        None,
        &[
            e("outbound|80|primary|web.prod.svc.cluster.local", 200, 3),
            e("outbound|80|primary|web.prod.svc.cluster.local", 200, 3),
        ],
    );
    let mut buf = frame(&[&a, &b]);
    let stats = st.feed_framed(&mut p, &buf, 0);
    assert_eq!((stats.lines, stats.accepted), (3, 3));
    assert_eq!(st.messages, 2);
    let whole = buf.len() as u64;
    buf.truncate(buf.len() - 1); // a frame cut short: one bad_protobuf, the first message kept
    let stats = st.feed_framed(&mut p, &buf, 0);
    assert_eq!((stats.lines, stats.accepted), (2, 1));
    assert_eq!(p.totals().bytes, 2 * whole - 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut p = pipeline();
        let mut st = AlsStream::new();
        let s1 = st.feed_message(&mut p, &bytes, 0);
        let s2 = st.feed_framed(&mut p, &bytes, 0);
        // Every entry is counted once: lines = accepted + every reason.
        let t = p.totals();
        prop_assert_eq!(t.lines, s1.lines + s2.lines);
        prop_assert_eq!(t.lines, t.accepted + t.reasons.0.iter().sum::<u64>());
    }

    #[test]
    fn mutated_messages_never_panic(
        flips in proptest::collection::vec((0usize..4000, any::<u8>()), 1..8),
    ) {
        let mut m = message(
            Some(node("web-1-2", "prod", "web", &[("version", "v1")])),
            &[e("inbound|80||", 200, 3), e("outbound|80|canary|web.prod.svc.cluster.local", 500, 9)],
        );
        for (i, b) in flips {
            let n = m.len();
            m[i % n] = b;
        }
        let mut p = pipeline();
        let mut st = AlsStream::new();
        st.feed_message(&mut p, &m, 0);
        let t = p.totals();
        prop_assert_eq!(t.lines, t.accepted + t.reasons.0.iter().sum::<u64>());
    }

    #[test]
    fn encoded_entries_decode_into_the_same_counts(
        rows in proptest::collection::vec(
            (0usize..3, prop_oneof![Just(200u32), Just(404), Just(500), Just(503)], 0u32..5000, 0i64..5),
            1..120,
        ),
        per_message in 1usize..40,
    ) {
        let subsets = ["primary", "canary", "stable"];
        let entries: Vec<E> = rows
            .iter()
            .map(|(v, code, ms, dt)| {
                let mut x = e(&format!("outbound|80|{}|web.prod.svc.cluster.local", subsets[*v]), *code, *ms);
                x.sec = T0 + dt;
                x
            })
            .collect();
        let messages: Vec<Vec<u8>> = entries.chunks(per_message).map(|c| message(None, c)).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let mut p = pipeline();
        let mut st = AlsStream::new();
        let stats = st.feed_framed(&mut p, &frame(&refs), 0);
        prop_assert_eq!(stats.lines, entries.len() as u64);
        prop_assert_eq!(stats.accepted, entries.len() as u64);
        for (i, subset) in subsets.iter().enumerate() {
            let want: Vec<&(usize, u32, u32, i64)> = rows.iter().filter(|r| r.0 == i).collect();
            let got = snapshot(&p).into_iter().find(|k| k.version == *subset);
            match got {
                None => prop_assert!(want.is_empty()),
                Some(k) => {
                    prop_assert_eq!(k.requests, want.len() as u64);
                    prop_assert_eq!(k.status_5xx, want.iter().filter(|r| r.1 >= 500).count() as u64);
                    prop_assert_eq!(k.status_4xx, want.iter().filter(|r| r.1 == 404).count() as u64);
                    let max = want.iter().map(|r| r.2).max().unwrap_or(0) as f64;
                    // The sketch's relative error bound (1 %), plus 1 ms for 0.
                    prop_assert!((k.max_ms.unwrap() - max).abs() <= max * 0.01 + 1.0);
                }
            }
        }
    }
}

/// The reference view of a prost-decoded entry.
fn view_of(e: &HttpAccessLogEntry) -> EntryView<'_> {
    let mut v = EntryView::default();
    if let Some(c) = &e.common_properties {
        v.start_time = c.start_time;
        v.duration = c.duration;
        v.time_to_last_downstream_tx_byte = c.time_to_last_downstream_tx_byte;
        v.time_to_last_upstream_rx_byte = c.time_to_last_upstream_rx_byte;
        v.upstream_cluster = &c.upstream_cluster;
        v.route_name = &c.route_name;
        v.sni = c
            .tls_properties
            .as_ref()
            .map_or("", |t| &t.tls_sni_hostname);
        v.upstream_address = c
            .upstream_remote_address
            .as_ref()
            .and_then(|a| a.socket_address.as_ref())
            .map(|s| (s.address.as_str(), s.port_value));
        v.flags = c
            .response_flags
            .as_ref()
            .map(response_flags)
            .unwrap_or_default();
        v.intermediate = c.intermediate_log_entry;
        v.upstream_peer = c
            .filter_state_objects
            .get("upstream_peer")
            .map(|a| (a.type_url.as_str(), a.value.as_slice()));
    }
    v.authority = e.request.as_ref().map_or("", |r| &r.authority);
    if let Some(r) = &e.response {
        v.has_response = true;
        v.response_code = r.response_code.map(|c| c.value);
        v.grpc_status_trailer = r.response_trailers.get("grpc-status").map(String::as_str);
        v.grpc_status_header = r.response_headers.get("grpc-status").map(String::as_str);
    }
    v
}

fn flags_from_bits(bits: u32) -> ResponseFlags {
    let b = |i: u32| bits & (1 << i) != 0;
    ResponseFlags {
        failed_local_healthcheck: b(0),
        no_healthy_upstream: b(1),
        upstream_request_timeout: b(2),
        local_reset: b(3),
        upstream_remote_reset: b(4),
        upstream_connection_failure: b(5),
        upstream_connection_termination: b(6),
        upstream_overflow: b(7),
        no_route_found: b(8),
        delay_injected: b(9),
        fault_injected: b(10),
        rate_limited: b(11),
        unauthorized_details: b(12).then_some(Unauthorized { reason: 1 }),
        rate_limit_service_error: b(13),
        downstream_connection_termination: b(14),
        upstream_retry_limit_exceeded: b(15),
        stream_idle_timeout: b(16),
        invalid_envoy_request_headers: b(17),
        downstream_protocol_error: b(18),
        upstream_max_stream_duration_reached: b(19),
        response_from_cache_filter: b(20),
        no_filter_config_found: b(21),
        duration_timeout: b(22),
        upstream_protocol_error: b(23),
        no_cluster_found: b(24),
        overload_manager: b(25),
        dns_resolution_failure: b(26),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The borrowed decoder reads what prost reads, for every shape of entry.
    #[test]
    fn borrowed_decoder_agrees_with_prost(
        cluster in "(inbound|outbound)\\|[0-9]{2,4}\\|[a-z]{0,6}\\|[a-z.-]{0,20}",
        code in proptest::option::of(0u32..2000),
        times in proptest::collection::vec(proptest::option::of((any::<i64>(), any::<i32>())), 4),
        flag_bits in proptest::option::of(any::<u32>()),
        peer in proptest::option::of(("[a-z./]{0,40}", proptest::collection::vec(any::<u8>(), 0..40))),
        grpc in proptest::collection::vec(proptest::option::of("[0-9a-z]{0,3}"), 2),
        strings in proptest::collection::vec("\\PC{0,12}", 3),
        address in proptest::option::of(("[0-9a-f:.]{0,20}", any::<u32>())),
        intermediate in any::<bool>(),
        response in any::<bool>(),
    ) {
        let t = |i: usize| times[i].map(|(seconds, nanos)| Time { seconds, nanos });
        let mut fso = HashMap::new();
        if let Some((url, value)) = &peer {
            fso.insert("upstream_peer".to_string(), Any { type_url: url.clone(), value: value.clone() });
            fso.insert("downstream_peer".to_string(), Any { type_url: "x".into(), value: vec![1, 2] });
        }
        let mut headers = HashMap::new();
        let mut trailers = HashMap::new();
        if let Some(g) = &grpc[0] { trailers.insert("grpc-status".to_string(), g.clone()); }
        if let Some(g) = &grpc[1] { headers.insert("grpc-status".to_string(), g.clone()); }
        headers.insert("x-app-version".to_string(), "v9".to_string());
        let e = HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                tls_properties: Some(TlsProperties { tls_sni_hostname: strings[0].clone() }),
                start_time: t(0),
                time_to_last_upstream_rx_byte: t(1),
                time_to_last_downstream_tx_byte: t(2),
                duration: t(3),
                upstream_remote_address: address.as_ref().map(|(a, port)| Address {
                    socket_address: Some(SocketAddress { address: a.clone(), port_value: *port }),
                }),
                upstream_cluster: cluster.clone(),
                response_flags: flag_bits.map(flags_from_bits),
                route_name: strings[1].clone(),
                filter_state_objects: fso,
                intermediate_log_entry: intermediate,
            }),
            request: Some(HttpRequestProperties { authority: strings[2].clone() }),
            response: response.then(|| HttpResponseProperties {
                response_code: code.map(|value| UInt32Value { value }),
                response_headers: headers,
                response_trailers: trailers,
            }),
        };
        let bytes = e.encode_to_vec();
        let reference = HttpAccessLogEntry::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(EntryView::decode(&bytes), Some(view_of(&reference)));
    }

    /// On mutated bytes, whenever both decoders accept an entry they read the same values.
    #[test]
    fn borrowed_decoder_agrees_on_mutated_bytes(
        flips in proptest::collection::vec((0usize..2000, any::<u8>()), 1..4),
    ) {
        let mut x = e("outbound|80|canary|web.prod.svc.cluster.local", 503, 12);
        x.peer_version = Some("v1".into());
        x.grpc = Some("14".into());
        x.uf = true;
        let mut bytes = entry(&x).encode_to_vec();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        let reference = HttpAccessLogEntry::decode(bytes.as_slice());
        let mine = EntryView::decode(&bytes);
        if let (Ok(r), Some(m)) = (&reference, &mine) {
            prop_assert_eq!(m, &view_of(r));
        }
    }
}
