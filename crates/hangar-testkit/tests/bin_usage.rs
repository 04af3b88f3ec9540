//! The testkit's two executables explain themselves: `--help` prints usage
//! and exits 0 (it does not start a server or act as a provider call), and
//! a call without its environment points at `--help`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `bin args`, killing it if it is still running after a generous
/// bound (a server that started instead of printing its usage).
fn run(bin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("GARM_COMMAND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().ok();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{bin} {args:?} still running after 30 s; stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn fake_github_help_prints_usage_and_serves_nothing() {
    for flag in ["--help", "-h"] {
        let out = run(env!("CARGO_BIN_EXE_hangar-fake-github"), &[flag]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("usage: hangar-fake-github"), "{text}");
        assert!(text.contains("--webhook-url"), "{text}");
        assert!(!text.contains("http://127.0.0.1"), "no server: {text}");
    }
    let out = run(env!("CARGO_BIN_EXE_hangar-fake-github"), &["--prot", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown argument \"--prot\""), "{err}");
}

#[test]
fn fake_provider_help_prints_usage() {
    for flag in ["--help", "-h"] {
        let out = run(env!("CARGO_BIN_EXE_hangar-fake-provider"), &[flag]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("GARM_COMMAND"), "{text}");
        assert!(text.contains("[[provider]]"), "{text}");
        assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{out:?}");
    }
    // A call without its environment still fails as a broken invocation,
    // and says where to look.
    let out = run(env!("CARGO_BIN_EXE_hangar-fake-provider"), &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing GARM_COMMAND") && err.contains("--help"),
        "{err}"
    );
}
