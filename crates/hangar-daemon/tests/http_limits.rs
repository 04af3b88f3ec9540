//! The listener's connection cap, on a real loopback socket: idle
//! connections are closed first to make room, open connections never
//! exceed the cap, a fresh request is still served, and when every
//! connection is busy a new one is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use hangar_daemon::http::{Connections, Limits, Stopped, serve_counted};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    connections: Connections,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Stopped>,
}

async fn start(app: Router, max_connections: usize) -> Server {
    start_with(app, max_connections, Duration::from_secs(120)).await
}

async fn start_with(app: Router, max_connections: usize, read_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Connections::default();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serve_counted(
        listener,
        app,
        Limits {
            read_timeout,
            max_connections,
            grace: Duration::from_secs(10),
        },
        cancel.clone(),
        connections.clone(),
    ));
    Server {
        addr,
        connections,
        cancel,
        task,
    }
}

/// Whether the server closed `s` (EOF or reset); false while it is open.
fn closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// One request on a fresh connection; the whole answer as text.
async fn request(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: hangar\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .expect("read the answer");
    out
}

fn app() -> Router {
    Router::new().route("/ok", get(|| async { "ok" })).route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    )
}

#[tokio::test]
async fn idle_connections_are_shed_so_a_fresh_request_is_served() {
    const CAP: usize = 8;
    const OPENED: usize = 40;
    let server = start(app(), CAP).await;

    // Connections that never send a byte, like a flood of idle sockets.
    let mut idle = Vec::new();
    let mut most_open = 0;
    for _ in 0..OPENED {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
        most_open = most_open.max(server.connections.open());
    }
    // The server takes them one by one; once it has, exactly CAP remain
    // open and the rest were closed (the oldest first).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        most_open = most_open.max(server.connections.open());
        let shut = idle.iter().filter(|s| closed(s)).count();
        if shut == OPENED - CAP && server.connections.open() == CAP {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{shut} of {OPENED} closed, {} open on the server",
            server.connections.open()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        most_open <= CAP,
        "{most_open} connections were open at once"
    );
    let survivors: Vec<usize> = (0..OPENED).filter(|i| !closed(&idle[*i])).collect();
    assert_eq!(
        survivors,
        (OPENED - CAP..OPENED).collect::<Vec<_>>(),
        "the newest stay open, the oldest idle ones were shed"
    );

    // At the cap, fresh requests are served: an idle connection makes room.
    for _ in 0..3 {
        let answer = request(server.addr, "/ok").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        assert!(server.connections.open() <= CAP);
    }
    // Every request carries its peer's address (per-address throttling).
    let answer = request(server.addr, "/peer").await;
    assert!(answer.ends_with("127.0.0.1"), "{answer}");

    drop(idle);
    server.cancel.cancel();
    assert_eq!(server.task.await.unwrap(), Stopped::Drained);
}

#[tokio::test]
async fn when_every_connection_is_busy_a_new_one_is_closed_at_once() {
    const CAP: usize = 4;
    let release = Arc::new(Notify::new());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let app = app().route(
        "/hold",
        get({
            let release = release.clone();
            let in_flight = in_flight.clone();
            move || async move {
                let released = release.notified();
                in_flight.fetch_add(1, Ordering::SeqCst);
                released.await;
                "released"
            }
        }),
    );
    let server = start(app, CAP).await;

    let held: Vec<_> = (0..CAP)
        .map(|_| tokio::spawn(request(server.addr, "/hold")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight.load(Ordering::SeqCst) < CAP {
        assert!(Instant::now() < deadline, "requests did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing idle to shed: the newcomer is closed, not queued.
    let newcomer = TcpStream::connect(server.addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed(&newcomer) {
        assert!(
            Instant::now() < deadline,
            "the extra connection was kept open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.connections.open(), CAP);

    // The busy ones finish normally, and then there is room again.
    release.notify_waiters();
    for h in held {
        let answer = h.await.unwrap();
        assert!(answer.ends_with("released"), "{answer}");
    }
    let answer = request(server.addr, "/ok").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    server.cancel.cancel();
    assert_eq!(server.task.await.unwrap(), Stopped::Drained);
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_after_the_read_timeout() {
    let server = start_with(app(), 16, Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: hangar\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "kept alive after a 200"
    );
    assert_eq!(server.connections.open(), 1);
    // Then nothing more is sent: the server hangs up by itself.
    let rest = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("closed well before 20 s");
    assert!(matches!(rest, Ok(0) | Err(_)), "{rest:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.connections.open() != 0 {
        assert!(Instant::now() < deadline, "the server still counts it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.cancel.cancel();
    assert_eq!(server.task.await.unwrap(), Stopped::Drained);
}
