//! `hangar-fake-provider`: a garm-compatible external provider that makes no
//! machines, so end-to-end tests and benchmarks can drive the real `hangard`
//! through its external-provider path.
//!
//! It speaks interface v0.1.0 and v0.1.1 (`GARM_COMMAND` and friends). Its
//! config file (TOML at `GARM_PROVIDER_CONFIG_FILE`):
//!
//! ```toml
//! state_dir = "/tmp/fake-provider"   # one JSON file per instance, calls.log
//! boot = "simulate"                  # "none": runners never come up;
//!                                    # "save": keep the bootstrap JSON in
//!                                    # state_dir/boot/<name>.json, boot nothing
//! create_delay_ms = 0                # how long each CreateInstance takes
//! fail_create = "exit1"              # optional: every CreateInstance fails
//!                                    # once its input is checked and
//!                                    # create_delay_ms has passed: "exit1"
//!                                    # (exit 1, a message on stderr) or
//!                                    # "garbage" (exit 0, an HTML error page)
//! caller = "r1"                      # optional: appended to every calls.log
//!                                    # line, so replicas sharing one
//!                                    # state_dir (each with its own config
//!                                    # file) can be told apart
//!
//! # Counted faults (fail_create above is the standing every-create case;
//! # these fire before the call is looked at). The n-th call of `command`
//! # (counted per command in state_dir/faults/, from 1) fails when
//! # n % every == offset % every, at most `times` times. The first rule
//! # that applies wins.
//! [[fault]]
//! command = "CreateInstance"         # or DeleteInstance, ListInstances, …
//! kind = "error"                     # exit 1 with a message on stderr;
//!                                    # "garbage": exit 0, nonsense on stdout,
//!                                    #   nothing made;
//!                                    # "not_found": exit 30; a delete
//!                                    #   removes the VM first (as when an
//!                                    #   earlier attempt that timed out had),
//!                                    #   anything else does nothing;
//!                                    # "delay": sleep delay_ms, then do the
//!                                    #   call (a hang when longer than
//!                                    #   hangard's call_timeout_secs)
//! every = 1
//! offset = 0
//! times = 4294967295
//! delay_ms = 0
//! ```
//!
//! Every call appends `<command> <instance or -> <unix µs>` to
//! `state_dir/calls.log` (followed by ` <caller>` when the config names one),
//! and an injected fault `FAULT <kind> <command>
//! <instance or -> <unix µs>`. With `boot = "simulate"`, CreateInstance starts a
//! detached `hangar-fake-provider boot <bootstrap-file>` (own process group,
//! output in `state_dir/boot/<name>.log`) that walks through the runner's
//! bootstrap calls ([`hangar_testkit::runner_sim::boot`]) and exits.
//!
//! Exit codes: 0 success, 30 not found, 31 duplicate, 1 any other failure,
//! 2 a broken invocation (missing variables, unreadable config).

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hangar_core::Secret;
use hangar_core::provider::{BootstrapParams, ProxySettings, RunnerTool};
use serde::{Deserialize, Serialize};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 30;
const EXIT_DUPLICATE: u8 = 31;

/// The provider's own config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    state_dir: PathBuf,
    #[serde(default)]
    boot: Boot,
    #[serde(default)]
    create_delay_ms: u64,
    #[serde(default)]
    fault: Vec<FaultRule>,
    fail_create: Option<FailCreate>,
    caller: Option<String>,
}

/// How every create fails, when it is made to (a provider that is broken,
/// not one with a passing hiccup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FailCreate {
    /// Exit 1 with a message on stderr, as a provider whose cloud refuses.
    Exit1,
    /// Exit 0 with output that is no instance JSON.
    Garbage,
}

/// One injected fault (see the module docs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRule {
    command: String,
    kind: FaultKind,
    #[serde(default = "one")]
    every: u64,
    #[serde(default)]
    offset: u64,
    #[serde(default = "unlimited")]
    times: u64,
    #[serde(default)]
    delay_ms: u64,
}

fn one() -> u64 {
    1
}

fn unlimited() -> u64 {
    u64::from(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    Error,
    Garbage,
    NotFound,
    Delay,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Boot {
    #[default]
    Simulate,
    None,
    /// Writes the bootstrap JSON where a test can boot the instance itself,
    /// as a garm provider's VM would (e2e `garm_boot`).
    Save,
}

/// A failed call: what to print on stderr and exit with.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn io(what: &str, e: std::io::Error) -> Self {
        Self::new(EXIT_FAILURE, format!("{what}: {e}"))
    }
}

