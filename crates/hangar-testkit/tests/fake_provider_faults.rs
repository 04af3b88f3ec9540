//! The `hangar-fake-provider` executable's `[[fault]]` rules: which call
//! of a command fails, how (exit 1, garbage on stdout with exit 0, exit 30,
//! a delay), and that a failed create leaves no VM while an exit-30 delete
//! has removed it — what the fault suite's provider row relies on.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn call(config: &Path, command: &str, instance: &str, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hangar-fake-provider"))
        .env_clear()
        .env("GARM_COMMAND", command)
        .env("GARM_CONTROLLER_ID", "c0ffee00-0000-4000-8000-000000000001")
        .env("GARM_POOL_ID", "b0b00000-0000-4000-8000-000000000002")
        .env("GARM_INSTANCE_ID", instance)
        .env("GARM_PROVIDER_CONFIG_FILE", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn create(config: &Path, name: &str) -> Output {
    call(
        config,
        "CreateInstance",
        "",
        &format!(r#"{{"name": "{name}"}}"#),
    )
}

#[test]
fn fault_rules_pick_calls_by_number_and_fail_as_told() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("fake.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{}"
boot = "none"

[[fault]]
command = "CreateInstance"
kind = "error"
every = 2

[[fault]]
command = "CreateInstance"
kind = "garbage"
every = 3

[[fault]]
command = "DeleteInstance"
kind = "not_found"
times = 1

[[fault]]
command = "GetInstance"
kind = "delay"
delay_ms = 300
"#,
            state.display()
        ),
    )
    .unwrap();
    let vm = |name: &str| state.join("instances").join(format!("{name}.json"));

    // Calls 1..=5: ok, error, garbage, error, ok.
    let codes: Vec<(Option<i32>, bool)> = (1..=5)
        .map(|i| {
            let out = create(&config, &format!("vm{i}"));
            let json = serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok();
            (out.status.code(), json)
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (Some(0), true),
            (Some(1), false),
            (Some(0), false),
            (Some(1), false),
            (Some(0), true)
        ]
    );
    assert!(vm("vm1").exists() && vm("vm5").exists());
    for failed in ["vm2", "vm3", "vm4"] {
        assert!(!vm(failed).exists(), "{failed}: a failed create made a VM");
    }

    // The first delete answers "not found" (30) yet the VM is gone, as when
    // an earlier attempt that timed out had removed it; the next is normal.
    let out = call(&config, "DeleteInstance", "vm1", "");
    assert_eq!(out.status.code(), Some(30));
    assert!(!vm("vm1").exists());
    let out = call(&config, "DeleteInstance", "vm5", "");
    assert_eq!(out.status.code(), Some(0));
    assert!(!vm("vm5").exists());

    // A delay holds the call, then does it.
    let started = std::time::Instant::now();
    let out = call(&config, "GetInstance", "vm9", "");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(out.status.code(), Some(30), "vm9 never existed");

    // Each injected fault is logged next to the calls.
    let log = std::fs::read_to_string(state.join("calls.log")).unwrap();
    let faults: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("FAULT "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(faults, ["error", "garbage", "error", "not_found", "delay"]);
}
