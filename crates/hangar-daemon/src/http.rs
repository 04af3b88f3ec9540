//! The HTTP/1.1 accept loop: hyper serving the axum router, with the
//! timeouts a public webhook endpoint needs, and a graceful stop.
//!
//! `axum::serve` has no timer, so a client that trickles its headers (or
//! just holds a keep-alive connection open) keeps a connection and a file
//! descriptor for ever. Here hyper gets tokio's timer and a header read
//! timeout: the headers of every request, first or next on a kept-alive
//! connection, must arrive within it, and an idle connection is closed
//! once it passes. (Webhook bodies have the same limit, in the handler.)

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How a stop went.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every open request finished.
    Drained,
    /// Requests were still open when the grace period ended.
    GraceExpired,
}

/// Serves `app` on `listener` until `cancel`, then stops accepting, lets
/// open requests finish for up to `grace` and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    read_timeout: Duration,
    cancel: CancellationToken,
    grace: Duration,
) -> Stopped {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors or a connection reset before it
                // was taken: not fatal; pause so a full table can drain.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Stopped::Drained,
        Err(_) => Stopped::GraceExpired,
    }
}
