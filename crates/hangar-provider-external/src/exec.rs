//! Running the provider executable once: a clean environment, stdin in,
//! bounded stdout/stderr out, and a deadline that takes the provider's whole
//! process tree down with it (its process group, and descendants that left
//! the group), so a hung `lxc` or `az` child cannot outlive the call or
//! pile up.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashSet;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// The operations of garm's external provider interface, named as in
/// `GARM_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GarmCommand {
    CreateInstance,
    DeleteInstance,
    GetInstance,
    ListInstances,
    RemoveAllInstances,
    StartInstance,
    StopInstance,
    GetVersion,
    GetSupportedInterfaceVersions,
    ValidatePoolInfo,
    GetConfigJSONSchema,
    GetExtraSpecsJSONSchema,
}

impl GarmCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            GarmCommand::CreateInstance => "CreateInstance",
            GarmCommand::DeleteInstance => "DeleteInstance",
            GarmCommand::GetInstance => "GetInstance",
            GarmCommand::ListInstances => "ListInstances",
            GarmCommand::RemoveAllInstances => "RemoveAllInstances",
            GarmCommand::StartInstance => "StartInstance",
            GarmCommand::StopInstance => "StopInstance",
            GarmCommand::GetVersion => "GetVersion",
            GarmCommand::GetSupportedInterfaceVersions => "GetSupportedInterfaceVersions",
            GarmCommand::ValidatePoolInfo => "ValidatePoolInfo",
            GarmCommand::GetConfigJSONSchema => "GetConfigJSONSchema",
            GarmCommand::GetExtraSpecsJSONSchema => "GetExtraSpecsJSONSchema",
        }
    }

    /// Whether the command exists in interface v0.1.0 (the rest came with
    /// v0.1.1).
    pub fn in_v010(self) -> bool {
        matches!(
            self,
            GarmCommand::CreateInstance
                | GarmCommand::DeleteInstance
                | GarmCommand::GetInstance
                | GarmCommand::ListInstances
                | GarmCommand::RemoveAllInstances
                | GarmCommand::StartInstance
                | GarmCommand::StopInstance
        )
    }
}

impl std::fmt::Display for GarmCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider printing more than this on stdout is broken; the rest is
/// drained and dropped so it cannot block on a full pipe.
const MAX_STDOUT: usize = 16 * 1024 * 1024;
/// Enough for any stack trace; older output is the least useful part.
const MAX_STDERR: usize = 256 * 1024;
/// After a timeout, SIGTERM gets this long (so a Go provider can cancel its
/// cloud calls) before SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(3);
/// After SIGKILL, how long to wait for the provider's processes to be gone
/// before logging the survivors.
const KILL_CONFIRM: Duration = Duration::from_secs(2);
/// After the provider exits, a child it left behind may still hold its
/// stdout/stderr; stop waiting for their EOF after this long.
pub(crate) const PIPE_GRACE: Duration = Duration::from_secs(2);

/// One call to make. No `Debug`: its stdin may hold the instance token.
pub(crate) struct Invocation<'a> {
    pub command: GarmCommand,
    /// The variables of this call: garm's `GARM_*` and the pool's proxy
    /// settings, set over the inherited environment.
    pub env: Vec<(&'static str, String)>,
    /// Written to stdin, which is then closed; `None` gives `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// For logs: the instance the call is about, or `-`.
    pub instance: &'a str,
    /// A value that must never reach a log line or an error (the instance
    /// token sits in CreateInstance's stdin, and providers may echo it).
    pub redact: Option<&'a str>,
    /// Told the process (pid = process group) once it runs, so a create
    /// hangard loses track of in a crash can be found again.
    pub watcher: Option<&'a hangar_core::provider::CallWatcher>,
}

/// What a successful (exit 0) call printed.
#[derive(Debug)]
pub(crate) struct CallOutput {
    pub stdout: Vec<u8>,
}

