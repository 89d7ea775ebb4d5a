//! Server-side request forgery (SSRF) guard for outbound webhooks.
//!
//! A webhook URL is chosen by a tenant, so without a guard it could point the
//! sender at the loopback interface, the private network or a cloud metadata
//! endpoint. The guard has four layers, and all of them are needed:
//!
//! 1. [`SsrfPolicy::check_url`]: the scheme must be `http` or `https`, and a
//!    host written as an IP literal is judged by [`SsrfPolicy::check_ip`].
//!    reqwest never hands an IP-literal host to the DNS resolver, so this is
//!    the *only* check such URLs get. [`GuardedClient`] runs it for every
//!    request, so it cannot be forgotten.
//! 2. [`GuardedResolver`]: host names are resolved by us and only the
//!    addresses the policy allows are given back to reqwest. reqwest connects
//!    to exactly those addresses, so a name that resolves differently on a
//!    second lookup (DNS rebinding) cannot slip a private address in between
//!    the check and the connect.
//! 3. [`redirect_policy`]: every redirect target is run through `check_url`,
//!    must stay on the first request's host (so the endpoint's own headers never
//!    follow a redirect elsewhere), and the chain is capped.
//! 4. [`client`]: builds the reqwest client with the resolver, the redirect
//!    policy, no proxies (an environment proxy would resolve and connect on
//!    our behalf, bypassing the resolver), no `Referer` header, and connect
//!    and total timeouts.
//!
//! A request that failed because of the guard can be told apart from one that
//! failed to connect with [`refusal_of`]. Note that reqwest reports a resolver
//! refusal as a *connect* error (`is_connect()` is true), so check
//! `refusal_of` first.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Url, redirect};

/// The error type reqwest expects from a resolver.
type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a destination was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// RFC 1918 space, carrier-grade NAT (`100.64.0.0/10`), IPv6 unique local
    /// (`fc00::/7`), deprecated site-local (`fec0::/10`) or local-use NAT64.
    Private,
    /// `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
    /// A well-known cloud instance-metadata endpoint such as `169.254.169.254`.
    CloudMetadata,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// Special-purpose space that is never a legitimate webhook target:
    /// "this network", documentation, benchmarking, IETF protocol
    /// assignments, `240.0.0.0/4`, broadcast, the IPv6 discard prefix.
    Reserved,
    /// The URL scheme is not `http` or `https`.
    Scheme,
    /// The URL has no host.
    MissingHost,
    /// The host name resolved to no address at all.
    NoAddress,
    /// The redirect chain is longer than the configured maximum.
    TooManyRedirects,
    /// A redirect leads to another host than the request's. Not followed, so headers meant
    /// for the endpoint (its custom `Authorization`, say) never reach anyone else.
    CrossHost,
}

impl fmt::Display for Category {
    /// The predicate of the refusal sentence, e.g. "is a loopback address".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "is a loopback address",
            Self::Private => "is a private address",
            Self::LinkLocal => "is a link-local address",
            Self::CloudMetadata => "is a cloud metadata address",
            Self::Multicast => "is a multicast address",
            Self::Unspecified => "is an unspecified address",
            Self::Reserved => "is a reserved address",
            Self::Scheme => "does not use http or https",
            Self::MissingHost => "has no host",
            Self::NoAddress => "resolved to no address",
            Self::TooManyRedirects => "exceeds the redirect limit",
            Self::CrossHost => "is on another host than the request (not followed)",
        })
    }
}

/// What a [`Refusal`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// An IP address, from a URL literal, a DNS answer or a redirect.
    Ip {
        /// The address that was refused.
        addr: IpAddr,
        /// For an IPv6 address that embeds an IPv4 address (mapped,
        /// compatible, NAT64, 6to4), the embedded address when it is the
        /// reason for the refusal.
        embedded: Option<Ipv4Addr>,
    },
    /// A host name (used for [`Category::NoAddress`]).
    Host(String),
    /// A whole URL (used for scheme, missing-host and redirect-limit refusals).
    Url(Url),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip {
                addr,
                embedded: None,
            } => write!(f, "{addr}"),
            Self::Ip {
                addr,
                embedded: Some(v4),
            } => write!(f, "{addr} (embedding {v4})"),
            Self::Host(host) => f.write_str(host),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

/// A destination refused by the SSRF guard.
///
/// Displays as a lowercase sentence such as
/// `refused: 127.0.0.1 is a loopback address`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused: {subject} {category}")]
pub struct Refusal {
    subject: Subject,
    category: Category,
}

impl Refusal {
    fn new(category: Category, subject: Subject) -> Self {
        Self { subject, category }
    }

    fn ip(addr: IpAddr, category: Category, embedded: Option<Ipv4Addr>) -> Self {
        Self::new(category, Subject::Ip { addr, embedded })
    }

