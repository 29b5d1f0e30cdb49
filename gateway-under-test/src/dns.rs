//! DNS for upstream hosts given by name (ServiceEntry endpoints and hosts of resolution DNS, an
//! original-destination request's host). Each name's answer is kept for the mesh's
//! `dnsRefreshRate` (Envoy's `dns_refresh_rate`; Istio's default is 60 s); getaddrinfo gives no
//! TTL, so the refresh rate stands in for it. A failed refresh keeps the last good answer, as
//! Envoy keeps a DNS cluster's hosts when a resolution fails. A cluster takes the answer as its
//! Envoy type does: STRICT_DNS (resolution DNS, or STATIC with a name) every address, new
//! connections going round them; LOGICAL_DNS (DNS_ROUND_ROBIN) the first one only. IPv4
//! addresses are taken when there are any (istiod's `V4_ONLY` for a single-stack mesh), else
//! IPv6 ones.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_model::api::service_entry::Resolution;
use tokio::net::TcpStream;

/// At most this many names keep an answer; past it the oldest answer goes.
pub const MAX_NAMES: usize = 4096;

/// Answers by name, shared by every cluster of one config.
#[derive(Debug)]
pub struct Cache {
    refresh: Duration,
    answers: Mutex<Answers>,
}

#[derive(Debug, Default)]
struct Answers {
    /// Answers kept so far (orders them by age, whatever the clock's resolution).
    kept: u64,
    by_name: HashMap<String, Answer>,
}

#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    order: u64,
    addrs: Arc<[IpAddr]>,
}

impl Cache {
    /// Answers kept for `refresh` (`dnsRefreshRate`).
    pub fn new(refresh: Duration) -> Arc<Cache> {
        Arc::new(Cache {
            refresh,
            answers: Mutex::default(),
        })
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The addresses of `name`: an address as it is; otherwise the kept answer while it is
    /// fresh, else a new lookup (getaddrinfo, off the runtime's threads), else the last good
    /// answer.
    pub async fn lookup(&self, name: &str) -> std::io::Result<Arc<[IpAddr]>> {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Arc::from([ip]));
        }
        let kept = self.answers().by_name.get(name).cloned();
        if let Some(a) = &kept {
            if a.at.elapsed() < self.refresh {
                return Ok(a.addrs.clone());
            }
        }
        let looked = tokio::net::lookup_host((name, 0))
            .await
            .map(|found| preferred(found.map(|s| s.ip())))
            .and_then(|addrs| match addrs.is_empty() {
                true => Err(std::io::Error::other(format!("{name}: no address"))),
                false => Ok(addrs),
            });
        match (looked, kept) {
            (Ok(addrs), _) => {
                let addrs: Arc<[IpAddr]> = Arc::from(addrs);
                self.keep(name, addrs.clone());
                Ok(addrs)
            }
            (Err(_), Some(last)) => Ok(last.addrs),
            (Err(e), None) => Err(e),
        }
    }

    fn keep(&self, name: &str, addrs: Arc<[IpAddr]>) {
        let mut answers = self.answers();
        answers.kept += 1;
        let order = answers.kept;
        let by_name = &mut answers.by_name;
        if by_name.len() >= MAX_NAMES && !by_name.contains_key(name) {
            let oldest = by_name.iter().min_by_key(|(_, a)| a.order).map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                by_name.remove(&n);
            }
        }
        let at = Instant::now();
        by_name.insert(name.to_string(), Answer { at, order, addrs });
    }
}

/// IPv4 addresses when there are any, else the IPv6 ones; each once, in the order found.
fn preferred(found: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut all: Vec<IpAddr> = Vec::new();
    for ip in found {
        if !all.contains(&ip) {
            all.push(ip);
        }
    }
    if all.iter().any(IpAddr::is_ipv4) {
        all.retain(IpAddr::is_ipv4);
    }
    all
}

/// How a cluster takes a name's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// STRICT_DNS: every address; each new connection starts at the next.
    Every,
    /// LOGICAL_DNS: the first address only.
    First,
}

impl Take {
    /// As Envoy's cluster type for `resolution`.
    pub fn of(resolution: Resolution) -> Take {
        match resolution {
            Resolution::DnsRoundRobin => Take::First,
            _ => Take::Every,
        }
    }
}

/// One cluster's resolver: the config's cache and the cluster's way of taking its answers.
#[derive(Debug, Clone)]
pub struct Resolver {
    cache: Arc<Cache>,
    take: Take,
    next: Arc<AtomicUsize>,
}

