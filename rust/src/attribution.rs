//! Which (target, version) served a request.
//!
//! The default access-log line has no version field, so the version is read from where
//! the mesh puts it (telemetry-formats.md §1.5):
//!
//! | rule | where | example |
//! |---|---|---|
//! | [`Rule::Field`] | an explicit field of the line or of the source | NDJSON `version`, nginx canary bracket |
//! | [`Rule::ClusterSubset`] | 3rd part of an *outbound* `upstream_cluster` | `outbound\|9080\|canary\|reviews.default.svc.cluster.local` |
//! | [`Rule::HostSuffix`] | Service-name suffix (Flagger's `-primary` / `-canary` Services) | `outbound\|9898\|\|podinfo-canary.test.svc.cluster.local` |
//! | [`Rule::SniSubset`] | mTLS SNI on the server side | `outbound_.9080_.canary_.reviews.default.svc.cluster.local` |
//! | [`Rule::HostMap`] | upstream host → version map, updated at run time (pod IPs) | `10.244.3.22:9080` → `canary` |
//! | [`Rule::Pod`] | the pod that wrote the log (file path), Flagger naming | `podinfo-primary-5d8f7c6b9d-x2x4z` → `primary` |
//!
//! The target is named `<service>.<namespace>` with the cluster domain and any version
//! suffix removed (`podinfo-canary.test.svc.cluster.local` → `podinfo.test`), so every
//! rule names the same target the same way. Rules are tried in order; the order can be
//! set per target. A line no rule attributes is rejected as
//! [`Reason::UnattributableVersion`] unless a default version is configured.

use std::collections::HashMap;

use crate::malformed::Reason;
use crate::record::Record;

/// One way of telling the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    Field,
    ClusterSubset,
    HostSuffix,
    SniSubset,
    HostMap,
    Pod,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::Field,
        Rule::ClusterSubset,
        Rule::HostSuffix,
        Rule::SniSubset,
        Rule::HostMap,
        Rule::Pod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Field => "field",
            Rule::ClusterSubset => "cluster_subset",
            Rule::HostSuffix => "host_suffix",
            Rule::SniSubset => "sni_subset",
            Rule::HostMap => "host_map",
            Rule::Pod => "pod",
        }
    }

    pub fn from_name(s: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.name() == s)
    }
}

/// Where a buffer of lines came from; fills in what the lines themselves do not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceContext {
    /// Pod that wrote the lines (from `/var/log/pods/<ns>_<pod>_<uid>/...`), for [`Rule::Pod`].
    pub pod: String,
    /// Namespace of that pod.
    pub namespace: String,
    /// Target for every line of this source (overrides what the line says).
    pub target: String,
    /// Version for every line of this source ([`Rule::Field`]).
    pub version: String,
}

/// Attribution settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Rules tried in order for targets without their own list.
    pub rules: Vec<Rule>,
    /// Per-target rule order, keyed by target name (`podinfo.test`).
    pub per_target: HashMap<String, Vec<Rule>>,
    /// Service-name suffix → version (longest suffix first is not needed: suffixes
    /// are matched on the whole `-suffix`).
    pub suffixes: Vec<(String, String)>,
    /// Cluster domain stripped from host names.
    pub cluster_domain: String,
    /// Version given to lines no rule attributes; `None` rejects them.
    pub default_version: Option<String>,
    /// For [`Rule::Pod`]: the version of a pod whose workload has no known suffix
    /// (Flagger's canary Deployment keeps the plain name; the primary is `<name>-primary`).
    pub pod_plain_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rules: vec![
                Rule::Field,
                Rule::ClusterSubset,
                Rule::HostSuffix,
                Rule::SniSubset,
                Rule::HostMap,
                Rule::Pod,
            ],
            per_target: HashMap::new(),
            suffixes: vec![
                ("-canary".into(), "canary".into()),
                ("-primary".into(), "primary".into()),
            ],
            cluster_domain: "svc.cluster.local".into(),
            default_version: None,
            pod_plain_version: "canary".into(),
        }
    }
}

/// The record fields a resolution looked at (bits below), from
/// [`Attributor::resolve_tracked`]: another record with the same values in these fields
/// resolves the same way under the same source context and host map (a field read and
/// found empty counts: it must be empty again). Callers cache resolutions on them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inputs(pub u8);

impl Inputs {
    pub const CLUSTER: u8 = 1;
    pub const SNI: u8 = 2;
    pub const AUTHORITY: u8 = 4;
    pub const UPSTREAM_HOST: u8 = 8;
    pub const TARGET: u8 = 16;
    pub const VERSION: u8 = 32;