/// The part of garm's bootstrap document this provider uses.
#[derive(Deserialize)]
struct Bootstrap {
    name: String,
    #[serde(default)]
    tools: Vec<Tool>,
    #[serde(default)]
    repo_url: String,
    #[serde(rename = "callback-url", default)]
    callback_url: String,
    #[serde(rename = "metadata-url", default)]
    metadata_url: String,
    #[serde(rename = "instance-token", default)]
    instance_token: String,
    #[serde(rename = "github-runner-group", default)]
    github_runner_group: String,
    #[serde(rename = "ca-cert-bundle", default)]
    ca_cert_bundle: Option<String>,
    #[serde(default)]
    arch: String,
    #[serde(default)]
    os_type: String,
    #[serde(default)]
    flavor: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    pool_id: String,
    #[serde(default)]
    jit_config_enabled: bool,
}

#[derive(Deserialize)]
struct Tool {
    os: String,
    architecture: String,
    download_url: String,
    filename: String,
    #[serde(default)]
    sha256_checksum: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Address {
    address: String,
    #[serde(rename = "type")]
    kind: String,
}

/// What is stored per instance and printed back (garm's
/// `ProviderInstance`, plus the tags a cloud would keep).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Instance {
    provider_id: String,
    name: String,
    os_type: String,
    os_name: String,
    os_version: String,
    os_arch: String,
    status: String,
    addresses: Vec<Address>,
    pool_id: String,
    controller_id: String,
    image: String,
    flavor: String,
    created_unix_micros: u128,
}

/// The `GARM_*` variables of one call.
struct Env {
    command: String,
    controller_id: String,
    pool_id: String,
    instance_id: String,
    interface_version: String,
    extra_specs: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn load_config() -> Result<Config, Failure> {
    let path = var("GARM_PROVIDER_CONFIG_FILE");
    if path.is_empty() {
        return Err(Failure::new(
            EXIT_USAGE,
            "missing GARM_PROVIDER_CONFIG_FILE",
        ));
    }
    let text = fs::read_to_string(&path)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("reading config {path}: {e}")))?;
    toml::from_str(&text).map_err(|e| Failure::new(EXIT_USAGE, format!("config {path}: {e}")))
}

fn instances_dir(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("instances")
}

fn boot_dir(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("boot")
}

/// Counts this call of `command` (under a file lock, so concurrent calls
/// get distinct numbers) and returns the fault rule that applies to it.
fn fault_for<'a>(cfg: &'a Config, env: &Env) -> Result<Option<&'a FaultRule>, Failure> {
    if !cfg.fault.iter().any(|r| r.command == env.command) {
        return Ok(None);
    }
    let dir = cfg.state_dir.join("faults");
    fs::create_dir_all(&dir).map_err(|e| Failure::io("creating faults dir", e))?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(format!("{}.count", env.command)))
        .map_err(|e| Failure::io("opening fault counter", e))?;
    f.lock()
        .map_err(|e| Failure::io("locking fault counter", e))?;
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| Failure::io("reading fault counter", e))?;
    let n = text.trim().parse::<u64>().unwrap_or(0) + 1;
    use std::io::{Seek as _, SeekFrom};
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.set_len(0))
        .and_then(|()| f.write_all(n.to_string().as_bytes()))
        .map_err(|e| Failure::io("writing fault counter", e))?;
    drop(f);
    Ok(cfg.fault.iter().find(|r| {
        let every = r.every.max(1);
        r.command == env.command && n % every == r.offset % every && n.div_ceil(every) <= r.times
    }))
}