    /// Why the destination was refused.
    pub fn category(&self) -> Category {
        self.category
    }

    /// What was refused.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The refused IP address, if the refusal is about one.
    pub fn ip_addr(&self) -> Option<IpAddr> {
        match self.subject {
            Subject::Ip { addr, .. } => Some(addr),
            _ => None,
        }
    }
}

/// Well-known cloud metadata endpoints. They all sit inside ranges that are
/// refused anyway; listing them gives the refusal a more telling category.
const METADATA_V4: [Ipv4Addr; 4] = [
    // AWS, GCP, Azure, OCI, DigitalOcean, OpenStack, ...
    Ipv4Addr::new(169, 254, 169, 254),
    // AWS ECS task metadata / credentials.
    Ipv4Addr::new(169, 254, 170, 2),
    // Alibaba Cloud.
    Ipv4Addr::new(100, 100, 100, 200),
    // Oracle Cloud (legacy).
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS instance metadata over IPv6 (`fd00:ec2::254`).
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Refused IPv4 space. The first matching entry decides the category, so
/// more specific entries come first.
const REFUSED_V4: &[(Ipv4Net, Category)] = &[
    (v4(255, 255, 255, 255, 32), Category::Reserved), // limited broadcast
    (v4(0, 0, 0, 0, 32), Category::Unspecified),
    (v4(0, 0, 0, 0, 8), Category::Reserved), // "this network"
    (v4(127, 0, 0, 0, 8), Category::Loopback),
    (v4(10, 0, 0, 0, 8), Category::Private),
    (v4(172, 16, 0, 0, 12), Category::Private),
    (v4(192, 168, 0, 0, 16), Category::Private),
    (v4(100, 64, 0, 0, 10), Category::Private), // carrier-grade NAT
    (v4(169, 254, 0, 0, 16), Category::LinkLocal),
    (v4(224, 0, 0, 0, 4), Category::Multicast),
    (v4(192, 0, 0, 0, 24), Category::Reserved), // IETF protocol assignments
    (v4(192, 0, 2, 0, 24), Category::Reserved), // TEST-NET-1
    (v4(192, 88, 99, 0, 24), Category::Reserved), // deprecated 6to4 relay anycast
    (v4(198, 18, 0, 0, 15), Category::Reserved), // benchmarking
    (v4(198, 51, 100, 0, 24), Category::Reserved), // TEST-NET-2
    (v4(203, 0, 113, 0, 24), Category::Reserved), // TEST-NET-3
    (v4(240, 0, 0, 0, 4), Category::Reserved),  // future use
];

/// Refused IPv6 space (first match wins). Prefixes that embed an IPv4
/// address are handled by [`embedded_v4`], not here.
const REFUSED_V6: &[(Ipv6Net, Category)] = &[
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 128), Category::Unspecified),
    (v6(0, 0, 0, 0, 0, 0, 0, 1, 128), Category::Loopback),
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), Category::Private), // unique local
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), Category::Private), // deprecated site-local
    (v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48), Category::Private), // local-use NAT64
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), Category::LinkLocal),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), Category::Multicast),
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), Category::Reserved), // discard-only
    (v6(0x2001, 0x2, 0, 0, 0, 0, 0, 0, 48), Category::Reserved), // benchmarking
    (v6(0x2001, 0x10, 0, 0, 0, 0, 0, 0, 28), Category::Reserved), // deprecated ORCHID
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), Category::Reserved), // documentation
    (v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), Category::Reserved), // documentation
];

/// The category of an IPv4 address, or `None` if it is public.
fn classify_v4(ip: Ipv4Addr) -> Option<Category> {
    if METADATA_V4.contains(&ip) {
        return Some(Category::CloudMetadata);
    }
    REFUSED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, category)| category)
}

/// The category of an IPv6 address by its own prefix, or `None`. Does not
/// look at an embedded IPv4 address.
fn classify_v6(ip: Ipv6Addr) -> Option<Category> {
    if METADATA_V6.contains(&ip) {
        return Some(Category::CloudMetadata);
    }
    REFUSED_V6
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, category)| category)
}

/// The IPv4 address an IPv6 address carries, for the formats that a host or
/// a translator on the path would turn into an IPv4 connection.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low32),
        // IPv4-translated ::ffff:0:a.b.c.d (SIIT)
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low32),
        // IPv4-compatible ::a.b.c.d (deprecated; `::` and `::1` are
        // classified as IPv6 before this is consulted)
        [0, 0, 0, 0, 0, 0, _, _] => Some(low32),
        // NAT64 well-known prefix 64:ff9b::a.b.c.d
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low32),
        // 6to4 2002:aabb:ccdd::/48
        [0x2002, _, _, _, _, _, _, _] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Which destinations outbound requests may reach.