    /// Whether any of `bits` was read.
    #[inline]
    pub fn has(self, bits: u8) -> bool {
        self.0 & bits != 0
    }
}

/// Resolves (target, version) for records. Holds the run-time host → version map.
#[derive(Debug, Clone)]
pub struct Attributor {
    cfg: Config,
    host_map: HashMap<String, String>,
    /// Bumped whenever the host map changes, so callers can cache resolutions.
    epoch: u64,
}

/// The parts of an Envoy cluster name `direction|port|subset|host`.
struct Cluster<'a> {
    outbound: bool,
    subset: &'a str,
    host: &'a str,
}

fn split_cluster(c: &str) -> Option<Cluster<'_>> {
    let mut it = c.splitn(4, '|');
    let dir = it.next()?;
    let _port = it.next()?;
    let subset = it.next()?;
    let host = it.next().unwrap_or("");
    Some(Cluster {
        outbound: dir == "outbound",
        subset,
        host,
    })
}

/// SNI `outbound_.9080_.canary_.reviews.default.svc.cluster.local` → (subset, host);
/// an empty subset is written `_`.
fn split_sni(sni: &str) -> Option<(&str, &str)> {
    let rest = sni.strip_prefix("outbound_.")?;
    let (_port, rest) = rest.split_once("_.")?;
    if let Some(host) = rest.strip_prefix("_.") {
        return Some(("", host));
    }
    let (subset, host) = rest.split_once("_.")?;
    Some((subset, host))
}

/// `name:port` → `name`; IPv6 `[::1]:80` is left as is apart from the port.
fn strip_port(h: &str) -> &str {
    match h.rfind(':') {
        Some(i) if !h[i + 1..].is_empty() && h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &h[..i]
        }
        _ => h,
    }
}

/// Flagger pod name `<workload>-<replicaset hash>-<pod hash>` → workload.
fn workload_of_pod(pod: &str) -> &str {
    let mut parts = pod.rsplitn(3, '-');
    let _pod_hash = parts.next();
    let _rs_hash = parts.next();
    parts.next().unwrap_or(pod)
}

impl Attributor {
    pub fn new(cfg: Config) -> Result<Self, String> {
        if cfg.rules.is_empty() {
            return Err("attribution.rules: at least one rule is needed".into());
        }
        for (t, rules) in &cfg.per_target {
            if rules.is_empty() {
                return Err(format!(
                    "attribution.per_target.{t}: at least one rule is needed"
                ));
            }
        }
        for (s, v) in &cfg.suffixes {
            if !s.starts_with('-') || s.len() < 2 || v.is_empty() {
                return Err(format!(
                    "attribution.suffixes: {s:?} must start with '-' and map to a non-empty version"
                ));
            }
        }
        Ok(Attributor {
            cfg,
            host_map: HashMap::new(),
            epoch: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Set the version of an upstream host (`ip` or `ip:port`); the controller feeds pod IPs.
    pub fn set_host(&mut self, host: &str, version: &str) {
        self.host_map.insert(host.to_string(), version.to_string());
        self.epoch += 1;
    }

    pub fn remove_host(&mut self, host: &str) -> bool {
        self.epoch += 1;
        self.host_map.remove(host).is_some()
    }

    /// Replace the whole host map.
    pub fn replace_hosts(&mut self, hosts: HashMap<String, String>) {
        self.host_map = hosts;
        self.epoch += 1;
    }

    /// Changes whenever a resolution may change (the host map was edited).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether [`Rule::HostMap`] can answer at all (the upstream host then matters).
    pub fn uses_upstream_host(&self) -> bool {
        !self.host_map.is_empty()
    }

    pub fn host_count(&self) -> usize {
        self.host_map.len()
    }

    /// Strip the cluster domain (`reviews.default.svc.cluster.local` → `reviews.default`).
    fn short_host<'h>(&self, host: &'h str) -> &'h str {
        let d = self.cfg.cluster_domain.as_str();
        if !d.is_empty() {
            if let Some(s) = host.strip_suffix(d) {
                if let Some(s) = s.strip_suffix('.') {
                    return s;
                }
            }
        }
        host
    }

    /// `podinfo-canary.test` → (`podinfo`, `.test`, Some("canary")).
    fn split_suffix<'h>(&self, short: &'h str) -> (&'h str, &'h str, Option<&str>) {
        let (name, rest) = match short.find('.') {
            Some(i) => (&short[..i], &short[i..]),
            None => (short, ""),
        };
        for (suffix, version) in &self.cfg.suffixes {
            if let Some(base) = name.strip_suffix(suffix.as_str()) {
                if !base.is_empty() {
                    return (base, rest, Some(version.as_str()));
                }
            }
        }
        (name, rest, None)
    }

