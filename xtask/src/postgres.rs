//! A throwaway PostgreSQL server for `cargo xtask ci` and `cargo xtask
//! bench postgres`: the store's tests run on SQLite and on PostgreSQL, and
//! CI must not skip the second half; the cluster fault run (`faults
//! --cluster`, and in `ci`) uses it too; the bench compares the two backends.
//! Debian's `postgresql` package (installed when missing), a fresh cluster
//! under `target/ci-postgres` (`target/bench-postgres`) made with `initdb`
//! and started with `pg_ctl` (no systemd, no `pg_ctlcluster`: this may run
//! in a container), trust auth, listening on a free loopback port only,
//! stopped when dropped, so also when a step fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, as_root, is_root, missing_packages, root, run, step};

/// The development server's port (the project's dev notes); never taken.
const DEV_PORT: u16 = 55432;

/// What the server is for: its settings and its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The tests: they check results, not durability, so `fsync=off`.
    Tests,
    /// `bench postgres`: set as a production server would be. Durability
    /// as on SQLite with `synchronous = "full"` (fsync and synchronous
    /// commit on, so a 202 survives a power loss), memory for a small
    /// dedicated server.
    Bench,
}

impl Purpose {
    /// The server settings (`postgres -c` options) besides port, socket
    /// folder and listen address.
    pub(crate) fn settings(self) -> &'static [&'static str] {
        match self {
            Purpose::Tests => &["max_connections=300", "fsync=off"],
            Purpose::Bench => &[
                "max_connections=300",
                "fsync=on",
                "synchronous_commit=on",
                "full_page_writes=on",
                "wal_sync_method=fdatasync",
                "shared_buffers=256MB",
                "wal_buffers=16MB",
                "max_wal_size=2GB",
                "checkpoint_timeout=15min",
                "effective_cache_size=1GB",
            ],
        }
    }

    fn folder(self) -> &'static str {
        match self {
            Purpose::Tests => "ci-postgres",
            Purpose::Bench => "bench-postgres",
        }
    }
}

/// A running test cluster; stopped on drop.
pub(crate) struct TestServer {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`, for
    /// `HANGAR_TEST_POSTGRES_URL`.
    pub(crate) url: String,
}

/// Installs PostgreSQL when missing and starts a fresh cluster for the
/// tests.
pub(crate) fn start() -> Result<TestServer> {
    start_for(Purpose::Tests)
}

/// Installs PostgreSQL when missing and starts a fresh cluster set for
/// `purpose`.
pub(crate) fn start_for(purpose: Purpose) -> Result<TestServer> {
    step(match purpose {
        Purpose::Tests => "a throwaway PostgreSQL server (store tests, cluster faults)",
        Purpose::Bench => "PostgreSQL for the bench",
    });
    install()?;
    let bin = bin_dir()?;
    let as_postgres = is_root();
    let base = cluster_dir(purpose.folder(), as_postgres)?;
    let data = base.join("data");
    let port = free_port()?;
    let mut server = TestServer {
        bin,
        data,
        as_postgres,
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    };
    run(server.command("initdb").arg("-D").arg(&server.data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    ]))?;
    let mut options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1",
        base.display()
    );
    for setting in purpose.settings() {
        options.push_str(" -c ");
        options.push_str(setting);
    }
    let started = run(server
        .command("pg_ctl")
        .arg("-D")
        .arg(&server.data)
        .args(["-o", &options, "-l"])
        .arg(base.join("pg.log"))
        .args(["-w", "start"]));
    if let Err(e) = started {
        let log = std::fs::read_to_string(base.join("pg.log")).unwrap_or_default();
        // Nothing to stop: forget the data folder so Drop does not try.
        server.data = PathBuf::new();
        return Err(format!("{e}\n--- pg.log ---\n{log}"));
    }
    eprintln!("PostgreSQL test server: {}", server.url);
    Ok(server)
}

impl TestServer {
    /// The postmaster's process id (the first line of `postmaster.pid`):
    /// the server's CPU is its own and its children's.
    pub(crate) fn postmaster_pid(&self) -> Result<u32> {
        let file = self.data.join("postmaster.pid");
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("{}: no process id on its first line", file.display()))
    }

    /// The cluster's `psql`.
    pub(crate) fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// A PostgreSQL binary, as the `postgres` user when running as root
    /// (PostgreSQL refuses to run as root).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.data.as_os_str().is_empty() {
            return;
        }
        step("stop the PostgreSQL test server");
        if let Err(e) = run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]))
        {
            eprintln!("!!! could not stop the PostgreSQL test server: {e}");
        }
    }
}

fn install() -> Result {
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("!!! not a Debian system: PostgreSQL's initdb and pg_ctl must be installed");
        return Ok(());
    }
    let missing = missing_packages(&["postgresql"]);
    if missing.is_empty() {
        eprintln!("all present: postgresql");
        return Ok(());
    }
    eprintln!("installing: {}", missing.join(" "));
    run(as_root(&["apt-get", "update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    run(as_root(&args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `/usr/lib/postgresql/<newest>/bin`, or the folder of `initdb` on PATH.
fn bin_dir() -> Result<PathBuf> {
    let versions = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(versions)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .map_err(|e| format!("cannot look for initdb: {e}"))?;
    let path = String::from_utf8_lossy(&which.stdout).trim().to_owned();
    Path::new(&path)
        .parent()
        .filter(|_| !path.is_empty())
        .map(Path::to_path_buf)
        .ok_or_else(|| "PostgreSQL's initdb was not found (apt-get install postgresql)".into())
}

/// A fresh, empty folder for the cluster, its socket and its log, which
/// the `postgres` user may write when it runs the server: `target/
/// <name>`, or a temporary folder when the `postgres` user cannot reach
/// `target/`.
fn cluster_dir(name: &str, as_postgres: bool) -> Result<PathBuf> {
    let preferred = root().join("target").join(name);
    stop_leftover(&preferred, as_postgres);
    let fresh = |dir: &Path| -> Result {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(dir))?;
        }
        Ok(())
    };
    fresh(&preferred)?;
    let reachable = !as_postgres
        || Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&preferred)
            .status()
            .is_ok_and(|s| s.success());
    if reachable {
        return Ok(preferred);
    }
    let fallback = std::env::temp_dir().join(format!("hangar-{name}-{}", std::process::id()));
    eprintln!(
        "the postgres user cannot write {}: using {}",
        preferred.display(),
        fallback.display()
    );
    fresh(&fallback)?;
    Ok(fallback)
}

/// A server left running by an interrupted earlier run holds the folder.
fn stop_leftover(dir: &Path, as_postgres: bool) {
    let data = dir.join("data");
    if !data.join("postmaster.pid").exists() {
        return;
    }
    if let Ok(bin) = bin_dir() {
        let mut c = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
            c
        } else {
            Command::new(bin.join("pg_ctl"))
        };
        let _ = run(c
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"]));
    }
}

/// A loopback port nothing listens on right now (the kernel's pick), never
/// the development server's.
fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free loopback port: {e}"))?
            .port();
        if port != DEV_PORT && port != 5432 {
            return Ok(port);
        }
    }
    Err("cannot find a free loopback port".into())
}