///
/// The default refuses everything but public unicast space. Operators can
/// allow-list subnets (e.g. `127.0.0.1/32` in tests, or an internal relay);
/// an allow-listed subnet wins over every refusal category.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    /// Subnets that are allowed even though they are in refused space.
    pub allow: Vec<IpNet>,
}

impl SsrfPolicy {
    fn is_allow_listed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Judges one IP address.
    ///
    /// An IPv6 address that embeds an IPv4 address (mapped, compatible,
    /// NAT64, 6to4) is judged by its own prefix first and then by the
    /// embedded address, which is also matched against the allow-list: so
    /// allowing `127.0.0.1/32` allows `::ffff:127.0.0.1` too.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.is_allow_listed(ip) {
            return Ok(());
        }
        match ip {
            IpAddr::V4(v4) => match classify_v4(v4) {
                Some(category) => Err(Refusal::ip(ip, category, None)),
                None => Ok(()),
            },
            IpAddr::V6(v6) => {
                if let Some(category) = classify_v6(v6) {
                    return Err(Refusal::ip(ip, category, None));
                }
                let Some(inner) = embedded_v4(v6) else {
                    return Ok(());
                };
                if self.is_allow_listed(IpAddr::V4(inner)) {
                    return Ok(());
                }
                match classify_v4(inner) {
                    Some(category) => Err(Refusal::ip(ip, category, Some(inner))),
                    None => Ok(()),
                }
            }
        }
    }

    /// Judges a URL before any connection is made.
    ///
    /// The scheme must be `http` or `https`. A host written as an IP literal
    /// is judged by [`check_ip`](Self::check_ip); reqwest does not pass such
    /// hosts to the resolver, so this is their only check. A host name passes
    /// here: [`GuardedResolver`] judges what it resolves to.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::new(Category::Scheme, Subject::Url(url.clone())));
        }
        let Some(host) = url.host_str() else {
            return Err(Refusal::new(
                Category::MissingHost,
                Subject::Url(url.clone()),
            ));
        };
        // The url crate has already normalised every IPv4 spelling
        // (`0x7f.1`, `2130706433`, ...) to dotted decimal and brackets IPv6.
        let literal = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        };
        match literal {
            Some(ip) => self.check_ip(ip),
            None => Ok(()),
        }
    }
}

/// A reqwest DNS resolver that only returns addresses the policy allows.
///
/// Names can be pinned to fixed addresses with
/// [`with_static`](Self::with_static); those bypass DNS but are still judged
/// by the policy (useful for tests and for operator-configured overrides).
#[derive(Clone, Debug, Default)]
pub struct GuardedResolver {
    policy: Arc<SsrfPolicy>,
    statics: Arc<HashMap<String, Vec<IpAddr>>>,
}

