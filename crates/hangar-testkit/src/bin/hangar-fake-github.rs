//! `hangar-fake-github`: FakeGitHub as a process, for demos and benchmarks.
//!
//! `hangar-fake-github [--port P] [--webhook-url URL --webhook-secret S]
//! [--job-duration-ms N]` serves until killed and prints its base URL. Queue
//! jobs with `POST /_fake/jobs {"repo": "owner/name", "labels": [...]}`;
//! inspect with `GET /_fake/jobs`, `/_fake/runners`, `/_fake/deliveries`.

use std::time::Duration;

use hangar_testkit::fake_github::FakeGitHub;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
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
}
