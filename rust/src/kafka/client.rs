//! Blocking Fetch requests to partition leaders (plain TCP), decoded into line buffers.
//!
//! One connection per broker address, opened on first use and dropped on any I/O or protocol
//! error (the next call reconnects). Requests to several brokers are all sent before the first
//! response is read, so the brokers work in parallel. Request/response framing comes from the
//! `kafka-protocol` crate; the records are decoded by [`super::batch`]. Errors are returned, never
//! raised as panics: per broker (connection refused, timeout, bad response) and per partition
//! (Kafka error codes such as NOT_LEADER_OR_FOLLOWER or OFFSET_OUT_OF_RANGE).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use super::batch::{next_offset_after, BufferPool, DecodeOptions, Decoder, PartitionLines};

/// The Fetch version asked for: the newest that still names topics (v13+ use topic ids).
const FETCH_VERSION: i16 = 12;
/// The oldest Kafka 4.x serves.
const FETCH_MIN_VERSION: i16 = 4;
/// A response larger than this is a protocol error, not an allocation.
const MAX_RESPONSE: usize = 1 << 30;

/// Fetch settings (see `KafkaConfig` on the Python side).
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub client_id: String,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    /// Records per `fetch` call, all partitions together.
    pub max_records: u64,
    pub connect_timeout: Duration,
    /// On top of `max_wait_ms` for reading a response.
    pub request_timeout: Duration,
    /// Send the next Fetch of a broker's partitions as soon as a response is read (see
    /// [`Fetcher::fetch`]).
    pub pipeline: bool,
    pub decode: DecodeOptions,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            client_id: "canary-stream".into(),
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 32 << 20,
            partition_max_bytes: 4 << 20,
            max_records: 50_000,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pipeline: false,
            decode: DecodeOptions::default(),
        }
    }
}

/// One partition to fetch from its leader.
#[derive(Debug, Clone)]
pub struct PartitionRequest {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The partitions led by one broker.
#[derive(Debug, Clone)]
pub struct NodeRequest {
    pub host: String,
    pub port: u16,
    pub partitions: Vec<PartitionRequest>,
}

/// What one partition's fetch gave.
#[derive(Debug)]
pub struct PartitionResult {
    pub topic: String,
    pub partition: i32,
    pub fetch_offset: i64,
    /// Kafka error code (0: none; then `lines` is empty and the offset unchanged).
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub lines: PartitionLines,
}

/// A broker that could not be fetched from (its partitions are not in the results).
#[derive(Debug)]
pub struct NodeError {
    pub host: String,
    pub port: u16,
    pub message: String,
}

struct Connection {
    stream: TcpStream,
    version: i16,
    correlation: i32,
    frames: FrameBuffer,
    /// A pipelined Fetch sent and not read yet.
    inflight: Option<Inflight>,
}

/// A Fetch request whose response has not been read.
struct Inflight {
    correlation: i32,
    partitions: Vec<PartitionRequest>,
}

/// A connection's response buffer, reused from one response to the next: a fresh buffer of
/// many MB per response costs a page fault and a page clearing per 4 KiB. A response is handed
/// out as `Bytes` owning the buffer ([`Frame`]); when the last of them (the decoded response's
/// record slices) is dropped, the buffer comes back here.
#[derive(Clone, Default)]
struct FrameBuffer(Arc<Mutex<Option<Vec<u8>>>>);

impl FrameBuffer {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
            .unwrap_or_default()
    }
}

/// The owner of a response's bytes: the first `len` bytes of `buf`.
struct Frame {
    buf: Vec<u8>,
    len: usize,
    home: FrameBuffer,
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.home.0.lock() {
            *slot = Some(std::mem::take(&mut self.buf));
        }
    }
}

/// A Kafka fetcher: connections, settings and the record decoder.
pub struct Fetcher {
    cfg: FetchConfig,
    decoder: Decoder,
    conns: HashMap<(String, u16), Connection>,
    pipelined: u64,
    discarded: u64,
}