/// Lowercase and drop a trailing dot, so `Hooks.Example.` and
/// `hooks.example` share a static entry.
fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl GuardedResolver {
    /// A resolver enforcing `policy`, using the system resolver.
    pub fn new(policy: SsrfPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            statics: Arc::default(),
        }
    }

    /// Resolves `name` to `addrs` instead of asking DNS. The addresses are
    /// still filtered by the policy.
    #[must_use]
    pub fn with_static(
        mut self,
        name: impl AsRef<str>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        Arc::make_mut(&mut self.statics)
            .insert(normalize_name(name.as_ref()), addrs.into_iter().collect());
        self
    }

    /// The policy this resolver enforces.
    pub fn policy(&self) -> &SsrfPolicy {
        &self.policy
    }

    /// Resolves `host` and keeps the allowed addresses. Fails with an
    /// `io::Error` if resolution fails, or with a boxed [`Refusal`] if no
    /// allowed address is left.
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, BoxError> {
        let candidates: Vec<IpAddr> = match self.statics.get(&normalize_name(host)) {
            Some(addrs) => addrs.clone(),
            None => tokio::net::lookup_host((host, 0))
                .await?
                .map(|sa| sa.ip())
                .collect(),
        };
        Ok(self.admit(host, candidates)?)
    }

    /// Keeps the allowed addresses (deduplicated, in order). With none left,
    /// returns the refusal of the first candidate, or `NoAddress`.
    fn admit(&self, host: &str, candidates: Vec<IpAddr>) -> Result<Vec<IpAddr>, Refusal> {
        let mut allowed: Vec<IpAddr> = Vec::with_capacity(candidates.len());
        let mut first_refusal = None;
        for ip in candidates {
            match self.policy.check_ip(ip) {
                Ok(()) if !allowed.contains(&ip) => allowed.push(ip),
                Ok(()) => {}
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        if allowed.is_empty() {
            Err(first_refusal.unwrap_or_else(|| {
                Refusal::new(Category::NoAddress, Subject::Host(host.to_owned()))
            }))
        } else {
            Ok(allowed)
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.lookup(name.as_str()).await?;
            // Port 0 is replaced by reqwest with the URL's (or scheme's) port.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A redirect policy that follows at most `max` redirects and refuses (with
/// an error, rather than silently stopping) any redirect whose URL fails
/// [`SsrfPolicy::check_url`]. Named redirect targets are judged again by the
/// client's [`GuardedResolver`] when they are connected to.
pub fn redirect_policy(policy: SsrfPolicy, max: usize) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous()` holds the original URL and every URL redirected from
        // so far, so its length is the number of this redirect (1-based).
        if attempt.previous().len() > max {
            let refusal = Refusal::new(
                Category::TooManyRedirects,
                Subject::Url(attempt.url().clone()),
            );
            return attempt.error(refusal);
        }
        if let Err(refusal) = policy.check_url(attempt.url()) {
            return attempt.error(refusal);
        }
        // reqwest strips only its own sensitive headers on a cross-host redirect; ours (the
        // endpoint's custom headers) would follow, so the chain stays on the first host.
        let first_host = attempt
            .previous()
            .first()
            .and_then(|u| u.host_str())
            .map(str::to_ascii_lowercase);
        let host = attempt.url().host_str().map(str::to_ascii_lowercase);
        if first_host != host {
            let refusal = Refusal::new(Category::CrossHost, Subject::Url(attempt.url().clone()));
            return attempt.error(refusal);
        }
        attempt.follow()
    })
}

/// Settings for [`client`] and [`GuardedClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit for establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit for the whole request, from connect to the end of the body.
    pub timeout: Duration,
    /// `User-Agent` header value.
    pub user_agent: String,
    /// Most redirects followed in one request; `0` follows none.
    pub max_redirects: usize,
    /// Most idle pooled connections kept per host.
    pub pool_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            user_agent: concat!("wedsync-delivery/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_redirects: 3,
            pool_idle_per_host: 4,
        }
    }
}

/// Builds a reqwest client whose resolver is `resolver`.
fn build_client(
    resolver: GuardedResolver,
    opts: ClientOptions,
) -> reqwest::Result<reqwest::Client> {
    let policy = resolver.policy().clone();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(resolver))
        .redirect(redirect_policy(policy, opts.max_redirects))
        // A proxy would resolve and connect on our behalf, so the resolver
        // would never see the target. This also ignores HTTP(S)_PROXY.
        .no_proxy()
        // Don't leak the original URL (it may carry a secret) to a
        // redirect target.
        .referer(false)
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout)
        .user_agent(opts.user_agent)
        .pool_max_idle_per_host(opts.pool_idle_per_host)
        .build()
}

/// Builds a reqwest client that enforces `policy` on DNS answers and
/// redirects.
///
/// **The returned client does not check the initial URL.** reqwest does not
/// consult the resolver for IP-literal hosts, so `http://127.0.0.1/` would be
/// reached. Call [`SsrfPolicy::check_url`] before every request, or use
/// [`GuardedClient`], which does.
pub fn client(policy: &SsrfPolicy, opts: ClientOptions) -> reqwest::Result<reqwest::Client> {
    build_client(GuardedResolver::new(policy.clone()), opts)
}

/// An HTTP client that checks every request URL before building the request,
/// on top of the guarded resolver and redirect policy of [`client`].
///
/// Requests can only be started through it with a checked URL, so the
/// IP-literal check cannot be forgotten.
#[derive(Clone, Debug)]
pub struct GuardedClient {
    inner: reqwest::Client,
    policy: SsrfPolicy,
}

impl GuardedClient {
    /// A client enforcing `policy` with the system resolver.
    pub fn new(policy: SsrfPolicy, opts: ClientOptions) -> reqwest::Result<Self> {
        Self::with_resolver(GuardedResolver::new(policy), opts)
    }

    /// A client using `resolver` (and its policy), e.g. one with static
    /// entries.
    pub fn with_resolver(resolver: GuardedResolver, opts: ClientOptions) -> reqwest::Result<Self> {
        let policy = resolver.policy().clone();
        Ok(Self {
            inner: build_client(resolver, opts)?,
            policy,
        })
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &SsrfPolicy {
        &self.policy
    }

    /// Starts a request after checking `url` with [`SsrfPolicy::check_url`].
    pub fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, Refusal> {
        self.policy.check_url(&url)?;
        Ok(self.inner.request(method, url))
    }

    /// Starts a `POST` request after checking `url`.
    pub fn post(&self, url: Url) -> Result<RequestBuilder, Refusal> {
        self.request(Method::POST, url)
    }

    /// Starts a `GET` request after checking `url`.
    pub fn get(&self, url: Url) -> Result<RequestBuilder, Refusal> {
        self.request(Method::GET, url)
    }
}

/// The guard's [`Refusal`] behind a failed request, if the guard caused it.
///
/// reqwest wraps a resolver error as `reqwest::Error` → hyper-util client
/// error → hyper-util `ConnectError` → our boxed `Refusal`, and a redirect
/// policy error as a `reqwest::Error` of kind redirect around it, so this
/// walks the whole `source()` chain.
pub fn refusal_of(err: &reqwest::Error) -> Option<&Refusal> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::{TcpListener, TcpStream};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP literal")
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn loopback_allowed() -> SsrfPolicy {
        SsrfPolicy {
            allow: vec!["127.0.0.1/32".parse().expect("net")],
        }
    }