/// Applies a fault: `Ok(())` lets the call go on (after a delay).
fn inject(cfg: &Config, env: &Env, rule: &FaultRule) -> Result<(), Failure> {
    let kind = match rule.kind {
        FaultKind::Error => "error",
        FaultKind::Garbage => "garbage",
        FaultKind::NotFound => "not_found",
        FaultKind::Delay => "delay",
    };
    let instance = if env.instance_id.is_empty() {
        "-"
    } else {
        &env.instance_id
    };
    let line = format!(
        "FAULT {kind} {} {instance} {}\n",
        env.command,
        unix_micros()
    );
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.state_dir.join("calls.log"))
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| Failure::io("appending to calls.log", e))?;
    match rule.kind {
        FaultKind::Error => Err(Failure::new(
            EXIT_FAILURE,
            format!("injected failure of {}", env.command),
        )),
        FaultKind::NotFound => {
            if env.command == "DeleteInstance" {
                delete(cfg, env)?;
            }
            Err(Failure::new(
                EXIT_NOT_FOUND,
                format!("injected: instance {:?} not found", env.instance_id),
            ))
        }
        FaultKind::Garbage => Err(Failure::new(0, "")),
        FaultKind::Delay => {
            std::thread::sleep(Duration::from_millis(rule.delay_ms));
            Ok(())
        }
    }
}

fn log_call(cfg: &Config, env: &Env) -> Result<(), Failure> {
    let instance = if env.instance_id.is_empty() {
        "-"
    } else {
        &env.instance_id
    };
    let line = match &cfg.caller {
        Some(c) => format!("{} {} {} {c}\n", env.command, instance, unix_micros()),
        None => format!("{} {} {}\n", env.command, instance, unix_micros()),
    };
    // One write of one short line to an O_APPEND file: concurrent calls
    // never interleave within a line.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.state_dir.join("calls.log"))
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| Failure::io("appending to calls.log", e))
}

/// Writes `bytes` to `dest` via a temp file in the same directory, so
/// readers never see half a file. `no_clobber` refuses an existing `dest`.
fn write_atomic(dest: &Path, bytes: &[u8], no_clobber: bool) -> Result<(), std::io::Error> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        std::process::id(),
        unix_micros()
    ));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let res = if no_clobber {
        // link() fails when dest exists: an atomic create-if-absent.
        fs::hard_link(&tmp, dest)
    } else {
        fs::rename(&tmp, dest).map(|_| ())
    };
    let _ = fs::remove_file(&tmp);
    res
}

fn provider_id_for(name: &str) -> String {
    format!("fake-{name}")
}

/// `GARM_INSTANCE_ID` is the provider id, or the name when garm has none.
fn find(cfg: &Config, id: &str) -> Result<(PathBuf, Instance), Failure> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(Failure::new(EXIT_USAGE, format!("bad instance id {id:?}")));
    }
    let dir = instances_dir(cfg);
    let mut candidates = vec![id];
    if let Some(name) = id.strip_prefix("fake-") {
        candidates.push(name);
    }
    for name in candidates {
        let path = dir.join(format!("{name}.json"));
        match fs::read(&path) {
            Ok(bytes) => {
                let inst: Instance = serde_json::from_slice(&bytes)
                    .map_err(|e| Failure::new(EXIT_FAILURE, format!("{path:?}: {e}")))?;
                return Ok((path, inst));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Failure::io("reading instance", e)),
        }
    }
    Err(Failure::new(
        EXIT_NOT_FOUND,
        format!("instance {id:?} not found"),
    ))
}

fn all_instances(cfg: &Config) -> Result<Vec<Instance>, Failure> {
    let dir = instances_dir(cfg);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Failure::io("listing instances", e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Failure::io("listing instances", e))?
            .path();
        let is_instance = path.extension().is_some_and(|x| x == "json")
            && !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
        if !is_instance {
            continue;
        }
        match fs::read(&path) {
            Ok(bytes) => out.push(
                serde_json::from_slice(&bytes)
                    .map_err(|e| Failure::new(EXIT_FAILURE, format!("{path:?}: {e}")))?,
            ),
            // Deleted by a concurrent call since read_dir.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::io("reading instance", e)),
        }
    }
    out.sort_by(|a: &Instance, b: &Instance| a.name.cmp(&b.name));
    Ok(out)
}

fn to_json(v: &impl Serialize) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::io("reading stdin", e))?;
    Ok(buf)
}

