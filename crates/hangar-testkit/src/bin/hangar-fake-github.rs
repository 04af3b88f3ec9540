//! `hangar-fake-github`: FakeGitHub as a process, for demos and benchmarks.
//!
//! `hangar-fake-github [--port P] [--webhook-url URL --webhook-secret S]
//! [--job-duration-ms N]` serves until killed and prints its base URL. Queue
//! jobs with `POST /_fake/jobs {"repo": "owner/name", "labels": [...]}`;
//! inspect with `GET /_fake/jobs`, `/_fake/runners`, `/_fake/deliveries`.

use std::process::ExitCode;
use std::time::Duration;

use hangar_testkit::fake_github::FakeGitHub;

const USAGE: &str = "\
hangar-fake-github: a loopback stand-in for GitHub's REST API (runners, JIT
configs, jobs, hooks) that sends signed workflow_job webhooks. For demos,
benchmarks and tests; never for production.

usage: hangar-fake-github [--port P] [--webhook-url URL --webhook-secret S]
                          [--job-duration-ms N]

  --port P              listen on 127.0.0.1:P (default: any free port)
  --webhook-url URL     where to send workflow_job deliveries
  --webhook-secret S    the secret they are signed with (X-Hub-Signature-256)
  --job-duration-ms N   how long a job runs once a runner takes it
  -h, --help            this text

Prints its base URL on stdout, then serves until Ctrl-C. Queue a job with
POST /_fake/jobs {\"repo\": \"owner/name\", \"labels\": [...]}; inspect
GET /_fake/jobs, /_fake/runners, /_fake/deliveries.";

/// The flags that take a value.
const FLAGS: &[&str] = &[
    "--port",
    "--webhook-url",
    "--webhook-secret",
    "--job-duration-ms",
];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Refuses what it does not know before anything starts.
fn check(args: &[String]) -> Result<(), String> {
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        if !FLAGS.contains(&a.as_str()) {
            return Err(format!("unknown argument {a:?}"));
        }
        if rest.next().is_none() {
            return Err(format!("{a} needs a value"));
        }
    }
    if let Some(p) = arg(args, "--port")
        && p.parse::<u16>().is_err()
    {
        return Err(format!("--port {p:?} is not a port number"));
    }
    if let Some(ms) = arg(args, "--job-duration-ms")
        && ms.parse::<u64>().is_err()
    {
        return Err(format!("--job-duration-ms {ms:?} is not a number"));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args
        .iter()
        .skip(1)
        .any(|a| matches!(a.as_str(), "-h" | "--help" | "help"))
    {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = check(&args) {
        eprintln!("hangar-fake-github: {e}\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let port: u16 = arg(&args, "--port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let gh = FakeGitHub::start_on(port).await;
    if let (Some(url), Some(secret)) = (arg(&args, "--webhook-url"), arg(&args, "--webhook-secret"))
    {
        gh.set_webhook_target(url, secret);
    }
    if let Some(ms) = arg(&args, "--job-duration-ms").and_then(|v| v.parse().ok()) {
        gh.set_job_duration(Duration::from_millis(ms));
    }
    println!("{}", gh.url());
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