    /// The host name the line says served it: outbound cluster host, else SNI host,
    /// else the authority without port.
    fn line_host<'a>(&self, rec: &Record<'a>, used: &mut Inputs) -> &'a str {
        used.0 |= Inputs::CLUSTER;
        if let Some(c) = split_cluster(rec.upstream_cluster) {
            if c.outbound && !c.host.is_empty() {
                return c.host;
            }
        }
        used.0 |= Inputs::SNI;
        if let Some((_, host)) = split_sni(rec.sni) {
            if !host.is_empty() {
                return host;
            }
        }
        used.0 |= Inputs::AUTHORITY;
        strip_port(rec.authority)
    }

    /// Resolve target and version into the caller's reusable buffers.
    pub fn resolve(
        &self,
        rec: &Record<'_>,
        ctx: &SourceContext,
        target: &mut String,
        version: &mut String,
    ) -> Result<(), Reason> {
        self.resolve_tracked(rec, ctx, target, version).map(|_| ())
    }

    /// [`Attributor::resolve`], also telling which record fields decided the answer.
    pub fn resolve_tracked(
        &self,
        rec: &Record<'_>,
        ctx: &SourceContext,
        target: &mut String,
        version: &mut String,
    ) -> Result<Inputs, Reason> {
        let mut used = Inputs::default();
        target.clear();
        version.clear();
        // Target: the source's, the pod's workload, the line's field, else its host.
        if !ctx.target.is_empty() {
            target.push_str(&ctx.target);
        } else if !ctx.pod.is_empty() {
            let (base, _, _) = self.split_suffix(workload_of_pod(&ctx.pod));
            target.push_str(base);
            if !ctx.namespace.is_empty() {
                target.push('.');
                target.push_str(&ctx.namespace);
            }
        } else {
            used.0 |= Inputs::TARGET;
            if !rec.target.is_empty() {
                target.push_str(rec.target);
            } else {
                let host = self.line_host(rec, &mut used);
                let (base, rest, _) = self.split_suffix(self.short_host(host));
                target.push_str(base);
                target.push_str(rest);
            }
        }
        if target.is_empty() {
            return Err(Reason::UnattributableVersion);
        }

        // Skip hashing the target on the hot path when no target has its own rules.
        let rules = if self.cfg.per_target.is_empty() {
            &self.cfg.rules
        } else {
            self.cfg
                .per_target
                .get(target.as_str())
                .unwrap_or(&self.cfg.rules)
        };
        for rule in rules {
            if let Some(v) = self.apply(*rule, rec, ctx, &mut used) {
                version.push_str(v);
                return Ok(used);
            }
        }
        match &self.cfg.default_version {
            Some(v) => {
                version.push_str(v);
                Ok(used)
            }
            None => Err(Reason::UnattributableVersion),
        }
    }

    fn apply<'s>(
        &'s self,
        rule: Rule,
        rec: &Record<'s>,
        ctx: &'s SourceContext,
        used: &mut Inputs,
    ) -> Option<&'s str> {
        let nonempty = |s: &'s str| if s.is_empty() { None } else { Some(s) };
        match rule {
            Rule::Field => {
                used.0 |= Inputs::VERSION;
                nonempty(rec.version).or_else(|| nonempty(&ctx.version))
            }
            Rule::ClusterSubset => {
                used.0 |= Inputs::CLUSTER;
                let c = split_cluster(rec.upstream_cluster)?;
                // Inbound clusters of old Istio put the port *name* in the subset slot.
                if c.outbound {
                    nonempty(c.subset)
                } else {
                    None
                }
            }
            Rule::HostSuffix => {
                let host = self.short_host(self.line_host(rec, used));
                self.split_suffix(host).2
            }
            Rule::SniSubset => {
                used.0 |= Inputs::SNI;
                split_sni(rec.sni).and_then(|(subset, _)| nonempty(subset))
            }
            Rule::HostMap => {
                // An empty map answers nothing whatever the line (a change bumps `epoch`).
                if self.host_map.is_empty() {
                    return None;
                }
                used.0 |= Inputs::UPSTREAM_HOST;
                if rec.upstream_host.is_empty() {
                    return None;
                }
                self.host_map
                    .get(rec.upstream_host)
                    .or_else(|| self.host_map.get(strip_port(rec.upstream_host)))
                    .map(String::as_str)
            }
            Rule::Pod => {
                if ctx.pod.is_empty() {
                    return None;
                }
                let workload = workload_of_pod(&ctx.pod);
                Some(
                    self.split_suffix(workload)
                        .2
                        .unwrap_or(self.cfg.pod_plain_version.as_str()),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        a: &Attributor,
        rec: &Record<'_>,
        ctx: &SourceContext,
    ) -> Result<(String, String), Reason> {
        let (mut t, mut v) = (String::new(), String::new());
        a.resolve(rec, ctx, &mut t, &mut v).map(|_| (t, v))
    }

    fn rec<'a>(cluster: &'a str, sni: &'a str, host: &'a str, authority: &'a str) -> Record<'a> {
        Record {
            upstream_cluster: cluster,
            sni,
            upstream_host: host,
            authority,
            ..Record::default()
        }
    }

    #[test]
    fn cluster_subset_and_host_suffix() {
        let a = Attributor::new(Config::default()).unwrap();
        let ctx = SourceContext::default();
        let r = rec(
            "outbound|9080|canary|reviews.default.svc.cluster.local",
            "",
            "",
            "",
        );
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("reviews.default".into(), "canary".into()))
        );
        let r = rec(
            "outbound|9898||podinfo-primary.test.svc.cluster.local",
            "",
            "",
            "",
        );
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("podinfo.test".into(), "primary".into()))
        );
        let r = rec("outbound|9898||podinfo.test.svc.cluster.local", "", "", "");
        assert_eq!(resolve(&a, &r, &ctx), Err(Reason::UnattributableVersion));
    }

    #[test]
    fn sni_on_inbound_side() {
        let a = Attributor::new(Config::default()).unwrap();
        let ctx = SourceContext::default();
        let r = rec(
            "inbound|9080||",
            "outbound_.9080_.canary_.reviews.default.svc.cluster.local",
            "",
            "",
        );
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("reviews.default".into(), "canary".into()))
        );
        // Old inbound naming puts the port name in the subset slot: not a version.
        let r = rec(
            "inbound|9080|http|reviews.default.svc.cluster.local",
            "outbound_.9080_._.reviews.default.svc.cluster.local",
            "",
            "",
        );
        assert_eq!(resolve(&a, &r, &ctx), Err(Reason::UnattributableVersion));
    }

    #[test]
    fn host_map_updates_at_run_time() {
        let mut a = Attributor::new(Config::default()).unwrap();
        let ctx = SourceContext::default();
        let r = rec(
            "outbound|80||web.prod.svc.cluster.local",
            "",
            "10.0.0.7:8080",
            "",
        );
        assert_eq!(resolve(&a, &r, &ctx), Err(Reason::UnattributableVersion));
        a.set_host("10.0.0.7", "canary");
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("web.prod".into(), "canary".into()))
        );
        a.set_host("10.0.0.7:8080", "primary");
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("web.prod".into(), "primary".into()))
        );
        assert!(a.remove_host("10.0.0.7:8080"));
    }

    #[test]
    fn pod_naming_and_fields() {
        let a = Attributor::new(Config::default()).unwrap();
        let ctx = SourceContext {
            pod: "podinfo-primary-5d8f7c6b9d-x2x4z".into(),
            namespace: "test".into(),
            ..SourceContext::default()
        };
        let r = rec("", "", "", "podinfo:9898");
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("podinfo.test".into(), "primary".into()))
        );
        let ctx = SourceContext {
            pod: "podinfo-7f9c8d6b5-abcde".into(),
            namespace: "test".into(),
            ..SourceContext::default()
        };
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("podinfo.test".into(), "canary".into()))
        );
        let r = Record {
            target: "default-myapp-80",
            version: "canary",
            ..Record::default()
        };
        assert_eq!(
            resolve(&a, &r, &SourceContext::default()),
            Ok(("default-myapp-80".into(), "canary".into()))
        );
    }

    #[test]
    fn per_target_rules_and_default_version() {
        let mut cfg = Config::default();
        cfg.per_target
            .insert("reviews.default".into(), vec![Rule::SniSubset]);
        cfg.default_version = Some("unknown".into());
        let a = Attributor::new(cfg).unwrap();
        let ctx = SourceContext::default();
        // The cluster says canary but this target only trusts SNI, which has no subset.
        let r = rec(
            "outbound|9080|canary|reviews.default.svc.cluster.local",
            "",
            "",
            "",
        );
        assert_eq!(
            resolve(&a, &r, &ctx),
            Ok(("reviews.default".into(), "unknown".into()))
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        let cfg = Config {
            rules: vec![],
            ..Config::default()
        };
        assert!(Attributor::new(cfg)
            .unwrap_err()
            .contains("attribution.rules"));
    }

    /// Values each record field takes in the property test (empty = absent).
    const CLUSTERS: [&str; 5] = [
        "",
        "outbound|9080|canary|reviews.default.svc.cluster.local",
        "outbound|9898||podinfo-primary.test.svc.cluster.local",
        "inbound|9080|http|reviews.default.svc.cluster.local",
        "outbound|9898||podinfo.test.svc.cluster.local",
    ];
    const SNIS: [&str; 3] = [
        "",
        "outbound_.9080_.primary_.reviews.default.svc.cluster.local",
        "outbound_.9898_._.podinfo-canary.test.svc.cluster.local",
    ];
    const HOSTS: [&str; 3] = ["", "10.0.0.7:8080", "10.0.0.8:8080"];
    const AUTHORITIES: [&str; 3] = ["", "podinfo-canary:9898", "reviews.default:9080"];
    const TARGETS: [&str; 2] = ["", "shop.prod"];
    const VERSIONS: [&str; 2] = ["", "v2"];

    fn pick<'a>(values: &[&'a str], i: u8) -> &'a str {
        values[i as usize % values.len()]
    }

    proptest::proptest! {
        /// A record that agrees with another on the fields `resolve_tracked` reports
        /// resolves the same way, whatever its other fields (what the key cache relies on).
        #[test]
        fn fields_not_read_do_not_change_the_answer(
            a in proptest::array::uniform6(0u8..8),
            b in proptest::array::uniform6(0u8..8),
            rules in proptest::sample::subsequence(Rule::ALL.to_vec(), 1..=6),
            ctx_kind in 0u8..4,
            with_hosts: bool,
            with_default: bool,
        ) {
            let cfg = Config {
                rules,
                default_version: with_default.then(|| "unknown".to_string()),
                ..Config::default()
            };
            let mut attributor = Attributor::new(cfg).unwrap();
            if with_hosts {
                attributor.set_host("10.0.0.7:8080", "canary");
            }
            let ctx = SourceContext {
                pod: if ctx_kind == 1 { "podinfo-primary-5d8f7c6b9d-x2x4z".into() } else { String::new() },
                namespace: if ctx_kind == 1 { "test".into() } else { String::new() },
                target: if ctx_kind == 2 { "pinned.ns".into() } else { String::new() },
                version: if ctx_kind == 3 { "ctxv".into() } else { String::new() },
            };
            let make = |v: [u8; 6]| Record {
                upstream_cluster: pick(&CLUSTERS, v[0]),
                sni: pick(&SNIS, v[1]),
                upstream_host: pick(&HOSTS, v[2]),
                authority: pick(&AUTHORITIES, v[3]),
                target: pick(&TARGETS, v[4]),
                version: pick(&VERSIONS, v[5]),
                ..Record::default()
            };
            let first = make(a);
            let (mut t1, mut v1) = (String::new(), String::new());
            let Ok(used) = attributor.resolve_tracked(&first, &ctx, &mut t1, &mut v1) else {
                return Ok(());
            };
            // Same values in the fields read, `b`'s values elsewhere.
            let mut mixed = make(b);
            if used.has(Inputs::CLUSTER) { mixed.upstream_cluster = first.upstream_cluster; }
            if used.has(Inputs::SNI) { mixed.sni = first.sni; }
            if used.has(Inputs::UPSTREAM_HOST) { mixed.upstream_host = first.upstream_host; }
            if used.has(Inputs::AUTHORITY) { mixed.authority = first.authority; }
            if used.has(Inputs::TARGET) { mixed.target = first.target; }
            if used.has(Inputs::VERSION) { mixed.version = first.version; }
            let (mut t2, mut v2) = (String::new(), String::new());
            let second = attributor.resolve_tracked(&mixed, &ctx, &mut t2, &mut v2);
            proptest::prop_assert!(second.is_ok(), "{mixed:?} after {first:?}: {second:?}");
            proptest::prop_assert_eq!((t1, v1), (t2, v2));
        }
    }
}