fn decode_extra_specs(
    encoded: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
    if encoded.is_empty() {
        return Ok(serde_json::Map::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| {
            Failure::new(
                EXIT_FAILURE,
                format!("GARM_POOL_EXTRASPECS is not base64: {e}"),
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::new(
            EXIT_FAILURE,
            format!("GARM_POOL_EXTRASPECS is not a JSON object: {e}"),
        )
    })
}

fn create(cfg: &Config, env: &Env) -> Result<String, Failure> {
    let input = read_stdin()?;
    let b: Bootstrap = serde_json::from_slice(&input)
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("bootstrap params on stdin: {e}")))?;
    if b.name.is_empty() || b.name.contains('/') || b.name.starts_with('.') {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!("bad instance name {:?}", b.name),
        ));
    }
    if env.pool_id.is_empty() {
        return Err(Failure::new(EXIT_USAGE, "missing GARM_POOL_ID"));
    }
    if !b.pool_id.is_empty() && b.pool_id != env.pool_id {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!(
                "pool_id {} on stdin but GARM_POOL_ID {}",
                b.pool_id, env.pool_id
            ),
        ));
    }
    if cfg.create_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(cfg.create_delay_ms));
    }
    match cfg.fail_create {
        Some(FailCreate::Exit1) => {
            return Err(Failure::new(
                EXIT_FAILURE,
                "simulated failure: the cloud refused the instance",
            ));
        }
        Some(FailCreate::Garbage) => return Ok("<html>502 Bad Gateway</html>".into()),
        None => {}
    }
    let inst = Instance {
        provider_id: provider_id_for(&b.name),
        name: b.name.clone(),
        os_type: if b.os_type.is_empty() {
            "linux".into()
        } else {
            b.os_type.clone()
        },
        os_name: "fake-os".into(),
        os_version: "1.0".into(),
        os_arch: b.arch.clone(),
        status: "running".into(),
        addresses: vec![Address {
            address: "127.0.0.1".into(),
            kind: "private".into(),
        }],
        pool_id: env.pool_id.clone(),
        controller_id: env.controller_id.clone(),
        image: b.image.clone(),
        flavor: b.flavor.clone(),
        created_unix_micros: unix_micros(),
    };
    let dir = instances_dir(cfg);
    fs::create_dir_all(&dir).map_err(|e| Failure::io("creating state dir", e))?;
    let json = to_json(&inst)?;
    match write_atomic(&dir.join(format!("{}.json", b.name)), json.as_bytes(), true) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Failure::new(
                EXIT_DUPLICATE,
                format!("instance {:?} already exists", b.name),
            ));
        }
        Err(e) => return Err(Failure::io("writing instance", e)),
    }
    if cfg.boot == Boot::Save {
        let dir = boot_dir(cfg);
        let saved = fs::create_dir_all(&dir)
            .and_then(|()| write_atomic(&dir.join(format!("{}.json", b.name)), &input, false));
        if let Err(e) = saved {
            let _ = fs::remove_file(instances_dir(cfg).join(format!("{}.json", b.name)));
            return Err(Failure::io("saving bootstrap", e));
        }
    }
    if cfg.boot == Boot::Simulate
        && let Err(f) = start_boot(cfg, &b.name, &input)
    {
        // A failed create leaves nothing behind.
        let _ = fs::remove_file(dir.join(format!("{}.json", b.name)));
        return Err(f);
    }
    Ok(json)
}

/// Starts the detached boot simulation. Its stdio goes to a log file, not
/// to our pipes, so the caller sees this call end as soon as we exit.
fn start_boot(cfg: &Config, name: &str, bootstrap: &[u8]) -> Result<(), Failure> {
    let dir = boot_dir(cfg);
    fs::create_dir_all(&dir).map_err(|e| Failure::io("creating boot dir", e))?;
    // Holds the instance token: owner-only, and removed by the child once
    // read.
    let file = dir.join(format!("{name}.json"));
    write_atomic(&file, bootstrap, false).map_err(|e| Failure::io("writing bootstrap", e))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map_err(|e| Failure::io("opening boot log", e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| Failure::io("opening boot log", e))?;
    let exe = std::env::current_exe().map_err(|e| Failure::io("locating myself", e))?;
    Command::new(exe)
        .arg("boot")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Out of the caller's process group: a timeout there must not end
        // an instance that was created successfully.
        .process_group(0)
        .spawn()
        .map_err(|e| Failure::io("starting boot simulation", e))?;
    Ok(())
}

fn set_status(cfg: &Config, env: &Env, status: &str) -> Result<String, Failure> {
    let (path, mut inst) = find(cfg, &env.instance_id)?;
    inst.status = status.to_owned();
    write_atomic(&path, to_json(&inst)?.as_bytes(), false)
        .map_err(|e| Failure::io("writing instance", e))?;
    Ok(String::new())
}

fn delete(cfg: &Config, env: &Env) -> Result<String, Failure> {
    match find(cfg, &env.instance_id) {
        Ok((path, _)) => match fs::remove_file(&path) {
            Ok(()) => Ok(String::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Failure::io("deleting instance", e)),
        },
        // garm: deleting something that does not exist is a no-op.
        Err(f) if f.code == EXIT_NOT_FOUND => Ok(String::new()),
        Err(f) => Err(f),
    }
}

fn validate_pool(env: &Env) -> Result<String, Failure> {
    let input = read_stdin()?;
    let image = if input.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        let b: Bootstrap = serde_json::from_slice(&input)
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("pool info on stdin: {e}")))?;
        b.image
    };
    if image.is_empty() || image == "invalid" {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!("image {image:?} does not exist"),
        ));
    }
    let specs = decode_extra_specs(&env.extra_specs)?;
    if let Some(k) = specs.keys().find(|k| k.as_str() != "fake_option") {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!("unknown extra spec {k:?} (only \"fake_option\" is accepted)"),
        ));
    }
    Ok(String::new())
}