/// How a call failed, before the caller decides what it means.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("cannot start {}: {source}", executable.display())]
    Spawn {
        executable: PathBuf,
        source: io::Error,
    },
    #[error("timed out after {}s and was killed; stderr: {stderr}", after.as_secs())]
    TimedOut { after: Duration, stderr: String },
    #[error("exited with code {code}; stderr: {stderr}")]
    Exit {
        code: i32,
        stderr: String,
        /// garm lets a failing create still print its instance JSON with a
        /// `provider_fault`.
        stdout: Vec<u8>,
    },
    #[error("was killed by signal {signal}; stderr: {stderr}")]
    Signal { signal: i32, stderr: String },
    #[error("I/O error talking to the provider: {0}")]
    Io(io::Error),
    /// Not started: the caller may no longer act (its pool's lease went
    /// while the call waited; see `hangar_core::provider::may_act`).
    #[error("not started: {0}")]
    NotActing(String),
}

/// Fixed per provider: what to run and with which inherited environment.
#[derive(Clone)]
pub(crate) struct Runner {
    pub executable: PathBuf,
    pub inherited_env: Vec<(String, String)>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Runner {
    // Allow-listed variables may hold cloud credentials: names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("executable", &self.executable)
            .field(
                "inherited_env",
                &self
                    .inherited_env
                    .iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Kills the provider's process tree if the call is abandoned half-way
/// (timeout, or the caller's future dropped), so nothing it started lingers:
/// its process group, and the descendants that left the group (`setsid`,
/// a Go provider starting a tool with `Setpgid`), found through `/proc`.
struct GroupGuard {
    pgid: Option<Pid>,
    /// Every process of the tree seen so far, with its start time (so a
    /// recycled pid is never signalled).
    known: HashSet<tree::Proc>,
}

impl GroupGuard {
    /// Nothing is read from `/proc` until a signal is due: the provider is
    /// still running then, so its descendants can be traced from it.
    fn new(pgid: Option<Pid>) -> Self {
        Self {
            pgid,
            known: HashSet::new(),
        }
    }

    /// Adds what the tree holds now: the group's members and every
    /// descendant of a process already known.
    fn refresh(&mut self) {
        if let Some(pgid) = self.pgid {
            let found = tree::members(pgid.as_raw(), &self.known);
            self.known.extend(found);
        }
    }

    fn signal(&mut self, sig: Signal) {
        let Some(pgid) = self.pgid else { return };
        self.refresh();
        // ESRCH just means everything in the group is already gone.
        let _ = killpg(pgid, sig);
        for p in &self.known {
            if p.pgrp != pgid.as_raw() && tree::still_running(p) {
                let _ = kill(Pid::from_raw(p.pid), sig);
            }
        }
    }

    /// The processes of the tree still running (zombies excluded: they
    /// are dead, waiting for their parent or init to reap them).
    fn survivors(&self) -> Vec<i32> {
        let Some(pgid) = self.pgid else {
            return Vec::new();
        };
        let mut alive: Vec<i32> = tree::members(pgid.as_raw(), &self.known)
            .into_iter()
            .filter(tree::still_running)
            .map(|p| p.pid)
            .collect();
        alive.sort_unstable();
        alive.dedup();
        alive
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The provider's process tree, read from `/proc` (Linux).
mod tree {
    use std::collections::{HashMap, HashSet};

    /// One process, identified by pid and start time together.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(super) struct Proc {
        pub pid: i32,
        pub pgrp: i32,
        pub start: u64,
    }

    struct Stat {
        proc: Proc,
        ppid: i32,
        zombie: bool,
    }

    /// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces
    /// and parentheses, so fields are counted from the last `)`.
    fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state); starttime is field 22.
        Some(Stat {
            proc: Proc {
                pid,
                pgrp: fields.get(2)?.parse().ok()?,
                start: fields.get(19)?.parse().ok()?,
            },
            ppid: fields.get(1)?.parse().ok()?,
            zombie: matches!(*fields.first()?, "Z" | "X"),
        })
    }

    fn stat(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(pid, &text)
    }

    fn all() -> Vec<Stat> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(stat)
            .collect()
    }

    /// The members of group `pgid` and the descendants of them and of
    /// `known` (those still alive as the same process), however far they
    /// moved from the group.
    pub(super) fn members(pgid: i32, known: &HashSet<Proc>) -> HashSet<Proc> {
        let procs = all();
        let mut children: HashMap<i32, Vec<Proc>> = HashMap::new();
        let mut found: HashSet<Proc> = HashSet::new();
        for s in &procs {
            children.entry(s.ppid).or_default().push(s.proc);
            if s.proc.pgrp == pgid || known.contains(&s.proc) {
                found.insert(s.proc);
            }
        }
        let mut queue: Vec<i32> = found.iter().map(|p| p.pid).collect();
        while let Some(pid) = queue.pop() {
            for child in children.get(&pid).into_iter().flatten() {
                if found.insert(*child) {
                    queue.push(child.pid);
                }
            }
        }
        found
    }

    /// Whether `p` is still the same process and not a zombie.
    pub(super) fn still_running(p: &Proc) -> bool {
        stat(p.pid).is_some_and(|s| s.proc.start == p.start && !s.zombie)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_lines_with_odd_command_names() {
            let line = "4242 (sh (x) y) S 4200 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 1 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
            let s = parse_stat(4242, line).unwrap();
            assert_eq!(s.ppid, 4200);
            assert_eq!(s.proc.pgrp, 4242);
            assert_eq!(s.proc.start, 987654);
            assert!(!s.zombie);
            let z = parse_stat(7, "7 (a) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0").unwrap();
            assert!(z.zombie);
            assert!(parse_stat(1, "garbage").is_none());
        }

        #[test]
        fn this_process_is_found_and_running() {
            let me = stat(std::process::id() as i32).expect("own stat");
            assert!(still_running(&me.proc));
            let found = members(me.proc.pgrp, &HashSet::new());
            assert!(found.contains(&me.proc));
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        // For stderr the end matters most, so keep the tail.
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > cap {
            let cut = kept.len() - cap;
            kept.drain(..cut);
        }
    }
}

fn spawn_reader<R>(r: Option<R>, cap: usize) -> Option<JoinHandle<io::Result<Vec<u8>>>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    r.map(|r| tokio::spawn(read_capped(r, cap)))
}

/// Awaits a reader for at most `grace`; a reader still blocked then (a
/// lingering grandchild holds the pipe) is abandoned with what it had not
/// yet returned.
async fn collect(handle: Option<JoinHandle<io::Result<Vec<u8>>>>, grace: Duration) -> Vec<u8> {
    let Some(mut handle) = handle else {
        return Vec::new();
    };
    match tokio::time::timeout(grace, &mut handle).await {
        Ok(Ok(Ok(bytes))) => bytes,
        Ok(Ok(Err(_))) | Ok(Err(_)) => Vec::new(),
        Err(_) => {
            handle.abort();
            tracing::warn!("provider left a process holding its output open; stopped reading");
            Vec::new()
        }
    }
}

/// Stderr as text for logs and errors: lossy UTF-8, secrets replaced,
/// at most `max` characters from the end.
pub(crate) fn excerpt(bytes: &[u8], redact: Option<&str>, max: usize) -> String {
    let mut text = String::from_utf8_lossy(bytes).trim().to_owned();
    if let Some(secret) = redact.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    let count = text.chars().count();
    if count > max {
        let tail: String = text.chars().skip(count - max).collect();
        format!("…{tail}")
    } else {
        text
    }
}

const ERROR_EXCERPT_CHARS: usize = 500;
const LOG_EXCERPT_CHARS: usize = 4000;

impl Runner {
    /// Runs one call to completion or deadline. Exit code 0 is `Ok`; the
    /// caller interprets everything else.
    pub(crate) async fn run(&self, inv: Invocation<'_>) -> Result<CallOutput, CallError> {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&self.executable);
        cmd.env_clear()
            .envs(self.inherited_env.iter().map(|(k, v)| (k, v)))
            .envs(inv.env.iter().map(|(k, v)| (OsString::from(k), v)))
            .stdin(if inv.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so one killpg reaches every child.
            .process_group(0)
            .kill_on_drop(true);
        // The last moment before the provider acts: everything above is
        // local, everything below may change the world.
        hangar_core::provider::may_act().map_err(|e| CallError::NotActing(e.to_string()))?;
        let mut child = cmd.spawn().map_err(|source| CallError::Spawn {
            executable: self.executable.clone(),
            source,
        })?;
        let mut guard = GroupGuard::new(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        );
        // Asked again once the process exists, before it has its input: a
        // caller frozen inside the spawn (between the check above and the
        // new process) resumes past its lease, and its process is killed
        // before it can read what to do.
        if let Err(e) = hangar_core::provider::may_act() {
            guard.signal(Signal::SIGKILL);
            let _ = child.wait().await;
            guard.disarm();
            return Err(CallError::NotActing(e.to_string()));
        }
        if let (Some(watcher), Some(pid)) = (inv.watcher, child.id())
            && let Some(start_ticks) = process_start_ticks(pid)
        {
            watcher.started(hangar_core::provider::CallProcess { pid, start_ticks });
        }

        let stdout = spawn_reader(child.stdout.take(), MAX_STDOUT);
        let stderr = spawn_reader(child.stderr.take(), MAX_STDERR);
        // The input is the provider's go: asked once more when it is
        // written, before the pipe closes, the guard can still stop a
        // caller frozen since the spawn (its process, blocked reading,
        // is killed instead of acting once the caller resumes).
        let act = hangar_core::provider::act_guard();
        let group = guard.pgid;
        let writer = match (child.stdin.take(), inv.stdin) {
            (Some(mut pipe), Some(bytes)) => Some(tokio::spawn(async move {
                let res = pipe.write_all(&bytes).await;
                if let Some(refusal) = act.and_then(|g| g().err()) {
                    if let Some(pgid) = group {
                        let _ = killpg(pgid, Signal::SIGKILL);
                    }
                    return Ok(Some(refusal));
                }
                drop(pipe);
                match res {
                    // A provider that does not read its stdin is fine.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(None),
                    Err(e) => Err(e),
                    Ok(()) => Ok(None),
                }
            })),
            _ => None,
        };

        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        let status: ExitStatus = match waited {
            Ok(Ok(status)) => {
                guard.disarm();
                status
            }
            Ok(Err(e)) => return Err(CallError::Io(e)),
            Err(_) => {
                guard.signal(Signal::SIGTERM);
                if tokio::time::timeout(TERM_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        provider.command = %inv.command,
                        instance.name = inv.instance,
                        "provider ignored SIGTERM; killing its process group"
                    );
                }
                // Also takes down children that survived SIGTERM, and the
                // descendants that left the group.
                guard.signal(Signal::SIGKILL);
                let _ = child.wait().await;
                // SIGKILL cannot be refused, but it lands asynchronously:
                // confirm, and say so if something outlives it.
                let deadline = Instant::now() + KILL_CONFIRM;
                let mut survivors = guard.survivors();
                while !survivors.is_empty() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    guard.signal(Signal::SIGKILL);
                    survivors = guard.survivors();
                }
                if !survivors.is_empty() {
                    tracing::error!(
                        provider.command = %inv.command,
                        instance.name = inv.instance,
                        pids = ?survivors,
                        "processes of a timed-out provider call survived SIGKILL"
                    );
                }
                guard.disarm();
                if let Some(w) = writer {
                    w.abort();
                }
                if let Some(h) = stdout {
                    h.abort();
                }
                let err = collect(stderr, PIPE_GRACE).await;
                let log = excerpt(&err, inv.redact, LOG_EXCERPT_CHARS);
                tracing::warn!(
                    provider.command = %inv.command,
                    instance.name = inv.instance,
                    duration_ms = started.elapsed().as_millis() as u64,
                    timeout_s = self.timeout.as_secs(),
                    provider.stderr = %log,
                    "provider call timed out; killed its process group"
                );
                return Err(CallError::TimedOut {
                    after: self.timeout,
                    stderr: excerpt(&err, inv.redact, ERROR_EXCERPT_CHARS),
                });
            }
        };