type Failure = String;

impl Fetcher {
    pub fn new(cfg: FetchConfig) -> Self {
        let decoder = Decoder::new(cfg.decode.clone());
        Fetcher {
            cfg,
            decoder,
            conns: HashMap::new(),
            pipelined: 0,
            discarded: 0,
        }
    }

    pub fn config(&self) -> &FetchConfig {
        &self.cfg
    }

    /// The pool the decoded line buffers come from (give them back once used).
    pub fn pool(&self) -> &BufferPool {
        self.decoder.pool()
    }

    /// Drop every connection (the next fetch reconnects).
    pub fn close(&mut self) {
        self.conns.clear();
    }

    /// Fetch once from every node: all requests are sent, then the responses read and decoded.
    ///
    /// Pipelined (`FetchConfig::pipeline`): as soon as a response is read, the next Fetch of the
    /// same partitions is sent, from the offsets its batch headers end at, before its records are
    /// decoded; the broker prepares that response while this one is decoded and handed over. The
    /// next call uses the request in flight only when it asks for exactly those partitions and
    /// offsets (otherwise — a seek, a rebalance, an error, a record limit — its response is read
    /// and dropped, and a fresh request sent), so the positions are always the caller's.
    pub fn fetch(&mut self, nodes: &[NodeRequest]) -> (Vec<PartitionResult>, Vec<NodeError>) {
        let mut results = Vec::new();
        let mut errors = Vec::new();
        let nodes: Vec<&NodeRequest> = nodes.iter().filter(|n| !n.partitions.is_empty()).collect();
        // a request in flight to a broker not asked now: its connection is dropped unread
        self.conns.retain(|(host, port), conn| {
            conn.inflight.is_none() || nodes.iter().any(|n| &n.host == host && n.port == *port)
        });
        let mut sent: Vec<(&NodeRequest, i32)> = Vec::new();
        for node in nodes {
            match self.reuse_or_send(node) {
                Ok(correlation) => sent.push((node, correlation)),
                Err(message) => self.failed(node, message, &mut errors),
            }
        }
        let mut budget = self.cfg.max_records;
        for (node, correlation) in sent {
            if let Err(message) = self.receive(node, correlation, &mut budget, &mut results) {
                self.failed(node, message, &mut errors);
            }
        }
        (results, errors)
    }

    /// Fetches answered by the request already in flight (counters for tests and diagnostics).
    pub fn pipelined(&self) -> u64 {
        self.pipelined
    }

