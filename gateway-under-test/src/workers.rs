//! The data plane's threads, as the fastest proxies run theirs (Envoy's workers, nginx's worker
//! processes): one thread per worker, each with a current-thread runtime of its own, and each
//! accepting on a socket of its own for every listener (`SO_REUSEPORT`: the kernel spreads new
//! connections over them). A downstream connection, the upstream connections its requests use
//! (pools are per worker, `PerWorker`) and every task they spawn live on one thread: no
//! work-stealing scheduler and no cross-thread wake-up on the request path. The control plane
//! (admin, config watch, signals, drain) runs on the runtime that called `Workers::start`.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers this process runs (1 until `Workers::start`).
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// This thread's worker; 0 off the worker threads.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// One value per worker, each used only by its own worker's thread (upstream connection pools).
#[derive(Debug)]
pub struct PerWorker<T>(Vec<T>);

impl<T> PerWorker<T> {
    /// `make(i)` for every worker of this process.
    pub fn new(make: impl FnMut(usize) -> T) -> PerWorker<T> {
        PerWorker((0..COUNT.load(Ordering::Relaxed).max(1)).map(make).collect())
    }

    /// The calling worker's value.
    pub fn get(&self) -> &T {
        &self.0[index() % self.0.len()]
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

/// The worker threads; dropping it stops them (their connections are dropped).
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers (at least one).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        COUNT.store(n, Ordering::Relaxed);
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let mut stopped = stop.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("meshgate-worker-{i}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(i));
                    rt.block_on(async {
                        let _ = stopped.wait_for(|s| *s).await;
                    });
                    rt.shutdown_timeout(Duration::from_millis(100));
                })?;
            threads.push(thread);
        }
        Ok(Workers { handles, stop, threads })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `task(i)` on every worker `i`.
    pub fn spawn_each<F, Fut>(&self, mut task: F)
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        for (i, h) in self.handles.iter().enumerate() {
            h.spawn(task(i));
        }
    }
}

impl Workers {
    /// Listens on `addr` on every worker, each on its own socket, and runs `serve` with it there.
    /// Returns the address bound (port 0: the port taken).
    pub fn listen<F, Fut>(&self, addr: SocketAddr, serve: F) -> std::io::Result<SocketAddr>
    where
        F: Fn(tokio::net::TcpListener) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sockets = bind(addr, self.len())?;
        let local = sockets[0].local_addr()?;
        let mut sockets = sockets.into_iter();
        self.spawn_each(|_| {
            let (socket, serve) = (sockets.next(), serve.clone());
            async move {
                match socket.map(tokio::net::TcpListener::from_std) {
                    Some(Ok(l)) => serve(l).await,
                    Some(Err(e)) => eprintln!("meshgate: cannot listen on {local}: {e}"),
                    None => {}
                }
            }
        });
        Ok(local)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `n` listening sockets on `addr`, all with `SO_REUSEPORT`, so each worker accepts on its own.
/// Port 0 takes a free port for the first; the others join it there.
pub fn bind(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = listen(addr)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n.max(1) {
        all.push(listen(bound)?);
    }
    Ok(all)
}

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socket_of_a_listener_is_on_the_same_port() {
        let all = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(all.len(), 3);
        let port = all[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(all.iter().all(|l| l.local_addr().unwrap().port() == port));
        // A socket without SO_REUSEPORT cannot take the port from them.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn each_worker_runs_its_task_on_its_own_thread() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        // Each worker finds its own value in a PerWorker.
        let per = std::sync::Arc::new(PerWorker::new(|i| i * 10));
        workers.spawn_each(|i| {
            let (tx, per) = (tx.clone(), per.clone());
            async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send((i, index(), *per.get(), name));
            }
        });
        let mut seen: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (0, 0, 0, Some("meshgate-worker-0".to_string())),
                (1, 1, 10, Some("meshgate-worker-1".to_string()))
            ]
        );
        assert_eq!(per.iter().copied().collect::<Vec<_>>(), vec![0, 10]);
        // Off the workers (this thread): the first.
        assert_eq!(*per.get(), 0);
        drop(workers);
    }
}