        if let Some(w) = writer {
            match w.await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(refusal))) => {
                    return Err(CallError::NotActing(format!("not acting: {refusal}")));
                }
                Ok(Err(e)) => return Err(CallError::Io(e)),
                Err(e) => return Err(CallError::Io(io::Error::other(e))),
            }
        }
        let out = collect(stdout, PIPE_GRACE).await;
        let err = collect(stderr, PIPE_GRACE).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let log = excerpt(&err, inv.redact, LOG_EXCERPT_CHARS);

        if status.success() {
            if log.is_empty() {
                tracing::debug!(
                    provider.command = %inv.command,
                    instance.name = inv.instance,
                    duration_ms,
                    "provider call succeeded"
                );
            } else {
                tracing::debug!(
                    provider.command = %inv.command,
                    instance.name = inv.instance,
                    duration_ms,
                    provider.stderr = %log,
                    "provider call succeeded"
                );
            }
            return Ok(CallOutput { stdout: out });
        }

        let stderr_short = excerpt(&err, inv.redact, ERROR_EXCERPT_CHARS);
        if let Some(code) = status.code() {
            tracing::warn!(
                provider.command = %inv.command,
                instance.name = inv.instance,
                duration_ms,
                exit_code = code,
                provider.stderr = %log,
                "provider call failed"
            );
            Err(CallError::Exit {
                code,
                stderr: stderr_short,
                stdout: out,
            })
        } else {
            use std::os::unix::process::ExitStatusExt as _;
            let signal = status.signal().unwrap_or(0);
            tracing::warn!(
                provider.command = %inv.command,
                instance.name = inv.instance,
                duration_ms,
                signal,
                provider.stderr = %log,
                "provider call was killed by a signal"
            );
            Err(CallError::Signal {
                signal,
                stderr: stderr_short,
            })
        }
    }
}