impl Resolver {
    pub fn new(cache: Arc<Cache>, take: Take) -> Resolver {
        Resolver {
            cache,
            take,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The addresses a new connection to `name` tries, in order.
    pub async fn addresses(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        let all = self.cache.lookup(name).await?;
        Ok(match self.take {
            Take::First => all.iter().take(1).copied().collect(),
            Take::Every => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % all.len();
                all[start..].iter().chain(&all[..start]).copied().collect()
            }
        })
    }

    /// A TCP connection to `address` (`host:port`), trying its addresses in turn within
    /// `timeout` in all.
    pub async fn connect(&self, address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| std::io::Error::other(format!("`{address}` is not host:port")))?;
        let tries = async {
            let mut last = std::io::Error::other(format!("{host}: no address"));
            for ip in self.addresses(host).await? {
                match TcpStream::connect(SocketAddr::new(ip, port)).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(timeout, tries)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

type Resolving =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

/// For hyper's HTTP connector (HTTP/1.1 clusters): it sets the port itself.
impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.addresses(name.as_str()).await?;
            Ok(addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn ipv4_wins_and_each_address_counts_once() {
        let found = ["::1", "10.0.0.1", "10.0.0.2", "10.0.0.1"].map(ip);
        assert_eq!(preferred(found.into_iter()), vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let v6 = ["::1", "::2", "::1"].map(ip);
        assert_eq!(preferred(v6.into_iter()), vec![ip("::1"), ip("::2")]);
    }

    #[test]
    fn clusters_take_answers_as_their_envoy_type() {
        assert_eq!(Take::of(Resolution::DnsRoundRobin), Take::First);
        assert_eq!(Take::of(Resolution::Dns), Take::Every);
        assert_eq!(Take::of(Resolution::Static), Take::Every);
    }

    #[tokio::test]
    async fn kept_answers_are_used_until_the_refresh_and_rotate_for_strict_dns() {
        let cache = Cache::new(Duration::from_secs(3600));
        // An answer kept for a name no resolver knows: it is what lookups give.
        cache.keep("two.test", Arc::from([ip("10.0.0.1"), ip("10.0.0.2")]));
        let every = Resolver::new(cache.clone(), Take::Every);
        let first = Resolver::new(cache.clone(), Take::First);
        let got = |r: &Resolver| {
            let r = r.clone();
            async move { r.addresses("two.test").await.unwrap_or_default() }
        };
        assert_eq!(got(&every).await, [ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(got(&every).await, [ip("10.0.0.2"), ip("10.0.0.1")]);
        assert_eq!(got(&every).await, [ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(got(&first).await, [ip("10.0.0.1")]);
        assert_eq!(got(&first).await, [ip("10.0.0.1")]);
        // Addresses are answers of their own, never kept.
        assert_eq!(&*cache.lookup("[::1]").await.unwrap_or(Arc::from([])), [ip("::1")]);
        assert_eq!(cache.answers().by_name.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_answer_and_no_answer_is_an_error() {
        // Refreshed at every lookup: the `.invalid` name never resolves (RFC 6761).
        let cache = Cache::new(Duration::ZERO);
        assert!(cache.lookup("gone.invalid").await.is_err());
        cache.keep("gone.invalid", Arc::from([ip("10.0.0.9")]));
        let kept = cache.lookup("gone.invalid").await.unwrap_or(Arc::from([]));
        assert_eq!(&*kept, [ip("10.0.0.9")]);
        // A name that resolves is looked up again and kept.
        let local = cache.lookup("localhost").await.unwrap_or(Arc::from([]));
        assert!(local.iter().all(IpAddr::is_loopback) && !local.is_empty());
        assert_eq!(cache.answers().by_name.len(), 2);
    }

    #[test]
    fn the_cache_is_bounded_and_the_oldest_answer_goes() {
        let cache = Cache::new(Duration::from_secs(60));
        for i in 0..MAX_NAMES {
            cache.keep(&format!("n{i}.test"), Arc::from([ip("10.0.0.1")]));
        }
        cache.keep("n0.test", Arc::from([ip("10.0.0.2")]));
        assert_eq!(cache.answers().by_name.len(), MAX_NAMES);
        cache.keep("new.test", Arc::from([ip("10.0.0.3")]));
        let answers = &cache.answers().by_name;
        assert_eq!(answers.len(), MAX_NAMES);
        assert!(answers.contains_key("new.test") && answers.contains_key("n0.test"));
        assert!(!answers.contains_key("n1.test"));
    }
}