    /// Requests in flight whose responses were dropped: the caller asked for other offsets.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    fn failed(&mut self, node: &NodeRequest, message: Failure, errors: &mut Vec<NodeError>) {
        self.conns.remove(&(node.host.clone(), node.port));
        errors.push(NodeError {
            host: node.host.clone(),
            port: node.port,
            message,
        });
    }

    /// The correlation id of a request for `node`: the one in flight when it asks for exactly
    /// these partitions and offsets, else a new one (the one in flight read and dropped first).
    fn reuse_or_send(&mut self, node: &NodeRequest) -> Result<i32, Failure> {
        let key = (node.host.clone(), node.port);
        if let Some(conn) = self.conns.get_mut(&key) {
            if let Some(inflight) = conn.inflight.take() {
                if same_partitions(&inflight.partitions, &node.partitions) {
                    self.pipelined += 1;
                    return Ok(inflight.correlation);
                }
                self.discarded += 1;
                let body = read_frame(&mut conn.stream, &conn.frames)
                    .map_err(|e| format!("read from {}:{}: {e}", node.host, node.port))?;
                drop(body);
            }
        }
        self.send(node)
    }

    fn connection(&mut self, host: &str, port: u16) -> Result<&mut Connection, Failure> {
        let key = (host.to_string(), port);
        if !self.conns.contains_key(&key) {
            let conn = connect(host, port, &self.cfg)?;
            self.conns.insert(key.clone(), conn);
        }
        self.conns
            .get_mut(&key)
            .ok_or_else(|| "connection vanished".to_string())
    }

    fn send(&mut self, node: &NodeRequest) -> Result<i32, Failure> {
        let cfg = self.cfg.clone();
        let conn = self.connection(&node.host, node.port)?;
        let mut topics: Vec<FetchTopic> = Vec::new();
        for p in &node.partitions {
            let part = FetchPartition::default()
                .with_partition(p.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(p.offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(cfg.partition_max_bytes);
            match topics
                .iter_mut()
                .find(|t| t.topic.0.as_str() == p.topic.as_str())
            {
                Some(t) => t.partitions.push(part),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(cfg.max_wait_ms)
            .with_min_bytes(cfg.min_bytes)
            .with_max_bytes(cfg.max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics);
        conn.correlation = conn.correlation.wrapping_add(1);
        let correlation = conn.correlation;
        let version = conn.version;
        let frame = encode(
            ApiKey::Fetch,
            version,
            correlation,
            &cfg.client_id,
            &request,
            FetchRequest::header_version(version),
        )?;
        conn.stream
            .set_read_timeout(Some(
                Duration::from_millis(cfg.max_wait_ms.max(0) as u64) + cfg.request_timeout,
            ))
            .map_err(|e| e.to_string())?;
        conn.stream
            .write_all(&frame)
            .map_err(|e| format!("send to {}:{}: {e}", node.host, node.port))?;
        Ok(correlation)
    }

    fn receive(
        &mut self,
        node: &NodeRequest,
        correlation: i32,
        budget: &mut u64,
        results: &mut Vec<PartitionResult>,
    ) -> Result<(), Failure> {
        let conn = self
            .conns
            .get_mut(&(node.host.clone(), node.port))
            .ok_or_else(|| "no connection".to_string())?;
        let version = conn.version;
        let mut body = read_frame(&mut conn.stream, &conn.frames)
            .map_err(|e| format!("read from {}:{}: {e}", node.host, node.port))?;
        let header = ResponseHeader::decode(&mut body, FetchResponse::header_version(version))
            .map_err(|e| format!("bad response header: {e}"))?;
        if header.correlation_id != correlation {
            return Err(format!(
                "correlation id {} (expected {correlation})",
                header.correlation_id
            ));
        }
        let response = FetchResponse::decode(&mut body, version)
            .map_err(|e| format!("bad fetch response: {e}"))?;
        drop(body); // the records are slices of the frame: it comes back once they are dropped
        if response.error_code != 0 {
            return Err(format!("fetch error code {}", response.error_code));
        }
        let offsets: HashMap<(&str, i32), i64> = node
            .partitions
            .iter()
            .map(|p| ((p.topic.as_str(), p.partition), p.offset))
            .collect();
        if self.cfg.pipeline {
            if let Some(next) = next_request(node, &response, &offsets) {
                let key = (node.host.clone(), node.port);
                match self.send(&next) {
                    Ok(correlation) => {
                        if let Some(conn) = self.conns.get_mut(&key) {
                            conn.inflight = Some(Inflight {
                                correlation,
                                partitions: next.partitions,
                            });
                        }
                    }
                    // this response is read whole: decode it; the next call reconnects
                    Err(_) => {
                        self.conns.remove(&key);
                    }
                }
            }
        }
        for topic in response.responses {
            let name = topic.topic.0.as_str().to_string();
            for part in topic.partitions {
                let Some(&fetch_offset) = offsets.get(&(name.as_str(), part.partition_index))
                else {
                    continue; // not asked for
                };
                let mut lines = PartitionLines {
                    next_offset: fetch_offset,
                    ..PartitionLines::default()
                };
                if part.error_code == 0 {
                    if let Some(records) = &part.records {
                        lines = self.decoder.decode(records, fetch_offset, *budget);
                        *budget = budget.saturating_sub(lines.records);
                    }
                }
                results.push(PartitionResult {
                    topic: name.clone(),
                    partition: part.partition_index,
                    fetch_offset,
                    error_code: part.error_code,
                    high_watermark: part.high_watermark,
                    log_start_offset: part.log_start_offset,
                    lines,
                });
            }
        }
        Ok(())
    }
}

/// The same partitions from where this response's batches end, when every partition of the
/// request answered without an error (after an error the caller decides what comes next).
fn next_request(
    node: &NodeRequest,
    response: &FetchResponse,
    offsets: &HashMap<(&str, i32), i64>,
) -> Option<NodeRequest> {
    let mut next: HashMap<(&str, i32), i64> = HashMap::with_capacity(offsets.len());
    for topic in &response.responses {
        for part in &topic.partitions {
            let key = (topic.topic.0.as_str(), part.partition_index);
            let Some(&from) = offsets.get(&key) else {
                continue;
            };
            if part.error_code != 0 {
                return None;
            }
            let end = part
                .records
                .as_ref()
                .map_or(from, |r| next_offset_after(r, from));
            next.insert(key, end);
        }
    }
    let partitions = node
        .partitions
        .iter()
        .map(|p| {
            next.get(&(p.topic.as_str(), p.partition))
                .map(|&offset| PartitionRequest {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset,
                })
        })
        .collect::<Option<Vec<_>>>()?; // a partition missing from the response: no guess
    Some(NodeRequest {
        host: node.host.clone(),
        port: node.port,
        partitions,
    })
}

/// The same partitions at the same offsets, in any order.
fn same_partitions(a: &[PartitionRequest], b: &[PartitionRequest]) -> bool {
    let key = |p: &PartitionRequest| (p.topic.clone(), p.partition, p.offset);
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

fn encode<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation: i32,
    client_id: &str,
    request: &R,
    header_version: i16,
) -> Result<Vec<u8>, Failure> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0, 0, 0, 0]);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("encode header: {e}"))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| format!("encode request: {e}"))?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.to_vec())
}

