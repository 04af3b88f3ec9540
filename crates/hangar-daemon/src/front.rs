//! The front thread: the HTTP listener and the webhook intake writer on a
//! tokio runtime of their own, so a delivery is read, verified, committed
//! and answered without queueing behind scheduler work.
//!
//! With one runtime, a burst put intake on the same worker as the work it
//! caused: reconciles, JIT registrations, provider processes being spawned
//! and read. On 2 CPUs that is one worker, and a webhook's next poll waited
//! for whatever scheduler task ran before it. Here the front thread runs
//! only accepting, HTTP, the handlers and the intake writer (which the
//! router's state starts on the runtime that builds it, this one); the
//! scheduler, its provider calls and GitHub calls stay on the main
//! runtime. The two meet only where they must: the one database writer
//! connection (intake's commit is one statement) and the scheduler's wake,
//! which never blocks.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::http::{self, Limits, Stopped};

/// The running front thread.
#[derive(Debug)]
pub struct Front {
    stopped: oneshot::Receiver<Stopped>,
    thread: std::thread::JoinHandle<()>,
}

/// Name of the front thread (and, with `-blocking`, of its blocking
/// threads: password hashing).
pub const THREAD_NAME: &str = "hangard-front";

impl Front {
    /// Starts the front thread: builds the router there with `make_app`
    /// (so the intake writer and the router's background tasks run on the
    /// front runtime), then serves `listener` until `cancel`. Returns once
    /// the router is built and the listener is being served, or with the
    /// error that prevented it.
    pub async fn start<F, Fut>(
        listener: std::net::TcpListener,
        make_app: F,
        limits: Limits,
        cancel: CancellationToken,
        tls: Option<crate::tls::Tls>,
    ) -> anyhow::Result<Self>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Router>>,
    {
        listener
            .set_nonblocking(true)
            .context("cannot make the listener non-blocking")?;
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<()>>();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name(format!("{THREAD_NAME}-blocking"))
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(
                            anyhow::Error::new(e).context("cannot start the front runtime")
                        ));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let app = match make_app().await {
                        Ok(app) => app,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    // Registered with this runtime's reactor: accepting and
                    // every connection's I/O are driven by this thread.
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(
                                anyhow::Error::new(e).context("cannot serve the listener")
                            ));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let stopped = http::serve_with(
                        listener,
                        app,
                        limits,
                        cancel,
                        http::Connections::default(),
                        tls,
                    )
                    .await;
                    let _ = stopped_tx.send(stopped);
                });
                // A password hash still running on a blocking thread ends
                // by itself; nothing else is left once serving stopped.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("cannot start the front thread")?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Self {
                stopped: stopped_rx,
                thread,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the front thread ended before serving")
            }
        }
    }

    /// Waits until serving stopped (the cancel token was cancelled and open
    /// requests finished or the grace period ran out) and the thread ended.
    pub async fn stopped(self) -> anyhow::Result<Stopped> {
        let stopped = self
            .stopped
            .await
            .map_err(|_| anyhow::anyhow!("the front thread failed while serving"))?;
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("joining the front thread")?
            .map_err(|_| anyhow::anyhow!("the front thread panicked"))?;
        Ok(stopped)
    }
}
