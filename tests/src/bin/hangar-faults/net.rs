//! Scenarios at the socket level: a flood of idle connections and
//! slowloris clients (headers or bodies trickled a byte at a time) while
//! GitHub's deliveries keep coming.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::rig::{Rig, RigOpts};
use crate::scenarios::measure;
use crate::{Ctx, Row};

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// hangard's `[server] max_connections` in the flood: well under the
/// flood's sockets, so the cap (idle connections closed first) is what
/// bounds hangard's descriptors.
const MAX_CONNECTIONS: u32 = 512;

/// Descriptors hangard may hold over its idle count plus one per allowed
/// connection: outbound connections to GitHub, provider call pipes, a
/// connection accepted and not yet counted.
const FD_SLACK: usize = 64;

/// Thousands of idle sockets: webhooks must still be served, hangard's
/// descriptors must stay bounded and come back down afterwards.
pub async fn flood(ctx: &Ctx) -> anyhow::Result<Row> {
    let sockets = 3000;
    let read_timeout = 10;
    let rig = Rig::start(RigOpts {
        pools: vec![("a", 4)],
        read_timeout_secs: read_timeout,
        max_connections: Some(MAX_CONNECTIONS),
        ..RigOpts::default()
    })
    .await?;
    let pid = rig.daemon.pid().unwrap_or(0);
    let baseline = fds(pid);
    let addr = format!("127.0.0.1:{}", rig.port);
    let started = Instant::now();
    let mut open = Vec::with_capacity(sockets);
    let mut refused = 0;
    for _ in 0..sockets {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => open.push(s),
            _ => refused += 1,
        }
    }
    let opened_in = started.elapsed();
    // Sample hangard's descriptors while jobs go through the flood.
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        let until = Instant::now() + Duration::from_secs(read_timeout);
        while Instant::now() < until {
            peak = peak.max(fds(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    let n = if ctx.short { 10 } else { 40 };
    let jobs: BTreeSet<i64> = rig.queue_jobs(n, 2).await.into_iter().collect();
    let slow_answers = rig
        .gh
        .delivery_attempts()
        .iter()
        .filter(|d| d.action == "queued" && d.duration_ms > 2000)
        .count();
    let peak = sampler.await.unwrap_or(0);
    drop(open);
    // The descriptors come back down once the sockets are gone.
    let deadline = Instant::now() + Duration::from_secs(read_timeout + 10);
    let mut after = fds(pid);
    while after > baseline + 32 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = fds(pid);
    }
    let mut row = measure(
        &rig,
        "connection flood",
        format!(
            "{} idle sockets ({refused} refused) opened in {:.1}s; hangard fds {baseline} → peak {peak} → {after}",
            sockets - refused,
            opened_in.as_secs_f64()
        ),
        &jobs,
        Duration::from_secs(60),
    )
    .await;
    let bound = baseline + MAX_CONNECTIONS as usize + FD_SLACK;
    if peak > bound {
        row.problems.push(format!(
            "hangard held {peak} file descriptors for {sockets} idle sockets (idle {baseline}; bound {bound} = idle + max_connections {MAX_CONNECTIONS} + {FD_SLACK}): the connection cap does not hold"
        ));
    } else {
        row.notes.push(format!(
            "descriptors stayed within idle + max_connections ({MAX_CONNECTIONS}) + {FD_SLACK} = {bound}"
        ));
    }
    if after > baseline + 32 {
        row.problems.push(format!(
            "{after} descriptors still open {}s after the flood ended (idle {baseline})",
            read_timeout + 10
        ));
    }
    let bad: Vec<u16> = rig
        .gh
        .deliveries()
        .iter()
        .filter(|d| jobs.contains(&d.job_id) && d.action == "queued" && d.status != 202)
        .map(|d| d.status)
        .collect();
    if !bad.is_empty() {
        row.problems.push(format!(
            "{} deliveries during the flood were not accepted: {bad:?}",
            bad.len()
        ));
    }
    if slow_answers > 0 {
        row.notes.push(format!(
            "{slow_answers} deliveries took over 2s to be answered during the flood"
        ));
    }
    Ok(row)
}

/// How one slow client ended.
enum Ended {
    /// The server closed (or answered and closed) after this long.
    Dropped(Duration, Option<u16>),
    /// Still open at the deadline.
    Kept,
}

/// Sends `head`, then one byte of `trickle` every `every` until the server
/// closes the connection or `deadline` passes.
async fn slow_client(
    addr: String,
    head: Vec<u8>,
    trickle: u8,
    every: Duration,
    deadline: Duration,
) -> Ended {
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return Ended::Dropped(Duration::ZERO, None);
    };
    if s.write_all(&head).await.is_err() {
        return Ended::Dropped(started.elapsed(), None);
    }
    let mut answer = Vec::new();
    loop {
        if started.elapsed() > deadline {
            return Ended::Kept;
        }
        // Anything from the server (an answer, or the end of the stream)?
        let mut buf = [0u8; 512];
        match tokio::time::timeout(every, s.readable()).await {
            Ok(Ok(())) => match s.try_read(&mut buf) {
                Ok(0) => {
                    let status = std::str::from_utf8(&answer)
                        .ok()
                        .and_then(|a| a.split_whitespace().nth(1))
                        .and_then(|c| c.parse().ok());
                    return Ended::Dropped(started.elapsed(), status);
                }
                Ok(k) => {
                    answer.extend_from_slice(&buf[..k]);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Ended::Dropped(started.elapsed(), None),
            },
            Ok(Err(_)) => return Ended::Dropped(started.elapsed(), None),
            Err(_) => {}
        }
        if s.write_all(&[trickle]).await.is_err() {
            return Ended::Dropped(started.elapsed(), None);
        }
    }
}

/// Slowloris: clients that trickle their headers, or a webhook body, a
/// byte at a time. The read timeout must cut every one of them off, and
/// deliveries meanwhile must be served.
pub async fn slowloris(ctx: &Ctx) -> anyhow::Result<Row> {
    let read_timeout = 3u64;
    let rig = Rig::start(RigOpts {
        pools: vec![("a", 4)],
        read_timeout_secs: read_timeout,
        ..RigOpts::default()
    })
    .await?;
    let pid = rig.daemon.pid().unwrap_or(0);
    let baseline = fds(pid);
    let addr = format!("127.0.0.1:{}", rig.port);
    let (headers, bodies) = if ctx.short { (100, 50) } else { (400, 200) };
    let deadline = Duration::from_secs(read_timeout + 6);
    let mut tasks = Vec::new();
    for i in 0..headers + bodies {
        let head = if i < headers {
            format!(
                "POST /webhooks/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-",
                rig.repo_id
            )
            .into_bytes()
        } else {
            format!(
                "POST /webhooks/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-GitHub-Event: workflow_job\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 100000\r\n\r\n{{",
                rig.repo_id
            )
            .into_bytes()
        };
        let trickle = if i < headers { b'a' } else { b' ' };
        tasks.push(tokio::spawn(slow_client(
            addr.clone(),
            head,
            trickle,
            Duration::from_millis(500),
            deadline,
        )));
    }
    let n = if ctx.short { 10 } else { 40 };
    let jobs: BTreeSet<i64> = rig.queue_jobs(n, 2).await.into_iter().collect();
    let mut kept = 0;
    let mut times = Vec::new();
    let mut body_408 = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(Ended::Dropped(d, status)) => {
                times.push(d);
                if i >= headers && status == Some(408) {
                    body_408 += 1;
                }
            }
            Ok(Ended::Kept) | Err(_) => kept += 1,
        }
    }
    times.sort();
    let p50 = times.get(times.len() / 2).copied().unwrap_or_default();
    let max = times.last().copied().unwrap_or_default();
    let after = fds(pid);
    let mut row = measure(
        &rig,
        "slow clients",
        format!(
            "{headers} trickled headers + {bodies} trickled bodies; cut off after p50 {:.1}s, max {:.1}s (read timeout {read_timeout}s); {body_408} bodies got 408",
            p50.as_secs_f64(),
            max.as_secs_f64()
        ),
        &jobs,
        Duration::from_secs(60),
    )
    .await;
    if kept > 0 {
        row.problems.push(format!(
            "{kept} slow clients still connected {}s after they started",
            deadline.as_secs()
        ));
    }
    if after > baseline + 32 {
        row.problems.push(format!(
            "{after} descriptors open after the slow clients (idle {baseline})"
        ));
    }
    Ok(row)
}