/// Read one size-prefixed response into the connection's reused buffer.
fn read_frame(stream: &mut TcpStream, frames: &FrameBuffer) -> std::io::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let n = u32::from_be_bytes(size) as usize;
    if n > MAX_RESPONSE {
        return Err(std::io::Error::other(format!("response of {n} bytes")));
    }
    let mut buf = frames.take();
    if buf.len() < n {
        // only what the buffer never held is zeroed; a reused buffer is overwritten in place
        if buf.capacity() < n {
            // not zeroed first: read_to_end fills the spare capacity (a pass over the data saved)
            buf = Vec::with_capacity(n);
            stream.take(n as u64).read_to_end(&mut buf)?;
            if buf.len() != n {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("response cut short at {} of {n} bytes", buf.len()),
                ));
            }
            return Ok(frame(buf, n, frames));
        }
        buf.resize(n, 0);
    }
    let dst = buf.get_mut(..n).unwrap_or_default();
    stream.read_exact(dst)?;
    Ok(frame(buf, n, frames))
}

fn frame(buf: Vec<u8>, len: usize, frames: &FrameBuffer) -> Bytes {
    Bytes::from_owner(Frame {
        buf,
        len,
        home: frames.clone(),
    })
}

/// Connect and pick the Fetch version (ApiVersions v0: understood by every broker).
fn connect(host: &str, port: u16, cfg: &FetchConfig) -> Result<Connection, Failure> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}:{port}: {e}"))?
        .collect();
    let mut last = format!("no address for {host}:{port}");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, cfg.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {host}:{port}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(cfg.request_timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(cfg.request_timeout))
        .map_err(|e| e.to_string())?;
    let frame = encode(
        ApiKey::ApiVersions,
        0,
        0,
        &cfg.client_id,
        &ApiVersionsRequest::default(),
        ApiVersionsRequest::header_version(0),
    )?;
    stream
        .write_all(&frame)
        .map_err(|e| format!("send to {host}:{port}: {e}"))?;
    let frames = FrameBuffer::default();
    let mut body =
        read_frame(&mut stream, &frames).map_err(|e| format!("read from {host}:{port}: {e}"))?;
    ResponseHeader::decode(&mut body, ApiVersionsResponse::header_version(0))
        .map_err(|e| format!("bad ApiVersions header: {e}"))?;
    let versions = ApiVersionsResponse::decode(&mut body, 0)
        .map_err(|e| format!("bad ApiVersions response: {e}"))?;
    if versions.error_code != 0 {
        return Err(format!("ApiVersions error code {}", versions.error_code));
    }
    let fetch = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Fetch as i16)
        .ok_or_else(|| format!("{host}:{port} does not serve Fetch"))?;
    let version = FETCH_VERSION.min(fetch.max_version);
    if version < FETCH_MIN_VERSION.max(fetch.min_version) {
        return Err(format!(
            "{host}:{port} serves Fetch v{}..v{}, need v{FETCH_MIN_VERSION}..v{FETCH_VERSION}",
            fetch.min_version, fetch.max_version
        ));
    }
    drop(body);
    Ok(Connection {
        stream,
        version,
        correlation: 0,
        frames,
        inflight: None,
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A connected pair of loopback sockets.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_response_buffer_is_reused_once_its_bytes_are_dropped() {
        let (mut client, mut server) = pair();
        let frames = FrameBuffer::default();
        let big = vec![7u8; 100_000];
        let small = vec![9u8; 1_000];
        for body in [&big, &small, &small, &big] {
            server.write_all(&framed(body)).expect("write");
        }
        let first = read_frame(&mut client, &frames).expect("first");
        assert_eq!(first.as_ref(), big.as_slice());
        let first_ptr = first.as_ptr();
        // still held: the next response needs another buffer
        let second = read_frame(&mut client, &frames).expect("second");
        assert_eq!(second.as_ref(), small.as_slice());
        assert_ne!(second.as_ptr(), first_ptr);
        let slice = first.slice(10..20); // a decoded response keeps slices of the frame
        drop(first);
        drop(second); // the small buffer comes home
        let third = read_frame(&mut client, &frames).expect("third");
        assert_eq!(third.as_ref(), small.as_slice());
        assert_eq!(
            slice.as_ref(),
            &big[10..20],
            "a live slice is never written over"
        );
        drop(third);
        drop(slice); // the big one comes home (the last owner returns it)
        let fourth = read_frame(&mut client, &frames).expect("fourth");
        assert_eq!(fourth.as_ref(), big.as_slice());
        assert_eq!(fourth.as_ptr(), first_ptr);
    }

    #[test]
    fn a_short_response_is_an_error() {
        let (mut client, mut server) = pair();
        server.write_all(&[0, 0, 0, 10, 1, 2, 3]).expect("write");
        drop(server);
        let frames = FrameBuffer::default();
        assert!(read_frame(&mut client, &frames).is_err());
    }

    #[test]
    fn in_flight_requests_match_on_partitions_and_offsets_in_any_order() {
        let p = |topic: &str, partition, offset| PartitionRequest {
            topic: topic.into(),
            partition,
            offset,
        };
        let a = [p("t", 0, 5), p("t", 1, 9), p("u", 0, 1)];
        let b = [p("u", 0, 1), p("t", 0, 5), p("t", 1, 9)];
        assert!(same_partitions(&a, &b));
        assert!(!same_partitions(&a, &[p("t", 0, 5), p("t", 1, 9)]));
        assert!(!same_partitions(
            &a,
            &[p("t", 0, 5), p("t", 1, 8), p("u", 0, 1)]
        ));
    }
}