    fn category_of(policy: &SsrfPolicy, addr: &str) -> Option<Category> {
        policy.check_ip(ip(addr)).err().map(|r| r.category())
    }

    // ---- check_ip -------------------------------------------------------

    #[test]
    fn refuses_each_ipv4_category() {
        use Category::*;
        let policy = SsrfPolicy::default();
        let cases = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("100.64.0.1", Private),
            ("100.127.255.254", Private),
            ("100.100.100.200", CloudMetadata),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.254", CloudMetadata),
            ("169.254.170.2", CloudMetadata),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.0.0.8", Reserved),
            ("192.0.0.192", CloudMetadata),
            ("192.0.2.1", Reserved),
            ("192.168.1.1", Private),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("198.51.100.7", Reserved),
            ("203.0.113.9", Reserved),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Reserved),
        ];
        for (addr, want) in cases {
            assert_eq!(category_of(&policy, addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn refuses_each_ipv6_category() {
        use Category::*;
        let policy = SsrfPolicy::default();
        let cases = [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fd00:ec2::254", CloudMetadata),
            ("fec0::1", Private),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("ff02::1", Multicast),
            ("ff05::2", Multicast),
            ("2001:db8::1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b:1::a", Private),
        ];
        for (addr, want) in cases {
            assert_eq!(category_of(&policy, addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn judges_ipv6_by_embedded_ipv4() {
        use Category::*;
        let policy = SsrfPolicy::default();
        let cases = [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", CloudMetadata),
            ("::ffff:0:10.0.0.1", Private),
            ("::10.0.0.1", Private),
            ("::127.0.0.1", Loopback),
            ("64:ff9b::a00:1", Private),
            ("64:ff9b::7f00:1", Loopback),
            ("2002:a00:1::", Private),
            ("2002:a9fe:a9fe::1", CloudMetadata),
            ("2002:7f00:1:5::9", Loopback),
        ];
        for (addr, want) in cases {
            assert_eq!(category_of(&policy, addr), Some(want), "{addr}");
        }
        // Embedded public addresses are fine.
        for addr in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(category_of(&policy, addr), None, "{addr}");
        }
    }

    #[test]
    fn refusal_names_the_embedded_address() {
        let refusal = SsrfPolicy::default()
            .check_ip(ip("64:ff9b::a00:1"))
            .expect_err("refused");
        assert_eq!(
            refusal.subject(),
            &Subject::Ip {
                addr: ip("64:ff9b::a00:1"),
                embedded: Some(Ipv4Addr::new(10, 0, 0, 1)),
            }
        );
        assert_eq!(
            refusal.to_string(),
            "refused: 64:ff9b::a00:1 (embedding 10.0.0.1) is a private address"
        );
    }

    #[test]
    fn allows_public_addresses() {
        let policy = SsrfPolicy::default();
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            assert_eq!(policy.check_ip(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn display_is_a_lowercase_sentence() {
        let policy = SsrfPolicy::default();
        let text = |addr: &str| policy.check_ip(ip(addr)).expect_err("refused").to_string();
        assert_eq!(
            text("127.0.0.1"),
            "refused: 127.0.0.1 is a loopback address"
        );
        assert_eq!(
            text("169.254.169.254"),
            "refused: 169.254.169.254 is a cloud metadata address"
        );
        assert_eq!(text("::"), "refused: :: is an unspecified address");
    }

    #[test]
    fn allow_list_covers_mapped_form_but_not_neighbours() {
        let policy = loopback_allowed();
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(category_of(&policy, "127.0.0.2"), Some(Category::Loopback));
        assert_eq!(
            category_of(&policy, "::ffff:127.0.0.2"),
            Some(Category::Loopback)
        );
        // ::1 is IPv6 loopback, not 127.0.0.1.
        assert_eq!(category_of(&policy, "::1"), Some(Category::Loopback));
        assert_eq!(category_of(&policy, "10.0.0.1"), Some(Category::Private));
    }

    #[test]
    fn allow_list_wins_over_metadata_and_ipv6() {
        let policy = SsrfPolicy {
            allow: vec![
                "169.254.0.0/16".parse().expect("net"),
                "fd00::/8".parse().expect("net"),
            ],
        };
        assert_eq!(policy.check_ip(ip("169.254.169.254")), Ok(()));
        assert_eq!(policy.check_ip(ip("fd00:ec2::254")), Ok(()));
        assert_eq!(category_of(&policy, "fc00::1"), Some(Category::Private));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn verdict(policy: &SsrfPolicy, ip: IpAddr) -> Option<Category> {
            policy.check_ip(ip).err().map(|r| r.category())
        }

        proptest! {
            #[test]
            fn embedded_forms_share_the_ipv4_verdict(bits in any::<u32>()) {
                let v4 = Ipv4Addr::from(bits);
                let policy = SsrfPolicy::default();
                let want = verdict(&policy, IpAddr::V4(v4));
                let [a, b, c, d] = v4.octets();
                let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0,
                    u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                let six_to_four = Ipv6Addr::new(0x2002,
                    u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1);
                for v6 in [v4.to_ipv6_mapped(), nat64, six_to_four] {
                    prop_assert_eq!(verdict(&policy, IpAddr::V6(v6)), want, "{}", v6);
                }
            }

            #[test]
            fn allow_listed_is_always_allowed(bits in any::<u32>(), len in 0u8..=32) {
                let addr = Ipv4Addr::from(bits);
                let net = Ipv4Net::new(addr, len).expect("valid prefix").trunc();
                let policy = SsrfPolicy { allow: vec![IpNet::V4(net)] };
                prop_assert_eq!(policy.check_ip(IpAddr::V4(addr)), Ok(()));
                prop_assert_eq!(policy.check_ip(IpAddr::V6(addr.to_ipv6_mapped())), Ok(()));
            }
        }
    }

    // ---- check_url ------------------------------------------------------

    #[test]
    fn check_url_schemes() {
        let policy = SsrfPolicy::default();
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "gopher://example.com/",
            "data:text/plain,hi",
        ] {
            let refusal = policy.check_url(&url(bad)).expect_err(bad);
            assert_eq!(refusal.category(), Category::Scheme, "{bad}");
        }
        assert_eq!(policy.check_url(&url("https://example.com/hook")), Ok(()));
        assert_eq!(policy.check_url(&url("http://example.com:8080/")), Ok(()));
        // Names are left to the resolver.
        assert_eq!(policy.check_url(&url("http://localhost/")), Ok(()));
    }

    #[test]
    fn check_url_judges_ip_literals_in_every_spelling() {
        let policy = SsrfPolicy::default();
        let cases = [
            ("http://127.0.0.1:8080/", Category::Loopback),
            ("http://2130706433/", Category::Loopback),
            ("http://0x7f.1/", Category::Loopback),
            ("http://017700000001/", Category::Loopback),
            ("http://127.0.0.1./", Category::Loopback),
            ("https://[::1]/", Category::Loopback),
            ("https://[::ffff:7f00:1]/", Category::Loopback),
            ("http://[::ffff:10.0.0.1]/", Category::Private),
            (
                "http://169.254.169.254/latest/meta-data/",
                Category::CloudMetadata,
            ),
            ("http://[fd00:ec2::254]/", Category::CloudMetadata),
            ("http://0.0.0.0/", Category::Unspecified),
            ("http://[fe80::1]/", Category::LinkLocal),
        ];
        for (u, want) in cases {
            let refusal = policy.check_url(&url(u)).expect_err(u);
            assert_eq!(refusal.category(), want, "{u}");
        }
        assert_eq!(policy.check_url(&url("http://8.8.8.8/")), Ok(()));
        assert_eq!(policy.check_url(&url("http://[2606:4700::1111]/")), Ok(()));
    }

    // ---- resolver (no HTTP) ---------------------------------------------

    #[tokio::test]
    async fn resolver_filters_and_reports() {
        let resolver = GuardedResolver::new(loopback_allowed())
            .with_static(
                "mixed.test",
                [ip("10.0.0.5"), ip("127.0.0.1"), ip("127.0.0.1")],
            )
            .with_static("Private.Test.", [ip("10.0.0.5"), ip("169.254.169.254")])
            .with_static("empty.test", []);
        assert_eq!(
            resolver.lookup("mixed.test").await.expect("allowed"),
            vec![ip("127.0.0.1")]
        );
        let err = resolver.lookup("private.test").await.expect_err("refused");
        let refusal = err.downcast_ref::<Refusal>().expect("a Refusal");
        assert_eq!(refusal.category(), Category::Private);
        let err = resolver.lookup("empty.test").await.expect_err("refused");
        let refusal = err.downcast_ref::<Refusal>().expect("a Refusal");
        assert_eq!(refusal.category(), Category::NoAddress);
        assert_eq!(
            refusal.to_string(),
            "refused: empty.test resolved to no address"
        );
    }

    // ---- tiny HTTP/1.1 server on loopback --------------------------------

    type Route = dyn Fn(&str, u16) -> String + Send + Sync;

    fn respond(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut out = format!("HTTP/1.1 {status}\r\n");
        for (name, value) in headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        out
    }

    fn found(location: &str) -> String {
        respond("302 Found", &[("Location", location)], "")
    }

    /// Reads the request head (and a `Content-Length` body) from `stream`.
    async fn read_request(stream: &TcpStream) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        let mut need: Option<usize> = None;
        loop {
            if let Some(total) = need {
                if buf.len() >= total {
                    break;
                }
            } else if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let body_len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                need = Some(end + 4 + body_len);
                continue;
            }
            if buf.len() > 64 * 1024 {
                break;
            }
            stream.readable().await?;
            match stream.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            stream.writable().await?;
            match stream.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    struct Server {
        port: u16,
        hits: Arc<AtomicUsize>,
    }

    impl Server {
        fn url(&self, path: &str) -> Url {
            url(&format!("http://127.0.0.1:{}{path}", self.port))
        }
    }

    /// Serves `route(path, port)` on 127.0.0.1 until the test's runtime ends.
    async fn serve(route: impl Fn(&str, u16) -> String + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let route: Arc<Route> = Arc::new(route);
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let route = Arc::clone(&route);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(request) = read_request(&stream).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let response = route(&path, port);
                    let _ = write_all(&stream, response.as_bytes()).await;
                });
            }
        });
        Server { port, hits }
    }

    fn test_opts() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        }
    }

    fn ok_route(path: &str, port: u16) -> String {
        match path {
            "/ok" => respond("200 OK", &[], "hello"),
            "/to-self" => found("/ok"),
            "/to-self-absolute" => found(&format!("http://127.0.0.1:{port}/ok")),
            "/to-private" => found("http://10.0.0.1/x"),
            "/to-metadata" => found("http://169.254.169.254/latest"),
            "/to-mapped" => found("http://[::ffff:10.0.0.1]/"),
            "/to-ftp" => found("ftp://127.0.0.1/"),
            "/to-evil-name" => found(&format!("http://evil.test:{port}/ok")),
            "/to-good-name" => found(&format!("http://hooks.test:{port}/ok")),
            p => match p
                .strip_prefix("/chain/")
                .and_then(|n| n.parse::<u32>().ok())
            {
                Some(0) => respond("200 OK", &[], "end of chain"),
                Some(n) => found(&format!("/chain/{}", n - 1)),
                None => respond("404 Not Found", &[], "no such route"),
            },
        }
    }

    fn guarded(policy: SsrfPolicy) -> GuardedClient {
        let resolver = GuardedResolver::new(policy)
            .with_static("localhost", [ip("127.0.0.1")])
            .with_static("internal.test", [ip("10.0.0.5")])
            .with_static("evil.test", [ip("10.0.0.7")])
            .with_static("hooks.test", [ip("127.0.0.1")]);
        GuardedClient::with_resolver(resolver, test_opts()).expect("client")
    }

    async fn send_err(client: &GuardedClient, u: Url) -> reqwest::Error {
        client
            .get(u)
            .expect("URL passes check_url")
            .send()
            .await
            .expect_err("request must fail")
    }

    #[tokio::test]
    async fn plain_client_does_not_see_ip_literals() {
        // Documents *why* GuardedClient exists: reqwest skips the resolver for
        // IP-literal hosts, so the bare client reaches loopback.
        let server = serve(ok_route).await;
        let bare = client(&SsrfPolicy::default(), test_opts()).expect("client");
        let response = bare.get(server.url("/ok")).send().await.expect("reached");
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn ip_literal_loopback_is_refused_before_sending() {
        let server = serve(ok_route).await;
        let client = guarded(SsrfPolicy::default());
        let refusal = client.get(server.url("/ok")).expect_err("refused");
        assert_eq!(refusal.category(), Category::Loopback);
        assert_eq!(refusal.ip_addr(), Some(ip("127.0.0.1")));
        assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn localhost_is_refused_static_and_real_dns() {
        let server = serve(ok_route).await;
        let path = format!("http://localhost:{}/ok", server.port);

        // Static entry.
        let err = send_err(&guarded(SsrfPolicy::default()), url(&path)).await;
        assert_eq!(
            refusal_of(&err).map(Refusal::category),
            Some(Category::Loopback)
        );
        // reqwest reports a resolver failure as a connect error.
        assert!(err.is_connect(), "{err:?}");

        // Real resolution through the system resolver.
        let real = GuardedClient::new(SsrfPolicy::default(), test_opts()).expect("client");
        let err = send_err(&real, url(&path)).await;
        assert_eq!(
            refusal_of(&err).map(Refusal::category),
            Some(Category::Loopback)
        );
        assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn name_resolving_to_private_space_is_refused() {
        let client = guarded(SsrfPolicy::default());
        let err = send_err(&client, url("http://internal.test/hook")).await;
        let refusal = refusal_of(&err).expect("a refusal");
        assert_eq!(refusal.category(), Category::Private);
        assert_eq!(refusal.ip_addr(), Some(ip("10.0.0.5")));
    }

    #[tokio::test]
    async fn allow_listed_loopback_succeeds() {
        let server = serve(ok_route).await;
        let client = guarded(loopback_allowed());

        let response = client
            .get(server.url("/ok"))
            .expect("allowed")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "hello");

        // Through the resolver too.
        let by_name = url(&format!("http://hooks.test:{}/ok", server.port));
        let response = client
            .get(by_name)
            .expect("allowed")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);

        // And a webhook-style POST with a body.
        let response = client
            .post(server.url("/ok"))
            .expect("allowed")
            .json(&[1, 2, 3])
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn redirects_into_refused_space_are_errors() {
        let server = serve(ok_route).await;
        let client = guarded(loopback_allowed());
        let cases = [
            ("/to-private", Category::Private),
            ("/to-metadata", Category::CloudMetadata),
            ("/to-mapped", Category::Private),
            ("/to-ftp", Category::Scheme),
        ];
        for (path, want) in cases {
            let err = send_err(&client, server.url(path)).await;
            assert!(err.is_redirect(), "{path}: {err:?}");
            assert_eq!(
                refusal_of(&err).map(Refusal::category),
                Some(want),
                "{path}"
            );
        }
        // A named target on another host is not followed at all (the resolver would also
        // refuse it: `name_resolving_to_private_space_is_refused`).
        let err = send_err(&client, server.url("/to-evil-name")).await;
        let refusal = refusal_of(&err).expect("a refusal");
        assert_eq!(refusal.category(), Category::CrossHost);
    }

    #[tokio::test]
    async fn allowed_redirects_are_followed() {
        let server = serve(ok_route).await;
        let client = guarded(loopback_allowed());
        for path in ["/to-self", "/to-self-absolute"] {
            let response = client
                .get(server.url(path))
                .expect("allowed")
                .send()
                .await
                .expect("followed");
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.url().path(), "/ok", "{path}");
        }
        // Allowed space, but another host: not followed, so the endpoint's headers stay home.
        let err = send_err(&client, server.url("/to-good-name")).await;
        assert_eq!(
            refusal_of(&err).map(Refusal::category),
            Some(Category::CrossHost)
        );
    }

    #[tokio::test]
    async fn redirect_chain_is_capped() {
        let server = serve(ok_route).await;
        let client = guarded(loopback_allowed()); // max_redirects: 3

        // Exactly `max` redirects are fine.
        let response = client
            .get(server.url("/chain/3"))
            .expect("allowed")
            .send()
            .await
            .expect("three hops");
        assert_eq!(response.text().await.expect("body"), "end of chain");

        // One more is refused without fetching the extra hop.
        let before = server.hits.load(Ordering::SeqCst);
        let err = send_err(&client, server.url("/chain/4")).await;
        assert!(err.is_redirect(), "{err:?}");
        let refusal = refusal_of(&err).expect("a refusal");
        assert_eq!(refusal.category(), Category::TooManyRedirects);
        assert_eq!(server.hits.load(Ordering::SeqCst) - before, 4);

        // max_redirects 0 follows none.
        let resolver = GuardedResolver::new(loopback_allowed());
        let opts = ClientOptions {
            max_redirects: 0,
            ..test_opts()
        };
        let strict = GuardedClient::with_resolver(resolver, opts).expect("client");
        let err = send_err(&strict, server.url("/to-self")).await;
        assert_eq!(
            refusal_of(&err).map(Refusal::category),
            Some(Category::TooManyRedirects)
        );
    }

    #[tokio::test]
    async fn connection_failures_are_not_refusals() {
        // A port nobody listens on: the guard allows it, the connect fails.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = guarded(loopback_allowed());
        let err = send_err(&client, url(&format!("http://127.0.0.1:{port}/"))).await;
        assert!(err.is_connect(), "{err:?}");
        assert!(refusal_of(&err).is_none(), "{err:?}");
    }

    #[tokio::test]
    async fn total_timeout_applies() {
        // Accepts, reads, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let resolver = GuardedResolver::new(loopback_allowed());
        let opts = ClientOptions {
            timeout: Duration::from_millis(300),
            ..test_opts()
        };
        let client = GuardedClient::with_resolver(resolver, opts).expect("client");
        let started = std::time::Instant::now();
        let err = send_err(&client, url(&format!("http://127.0.0.1:{port}/"))).await;
        assert!(err.is_timeout(), "{err:?}");
        assert!(refusal_of(&err).is_none());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn default_options_are_sane() {
        let opts = ClientOptions::default();
        assert!(opts.connect_timeout <= opts.timeout);
        assert!(opts.user_agent.starts_with("wedsync-delivery/"));
        client(&SsrfPolicy::default(), opts).expect("builds");
    }
}