/// When process `pid` started, in clock ticks since boot
/// (`/proc/<pid>/stat` field 22); `None` when it is gone (or a zombie).
pub(crate) fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command, is in parentheses and may hold anything:
    // count the fields after its closing one (field 3 is the state).
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// After a crash: lets the create that ran in `p` finish for up to `wait`
/// (it survives hangard, being its own process group), then stops its
/// group — SIGTERM, [`TERM_GRACE`], SIGKILL — and returns once it is gone.
/// A pid now used by another process (its start time differs) is left
/// alone.
pub(crate) async fn stop_orphan(p: hangar_core::provider::CallProcess, wait: Duration) {
    let alive = || process_start_ticks(p.pid) == Some(p.start_ticks);
    let poll = Duration::from_millis(100);
    let deadline = Instant::now() + wait;
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(poll).await;
    }
    if !alive() {
        return;
    }
    let Ok(pgid) = i32::try_from(p.pid).map(Pid::from_raw) else {
        return;
    };
    tracing::warn!(
        pid = p.pid,
        "an interrupted create still runs; stopping its process group"
    );
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(poll).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let deadline = Instant::now() + TERM_GRACE;
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[test]
    fn start_ticks_of_this_process_and_none_for_a_gone_one() {
        let me = process_start_ticks(std::process::id()).expect("this process runs");
        assert_eq!(process_start_ticks(std::process::id()), Some(me), "stable");
        assert_eq!(process_start_ticks(u32::MAX), None);
    }

    #[tokio::test]
    async fn an_orphaned_group_is_stopped_after_the_wait() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let start_ticks = process_start_ticks(pid).expect("running");
        let p = hangar_core::provider::CallProcess { pid, start_ticks };
        // Not ours to reap in real life; here the test reaps it.
        let reaper = std::thread::spawn(move || child.wait());
        stop_orphan(p, Duration::from_millis(200)).await;
        let status = reaper.join().expect("reaper").expect("wait");
        assert!(!status.success(), "killed: {status:?}");
        assert_eq!(process_start_ticks(pid), None);
        // A start time that does not match is another process: untouched.
        stop_orphan(
            hangar_core::provider::CallProcess {
                pid: std::process::id(),
                start_ticks: 1,
            },
            Duration::ZERO,
        )
        .await;
    }

    #[test]
    fn excerpt_redacts_and_keeps_the_tail() {
        let e = excerpt(b"  token=abc123 failed\n", Some("abc123"), 100);
        assert_eq!(e, "token=*** failed");
        let long = "x".repeat(50) + "END";
        let e = excerpt(long.as_bytes(), None, 10);
        assert_eq!(e, "…xxxxxxxEND");
        assert_eq!(excerpt(&[0xff, b'a'], None, 10), "\u{fffd}a");
    }

    #[test]
    fn v010_commands() {
        assert!(GarmCommand::StopInstance.in_v010());
        assert!(!GarmCommand::GetVersion.in_v010());
        assert!(!GarmCommand::ValidatePoolInfo.in_v010());
    }
}