fn config_schema() -> serde_json::Value {
    serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "hangar-fake-provider config",
        "type": "object",
        "properties": {
            "state_dir": {"type": "string", "description": "instances, calls.log and boot logs"},
            "boot": {"type": "string", "enum": ["simulate", "none"]},
            "create_delay_ms": {"type": "integer", "minimum": 0},
            "fault": {"type": "array", "items": {"type": "object"}},
            "caller": {"type": "string", "description": "appended to every calls.log line"}
        },
        "required": ["state_dir"],
        "additionalProperties": false
    })
}

fn extra_specs_schema() -> serde_json::Value {
    serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "hangar-fake-provider extra specs",
        "type": "object",
        "properties": {"fake_option": {"description": "accepted and ignored"}},
        "additionalProperties": false
    })
}

fn run() -> Result<String, Failure> {
    let env = Env {
        command: var("GARM_COMMAND"),
        controller_id: var("GARM_CONTROLLER_ID"),
        pool_id: var("GARM_POOL_ID"),
        instance_id: var("GARM_INSTANCE_ID"),
        interface_version: var("GARM_INTERFACE_VERSION"),
        extra_specs: var("GARM_POOL_EXTRASPECS"),
    };
    if env.command.is_empty() {
        return Err(Failure::new(
            EXIT_USAGE,
            "missing GARM_COMMAND (hangard or garm sets it; see --help)",
        ));
    }
    if env.controller_id.is_empty() {
        return Err(Failure::new(EXIT_USAGE, "missing GARM_CONTROLLER_ID"));
    }
    let v011 = match env.interface_version.as_str() {
        "" | "v0.1.0" => false,
        "v0.1.1" => true,
        other => {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("unsupported interface version {other:?}"),
            ));
        }
    };
    let cfg = load_config()?;
    fs::create_dir_all(&cfg.state_dir).map_err(|e| Failure::io("creating state dir", e))?;
    log_call(&cfg, &env)?;
    if let Some(rule) = fault_for(&cfg, &env)? {
        inject(&cfg, &env, rule)?;
    }
    let needs_instance = matches!(
        env.command.as_str(),
        "DeleteInstance" | "GetInstance" | "StartInstance" | "StopInstance"
    );
    if needs_instance && env.instance_id.is_empty() {
        return Err(Failure::new(EXIT_USAGE, "missing GARM_INSTANCE_ID"));
    }
    match (env.command.as_str(), v011) {
        ("CreateInstance", _) => create(&cfg, &env),
        ("DeleteInstance", _) => delete(&cfg, &env),
        ("GetInstance", _) => to_json(&find(&cfg, &env.instance_id)?.1),
        ("ListInstances", _) => {
            if env.pool_id.is_empty() {
                return Err(Failure::new(EXIT_USAGE, "missing GARM_POOL_ID"));
            }
            let list: Vec<Instance> = all_instances(&cfg)?
                .into_iter()
                .filter(|i| i.pool_id == env.pool_id && i.controller_id == env.controller_id)
                .collect();
            to_json(&list)
        }
        ("RemoveAllInstances", _) => {
            for inst in all_instances(&cfg)? {
                if inst.controller_id == env.controller_id {
                    let path = instances_dir(&cfg).join(format!("{}.json", inst.name));
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Failure::io("deleting instance", e)),
                    }
                }
            }
            Ok(String::new())
        }
        ("StartInstance", _) => set_status(&cfg, &env, "running"),
        ("StopInstance", _) => set_status(&cfg, &env, "stopped"),
        ("GetVersion", true) => Ok(format!("v{}", env!("CARGO_PKG_VERSION"))),
        ("GetSupportedInterfaceVersions", true) => to_json(&["v0.1.0", "v0.1.1"]),
        ("ValidatePoolInfo", true) => validate_pool(&env),
        ("GetConfigJSONSchema", true) => to_json(&config_schema()),
        ("GetExtraSpecsJSONSchema", true) => to_json(&extra_specs_schema()),
        (other, _) => Err(Failure::new(
            EXIT_FAILURE,
            format!(
                "unknown command {other:?} for interface {}",
                if v011 { "v0.1.1" } else { "v0.1.0" }
            ),
        )),
    }
}

