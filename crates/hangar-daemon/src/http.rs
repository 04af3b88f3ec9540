//! The HTTP/1.1 accept loop: hyper serving the axum router, with the
//! timeouts and the connection cap a public webhook endpoint needs, and a
//! graceful stop.
//!
//! `axum::serve` has no timer, so a client that trickles its headers (or
//! just holds a keep-alive connection open) keeps a connection and a file
//! descriptor for ever. Here hyper gets tokio's timer and a header read
//! timeout: the headers of every request, first or next on a kept-alive
//! connection, must arrive within it, and an idle connection is closed
//! once it passes. (Webhook bodies have the same limit, in the handler.)
//!
//! At most `max_connections` connections are open at once. When a new one
//! arrives at the cap, the connection idle the longest (no request in
//! flight: kept alive, or never sent one) is closed first to make room; when
//! every connection is busy, the new one is closed at once rather than left
//! to pile up in the accept queue.
//!
//! With TLS ([`crate::tls`]) each connection's handshake runs in its own
//! task, under the same read timeout, so a slow handshake holds no one up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a stop went.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every open request finished.
    Drained,
    /// Requests were still open when the grace period ended.
    GraceExpired,
}

/// The listener's limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's headers must arrive within this; an idle kept-alive
    /// connection is closed after as long.
    pub read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// On stop, how long open requests may take to finish.
    pub grace: Duration,
}

/// How long a new connection waits for the idle one closed to make room
/// for it; an idle HTTP/1 connection closes at once, so this only runs out
/// when the one chosen started a request in the meantime.
const SHED_WAIT: Duration = Duration::from_secs(1);

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
struct Conn {
    /// In order of arrival.
    id: u64,
    /// Requests being answered on it now.
    in_flight: AtomicUsize,
    /// When it last became idle, in ms since the listener started.
    idle_since_ms: AtomicU64,
    /// Set once it was asked to close to make room.
    shed: AtomicBool,
    /// Cancelled to close it (a child of the stop token).
    close: CancellationToken,
}

/// The open connections. Cheap to clone; tests read [`Connections::open`].
#[derive(Debug, Clone)]
pub struct Connections(Arc<Registry>);

#[derive(Debug)]
struct Registry {
    started: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    count: watch::Sender<usize>,
}

impl Default for Connections {
    fn default() -> Self {
        Self(Arc::new(Registry {
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            count: watch::channel(0).0,
        }))
    }
}

impl Connections {
    /// Connections open now.
    pub fn open(&self) -> usize {
        *self.0.count.borrow()
    }

    fn now_ms(&self) -> u64 {
        self.0.started.elapsed().as_millis() as u64
    }

    fn insert(&self, close: CancellationToken) -> (u64, Arc<Conn>) {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            shed: AtomicBool::new(false),
            close,
        });
        let mut conns = self.0.conns.lock().expect("connection registry poisoned");
        conns.insert(id, conn.clone());
        self.0.count.send_replace(conns.len());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.0.conns.lock().expect("connection registry poisoned");
        conns.remove(&id);
        self.0.count.send_replace(conns.len());
    }

    /// Asks the connection idle the longest to close; false when every
    /// connection has a request in flight (or is already closing).
    fn shed_one(&self) -> bool {
        let conns = self.0.conns.lock().expect("connection registry poisoned");
        let victim = conns
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0 && !c.shed.load(Ordering::Relaxed))
            .min_by_key(|c| (c.idle_since_ms.load(Ordering::Relaxed), c.id));
        match victim {
            Some(c) => {
                c.shed.store(true, Ordering::Relaxed);
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    /// Makes room for one more connection below `max`: true when there is.
    async fn make_room(&self, max: usize) -> bool {
        if self.open() < max {
            return true;
        }
        if !self.shed_one() {
            return false;
        }
        let mut rx = self.0.count.subscribe();
        matches!(
            tokio::time::timeout(SHED_WAIT, rx.wait_for(|n| *n < max)).await,
            Ok(Ok(_))
        )
    }

    async fn wait_empty(&self) {
        let mut rx = self.0.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Counts a request in flight on its connection while it lives.
struct Busy {
    conn: Arc<Conn>,
    connections: Connections,
}

impl Busy {
    fn new(conn: Arc<Conn>, connections: Connections) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { conn, connections }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(self.connections.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` until `cancel`, then stops accepting, lets
/// open requests finish for up to `limits.grace` and closes idle
/// connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    cancel: CancellationToken,
) -> Stopped {
    serve_counted(listener, app, limits, cancel, Connections::default()).await
}

/// [`serve`], keeping its open connections in `connections`.
pub async fn serve_counted(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    cancel: CancellationToken,
    connections: Connections,
) -> Stopped {
    serve_with(listener, app, limits, cancel, connections, None).await
}

/// [`serve_counted`], over TLS when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    cancel: CancellationToken,
    connections: Connections,
    tls: Option<crate::tls::Tls>,
) -> Stopped {
    let max = limits.max_connections.max(1);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or a connection reset before it
                // was taken: not fatal; pause so a full table can drain.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !connections.make_room(max).await {
            // Every connection is busy: closing this one at once tells the
            // client to come back, where queueing it would hold a
            // descriptor and memory for nothing.
            drop(stream);
            refused += 1;
            // One line per power of two, so a flood cannot flood the log.
            if refused.is_power_of_two() {
                tracing::warn!(
                    max_connections = max,
                    refused,
                    "connection cap reached with every connection busy; refusing new connections"
                );
            }
            continue;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let close = cancel.child_token();
        let (id, conn) = connections.insert(close.clone());
        // Each request carries the peer's address (`ConnectInfo`, for
        // per-address login throttling) and counts as in flight on its
        // connection until its response is ready.
        let service = {
            let inner = TowerToHyperService::new(app.clone());
            let connections = connections.clone();
            hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let busy = Busy::new(conn.clone(), connections.clone());
                let response = inner.call(req);
                async move {
                    let r = response.await;
                    drop(busy);
                    r
                }
            })
        };
        let http = http.clone();
        let connections = connections.clone();
        let handshake = tls.as_ref().map(|t| (t.acceptor(), limits.read_timeout));
        tokio::spawn(async move {
            match handshake {
                None => serve_one(&http, TokioIo::new(stream), service, close).await,
                Some((acceptor, timeout)) => {
                    let shaken = tokio::select! {
                        r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
                        () = close.cancelled() => Ok(Err(std::io::ErrorKind::Interrupted.into())),
                    };
                    match shaken {
                        Ok(Ok(stream)) => {
                            serve_one(&http, TokioIo::new(stream), service, close).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
            connections.remove(id);
        });
    }
    drop(listener);
    match tokio::time::timeout(limits.grace, connections.wait_empty()).await {
        Ok(()) => Stopped::Drained,
        Err(_) => Stopped::GraceExpired,
    }
}

/// Serves one connection until it ends, or gracefully once `close` fires.
async fn serve_one<I, S>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    close: CancellationToken,
) where
    I: Read + Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let serving = http.serve_connection(io, service);
    let mut serving = std::pin::pin!(serving);
    let result = tokio::select! {
        r = serving.as_mut() => r,
        () = close.cancelled() => {
            // Idle: closes now; busy: after the request in flight.
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
