//! A throwaway PostgreSQL server for `cargo xtask ci`: the store's tests
//! run on SQLite and on PostgreSQL, and CI must not skip the second half;
//! the cluster fault run (`faults --cluster`, and in `ci`) uses it too.
//! Debian's `postgresql` package (installed when missing), a fresh cluster
//! under `target/ci-postgres` made with `initdb` and started with `pg_ctl`
//! (no systemd, no `pg_ctlcluster`: this may run in a container), trust
//! auth, listening on a free loopback port only, stopped when dropped, so
//! also when a step fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, as_root, is_root, missing_packages, root, run, step};

/// The development server's port (the project's dev notes); never taken.
const DEV_PORT: u16 = 55432;

/// A running test cluster; stopped on drop.
pub(crate) struct TestServer {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`, for
    /// `HANGAR_TEST_POSTGRES_URL`.
    pub(crate) url: String,
}

/// Installs PostgreSQL when missing and starts a fresh cluster.
pub(crate) fn start() -> Result<TestServer> {
    step("a throwaway PostgreSQL server (store tests, cluster faults)");
    install()?;
    let bin = bin_dir()?;
    let as_postgres = is_root();
    let base = cluster_dir(as_postgres)?;
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
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off",
        base.display()
    );
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
/// ci-postgres`, or a temporary folder when the `postgres` user cannot
/// reach `target/`.
fn cluster_dir(as_postgres: bool) -> Result<PathBuf> {
    let preferred = root().join("target/ci-postgres");
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
    let fallback = std::env::temp_dir().join(format!("hangar-ci-postgres-{}", std::process::id()));
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