/// The detached half of CreateInstance with `boot = "simulate"`.
fn boot(file: &Path) -> ExitCode {
    let bytes = match fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("boot: reading {file:?}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // The token has no business on disk any longer than this.
    let _ = fs::remove_file(file);
    let b: Bootstrap = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("boot: bootstrap params: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let ca_cert_bundle = b.ca_cert_bundle.as_deref().and_then(|encoded| {
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|pem| String::from_utf8(pem).ok())
    });
    let params = BootstrapParams {
        repo_url: b.repo_url,
        metadata_url: b.metadata_url,
        callback_url: b.callback_url,
        instance_token: Secret::new(b.instance_token),
        jit_config_enabled: b.jit_config_enabled,
        runner_group: Some(b.github_runner_group).filter(|g| !g.is_empty()),
        tools: b
            .tools
            .into_iter()
            .map(|t| RunnerTool {
                os: t.os,
                architecture: t.architecture,
                download_url: t.download_url,
                filename: t.filename,
                sha256_checksum: t.sha256_checksum,
            })
            .collect(),
        ca_cert_bundle,
        proxy: ProxySettings::default(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("boot: runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(hangar_testkit::runner_sim::boot(&params)) {
        Ok(outcome) => {
            println!("boot {}: {outcome:?}", b.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("boot {}: {e}", b.name);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

const USAGE: &str = "\
hangar-fake-provider: a garm-compatible external provider that makes no
machines, for tests, demos and benchmarks of hangard's external-provider path.

hangard (or garm) runs it with the call in the environment, not in arguments:
  GARM_COMMAND                CreateInstance | DeleteInstance | GetInstance |
                              ListInstances | RemoveAllInstances | StartInstance |
                              StopInstance; v0.1.1 also GetVersion,
                              GetSupportedInterfaceVersions, ValidatePoolInfo,
                              GetConfigJSONSchema, GetExtraSpecsJSONSchema
  GARM_PROVIDER_CONFIG_FILE   its TOML config (state_dir, boot, create_delay_ms,
                              fail_create, [[fault]] rules)
  GARM_CONTROLLER_ID, GARM_POOL_ID, GARM_INSTANCE_ID, GARM_INTERFACE_VERSION
  CreateInstance reads the bootstrap JSON on stdin.

Use it from hangard's config:
  [[provider]]
  name = \"fake-ext\"
  kind = \"external\"
  [provider.external]
  executable = \"/path/to/hangar-fake-provider\"
  config_file = \"/path/to/fake-provider.toml\"

usage: hangar-fake-provider               (a call, as above)
       hangar-fake-provider boot FILE     (simulate a runner's boot from FILE)
       hangar-fake-provider --help

Exit codes: 0 success, 30 not found, 31 duplicate, 1 other failure, 2 usage.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if matches!(
        args.get(1).map(String::as_str),
        Some("-h" | "--help" | "help")
    ) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.get(1).map(String::as_str) == Some("boot") {
        let Some(file) = args.get(2) else {
            eprintln!("usage: hangar-fake-provider boot <bootstrap-file>");
            return ExitCode::from(EXIT_USAGE);
        };
        return boot(Path::new(file));
    }
    match run() {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        // An injected "garbage" answer: success, and nonsense on stdout.
        Err(f) if f.code == 0 => {
            println!("<html><body>502 Bad Gateway</body></html>\n\u{1}\u{7f}{{\"id\": ");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("hangar-fake-provider: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
