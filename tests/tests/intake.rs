//! Webhook intake against the real `hangard`: the real GitHub payloads for
//! every action, signature checks before parsing, size limits, malformed
//! and unknown deliveries, duplicates and out-of-order deliveries, and the
//! shared `/webhooks` route (repository hooks and GitHub App hooks).

use std::path::PathBuf;

use hangar_e2e::{Api, Daemon, free_port, sign, write_config};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const SECRET: &str = "intake-secret";

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/github-webhooks")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Env {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    api: Api,
    hello: String,
    lineville: String,
}

async fn env() -> Env {
    env_with("webhook_body_limit = 65536\n").await
}

/// A daemon whose `[server]` section also has `server_keys`.
async fn env_with(server_keys: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("public_url = ", &format!("{server_keys}public_url = "));
    std::fs::write(
        &config,
        text + "\n[[provider]]\nname = \"fake\"\nkind = \"fake\"\n[provider.fake]\nboot = \"none\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    api.add_github(&gh.url()).await.unwrap();
    let hello = api
        .add_repo("Codertocat", "Hello-World", SECRET)
        .await
        .unwrap();
    let lineville = api
        .add_repo("lineville", "elastic-machines-testing", SECRET)
        .await
        .unwrap();
    api.add_repo("wolfy1339", "github-events-schemas", SECRET)
        .await
        .unwrap();
    // max_runners 0: intake is under test, nothing gets created.
    for (repo, tags) in [
        (&hello, json!(["ubuntu-latest"])),
        (&lineville, json!(["self-hosted", "k8s"])),
    ] {
        api.add_pool(repo, json!({"provider_name": "fake", "image": "i", "flavor": "f", "tags": tags, "max_runners": 0}))
            .await
            .unwrap();
    }
    Env {
        _dir: dir,
        daemon,
        api,
        hello,
        lineville,
    }
}

async fn post(url: &str, event: &str, body: Vec<u8>, sig: Option<(&str, String)>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", event);
    if let Some((h, v)) = sig {
        req = req.header(h, v);
    }
    let r = req.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn deliver(e: &Env, entity: &str, event: &str, body: Vec<u8>) -> (u16, Value) {
    let sig = sign(SECRET, &body);
    post(
        &format!("{}/webhooks/{entity}", e.daemon.url),
        event,
        body,
        Some(("x-hub-signature-256", sig)),
    )
    .await
}

/// The head of a delivery written by hand on a raw socket, signed over
/// `signed`, with `framing` (a length or chunked encoding) as its last
/// header.
fn raw_head(addr: &str, entity: &str, event: &str, signed: &[u8], framing: &str) -> String {
    format!(
        "POST /webhooks/{entity} HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: {event}\r\nX-Hub-Signature-256: {}\r\n{framing}\r\n\r\n",
        sign(SECRET, signed)
    )
}

fn job_status(jobs: &[Value], id: i64) -> Option<String> {
    jobs.iter()
        .find(|j| j["id"] == id)
        .map(|j| j["status"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_payload_is_handled() {
    let e = env().await;
    let (s, v) = deliver(&e, &e.hello, "ping", fixture("ping/payload.json")).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("pong")));

    let (s, v) = deliver(
        &e,
        &e.hello,
        "workflow_job",
        fixture("workflow_job/queued.payload.json"),
    )
    .await;
    assert_eq!((s, v["outcome"].as_str()), (202, Some("recorded")), "{v}");
    assert_eq!(v["job_id"], 289782451);
    let (s, _) = deliver(
        &e,
        &e.hello,
        "workflow_job",
        fixture("workflow_job/in_progress.payload.json"),
    )
    .await;
    assert_eq!(s, 202);
    let (s, v) = deliver(
        &e,
        &e.hello,
        "workflow_job",
        fixture("workflow_job/started.with-organization.legacy.payload.json"),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (200, Some("ignored")),
        "unknown action: accepted, ignored"
    );
    let (s, _) = deliver(
        &e,
        &e.hello,
        "workflow_job",
        fixture("workflow_job/completed.success.with-organization.payload.json"),
    )
    .await;
    assert_eq!(s, 202);

    let (s, v) = deliver(
        &e,
        &e.lineville,
        "workflow_job",
        fixture("workflow_job/waiting.payload.json"),
    )
    .await;
    assert_eq!((s, v["outcome"].as_str()), (202, Some("recorded")), "{v}");

    // No pool serves ubuntu-latest in this repository: recorded, answered 200.
    let wolfy = e
        .api
        .get("/api/v1/repositories")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["owner"] == "wolfy1339")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = deliver(
        &e,
        &wolfy,
        "workflow_job",
        fixture("workflow_job/in_progress.with-queued-steps.payload.json"),
    )
    .await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("unmatched")), "{v}");

    let (s, v) = deliver(&e, &e.hello, "push", b"{}".to_vec()).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("ignored")));

    let jobs = e.api.jobs().await.unwrap();
    assert_eq!(job_status(&jobs, 289782451).as_deref(), Some("completed"));
    assert_eq!(job_status(&jobs, 12877621891).as_deref(), Some("waiting"));
    assert_eq!(
        job_status(&jobs, 14541957942).as_deref(),
        Some("in_progress")
    );
    let done = jobs.iter().find(|j| j["id"] == 289782451).unwrap();
    assert_eq!(done["conclusion"], "success");
    assert_eq!(done["repository"], "Codertocat/Hello-World");
    assert_eq!(done["labels"], json!(["ubuntu-latest"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_before_anything_is_recorded() {
    let e = env().await;
    let url = format!("{}/webhooks/{}", e.daemon.url, e.hello);
    let body = fixture("workflow_job/queued.payload.json");

    let (s, v) = post(&url, "workflow_job", body.clone(), None).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["details"].as_str().unwrap().contains("missing"), "{v}");

    let (s, v) = post(
        &url,
        "workflow_job",
        body.clone(),
        Some((
            "x-hub-signature",
            "sha1=0123456789abcdef0123456789abcdef01234567".into(),
        )),
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["details"].as_str().unwrap().contains("SHA-1"), "{v}");

    let (s, _) = post(
        &url,
        "workflow_job",
        body.clone(),
        Some(("x-hub-signature-256", sign("wrong", &body))),
    )
    .await;
    assert_eq!(s, 401);

    let mut changed = body.clone();
    let at = changed.iter().position(|b| *b == b'Q').unwrap_or(100);
    changed[at] ^= 0x20;
    let (s, _) = post(
        &url,
        "workflow_job",
        changed,
        Some(("x-hub-signature-256", sign(SECRET, &body))),
    )
    .await;
    assert_eq!(s, 401, "one byte changed after signing");

    let (s, _) = post(
        &url,
        "workflow_job",
        body.clone(),
        Some(("x-hub-signature-256", sign("", &body))),
    )
    .await;
    assert_eq!(s, 401, "signed with an empty secret");

    let (s, _) = post(
        &url,
        "workflow_job",
        body.clone(),
        Some(("x-hub-signature-256", "sha256=zz".into())),
    )
    .await;
    assert_eq!(s, 401);

    // Garbage that is not even JSON, unsigned: refused for the signature.
    let (s, _) = post(&url, "workflow_job", b"{not json".to_vec(), None).await;
    assert_eq!(s, 401);

    assert!(e.api.jobs().await.unwrap().is_empty(), "nothing recorded");
    let m = reqwest::get(format!("{}/metrics", e.daemon.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("outcome=\"bad_signature\"} 7"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_oversize_deliveries() {
    let e = env().await;
    let (s, v) = deliver(
        &e,
        &e.hello,
        "workflow_job",
        b"{\"action\": \"queued\"".to_vec(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = deliver(
        &e,
        &e.hello,
        "workflow_job",
        br#"{"action":"queued","workflow_job":{"id":"not a number"}}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v) = deliver(
        &e,
        "00000000-0000-0000-0000-000000000000",
        "ping",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = deliver(&e, "not-a-uuid", "ping", b"{}".to_vec()).await;
    assert_eq!(s, 404);

    // Over the 64 KiB limit set in the config: by Content-Length…
    let big = vec![b' '; 70 * 1024];
    let (s, v) = deliver(&e, &e.hello, "workflow_job", big.clone()).await;
    assert_eq!(s, 413, "{v}");
    // …and streamed (chunked, no length): cut off at the limit.
    let addr = e.daemon.url.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = raw_head(
        &addr,
        &e.hello,
        "workflow_job",
        b"",
        "Transfer-Encoding: chunked\r\nConnection: close",
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    for chunk in big.chunks(8192) {
        let frame = format!("{:x}\r\n", chunk.len());
        if sock.write_all(frame.as_bytes()).await.is_err()
            || sock.write_all(chunk).await.is_err()
            || sock.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = sock.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(e.api.jobs().await.unwrap().is_empty());

    // Under the limit, a body streamed in many small chunks is joined and
    // verified whole, like one that arrives at once.
    let id = 52_000_000_001_i64;
    let body = with_id("workflow_job/queued.payload.json", id, "queued");
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = raw_head(
        &addr,
        &e.hello,
        "workflow_job",
        &body,
        "Transfer-Encoding: chunked\r\nConnection: close",
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(700) {
        sock.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        sock.write_all(chunk).await.unwrap();
        sock.write_all(b"\r\n").await.unwrap();
        sock.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    sock.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let jobs = e.api.jobs().await.unwrap();
    assert_eq!(job_status(&jobs, id).as_deref(), Some("queued"), "{jobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = env_with("read_timeout_secs = 1\n").await;
    let addr = e.daemon.url.trim_start_matches("http://").to_owned();
    // Generous bounds: the timeout is 1 s; this only checks it is enforced.
    let within = Duration::from_secs(15);

    // A connection that never sends a byte, and one that trickles its
    // headers, are closed without an answer.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(format!("POST /webhooks/{} HTTP/1.1\r\nHost: {addr}\r\n", e.hello).as_bytes())
        .await
        .unwrap();
    for sock in [&mut silent, &mut trickle] {
        let mut got = Vec::new();
        let read = tokio::time::timeout(within, sock.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the connection was left open");
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }

    // After an answer, a kept-alive connection that stays idle is closed.
    let ping = fixture("ping/payload.json");
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let length = format!("Content-Length: {}", ping.len());
    let head = raw_head(&addr, &e.hello, "ping", &ping, &length);
    idle.write_all(head.as_bytes()).await.unwrap();
    idle.write_all(&ping).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, idle.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the idle connection was left open");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        !got.contains("Connection: close") && !got.contains("connection: close"),
        "{got}"
    );

    // A webhook body that stops short of its length gets a 408.
    let body = with_id("workflow_job/queued.payload.json", 53_000_000_001, "queued");
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let length = format!("Content-Length: {}", body.len());
    let head = raw_head(&addr, &e.hello, "workflow_job", &body, &length);
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body[..100]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(within, stalled.read(&mut answer))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("webhook body too slow"), "{answer}");

    // Nothing was recorded, and a prompt client is served as ever.
    assert!(e.api.jobs().await.unwrap().is_empty());
    let (s, v) = deliver(&e, &e.hello, "ping", fixture("ping/payload.json")).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("pong")), "{v}");
}

fn with_id(name: &str, id: i64, action: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    v["workflow_job"]["id"] = json!(id);
    v["action"] = json!(action);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_late_deliveries_change_nothing() {
    let e = env().await;
    let id = 31_000_000_123_i64; // above 2^31
    let q = with_id("workflow_job/queued.payload.json", id, "queued");
    let (s, _) = deliver(&e, &e.hello, "workflow_job", q.clone()).await;
    assert_eq!(s, 202);
    let (s, v) = deliver(&e, &e.hello, "workflow_job", q.clone()).await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (200, Some("duplicate")),
        "a redelivery"
    );

    let done = with_id(
        "workflow_job/completed.success.with-organization.payload.json",
        id,
        "completed",
    );
    assert_eq!(deliver(&e, &e.hello, "workflow_job", done).await.0, 202);
    let late = with_id("workflow_job/in_progress.payload.json", id, "in_progress");
    let (s, v) = deliver(&e, &e.hello, "workflow_job", late).await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (200, Some("stale")),
        "older action after a newer one"
    );
    let jobs = e.api.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(job_status(&jobs, id).as_deref(), Some("completed"));

    // A re-run is a new attempt, a new job.
    let mut v: Value = serde_json::from_slice(&q).unwrap();
    v["workflow_job"]["run_attempt"] = json!(2);
    assert_eq!(
        deliver(
            &e,
            &e.hello,
            "workflow_job",
            serde_json::to_vec(&v).unwrap()
        )
        .await
        .0,
        202
    );
    assert_eq!(e.api.jobs().await.unwrap().len(), 2);

    // A delivery about another repository is refused for this entity.
    let other = fixture("workflow_job/waiting.payload.json");
    assert_eq!(deliver(&e, &e.hello, "workflow_job", other).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_route_finds_the_entity() {
    let e = env().await;
    let url = format!("{}/webhooks", e.daemon.url);
    let body = fixture("workflow_job/queued.payload.json");
    let r = reqwest::Client::new()
        .post(&url)
        .header("x-github-event", "workflow_job")
        .header("x-github-hook-installation-target-type", "repository")
        .header("x-github-hook-installation-target-id", "1296269")
        .header("x-hub-signature-256", sign(SECRET, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    // A GitHub App's single hook: verified with the App's secret, routed by
    // the payload's repository.
    e.api
        .post(
            "/api/v1/credentials",
            json!({"name": "app", "endpoint": "fake", "auth_type": "app", "app_id": 4242, "installation_id": 7,
                   "private_key": include_str!("../../crates/hangar-github/tests/fixtures/test-app-key.pem"),
                   "app_webhook_secret": "app-hook-secret"}),
        )
        .await
        .unwrap();
    let app_body = with_id("workflow_job/waiting.payload.json", 777, "waiting");
    let send = |secret: &'static str, app: &'static str| {
        let url = url.clone();
        let b = app_body.clone();
        async move {
            reqwest::Client::new()
                .post(&url)
                .header("x-github-event", "workflow_job")
                .header("x-github-hook-installation-target-type", "integration")
                .header("x-github-hook-installation-target-id", app)
                .header("x-hub-signature-256", sign(secret, &b))
                .body(b)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send("app-hook-secret", "4242").await, 202);
    assert_eq!(send("wrong", "4242").await, 401);
    assert_eq!(send("app-hook-secret", "1").await, 404, "unknown App");
    let jobs = e.api.jobs().await.unwrap();
    let j = jobs.iter().find(|j| j["id"] == 777).unwrap();
    assert_eq!(j["repository"], "lineville/elastic-machines-testing");
}
