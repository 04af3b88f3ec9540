//! The web dashboard against the real `hangard` (FakeGitHub, the fake
//! provider): its security over plain HTTP (cookie flags, CSRF, origin
//! checks), then in a real browser — headless Chromium driven through
//! chromedriver's WebDriver: log in, see a validation error at its field,
//! create a pool, watch a job go from queued to a runner to done without a
//! reload, delete a runner, log out. A screenshot of each page lands in
//! `<target>/ui-screenshots/`.
//!
//! Without `chromium` and `chromedriver` the browser test is skipped with
//! a loud message, unless `CI` is set, where it fails (`cargo xtask ci`
//! installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hangar_e2e::{ADMIN, Api, Daemon, PASSWORD, free_port, wait_for, write_config};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const SECRET: &str = "ui-webhook-secret-value";
const LONG: Duration = Duration::from_secs(90);

fn config() -> String {
    r#"
[scheduler]
reconcile_interval_secs = 2

[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "simulate"
"#
    .to_owned()
}

async fn setup() -> (tempfile::TempDir, Daemon, Api, FakeGitHub, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &config());
    let daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "app", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", daemon.url), SECRET);
    (dir, daemon, api, gh, repo)
}

// ---- plain HTTP: what the browser relies on ----

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.headers()))
        .to_owned()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap()
}

/// The value of the first hidden field `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_guards_its_session_and_forms() {
    let (_dir, daemon, api, _gh, repo) = setup().await;
    let url = &daemon.url;
    let http = client();

    // Nothing without a session: pages send to the login, fragments 401.
    let r = http.get(format!("{url}/ui")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    let r = http
        .get(format!("{url}/ui/live/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The login page pairs a form nonce with a cookie, and locks the page
    // down.
    let r = http.get(format!("{url}/ui/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let login_cookie = set_cookie(&r, "hangar_login");
    let page = r.text().await.unwrap();
    let nonce = hidden(&page, "login_csrf");
    assert_eq!(cookie_value(&login_cookie), nonce);

    let login = |origin: &'static str, nonce: String, cookie: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}/ui/login"))
                .header(
                    "origin",
                    if origin.is_empty() {
                        url.clone()
                    } else {
                        origin.to_owned()
                    },
                )
                .header("cookie", format!("hangar_login={cookie}"))
                .form(&[
                    ("username", ADMIN),
                    ("password", PASSWORD),
                    ("login_csrf", nonce.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    // Another site cannot post the form, nor can a form without its cookie.
    let r = login("https://evil.example", nonce.clone(), nonce.clone()).await;
    assert_eq!(r.status(), 403);
    let r = login("", nonce.clone(), "other".into()).await;
    assert_eq!(r.status(), 403);
    let r = login("", nonce.clone(), nonce.clone()).await;
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(r.headers()["location"], "/ui");
    let session = set_cookie(&r, "hangar_session");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(session.contains(flag), "{flag} missing: {session}");
    }
    let token = cookie_value(&session);
    let jar = format!("hangar_session={token}");

    // The session reads pages; its forms carry the CSRF token.
    let r = http
        .get(format!("{url}/ui/entities/{repo}"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let csrf = hidden(&page, "csrf");

    let post = |path: String, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = url.clone();
        let jar = jar.clone();
        async move {
            http.post(format!("{url}{path}"))
                .header("origin", url.clone())
                .header("cookie", jar)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    let pool = |csrf: &str, max: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("provider_name", "fake".to_owned()),
            ("image", "ubuntu".to_owned()),
            ("flavor", "small".to_owned()),
            ("tags", "self-hosted, linux".to_owned()),
            ("min_idle_runners", "0".to_owned()),
            ("max_runners", max.to_owned()),
            ("enabled", "on".to_owned()),
        ]
    };
    // Without the token, or with another, nothing happens.
    let r = post(format!("/ui/entities/{repo}/pools"), pool("", "2")).await;
    assert_eq!(r.status(), 403);
    let r = post(
        format!("/ui/entities/{repo}/pools"),
        pool("0123456789abcdef0123456789abcdef", "2"),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(
        api.get("/api/v1/pools")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The API's own validation, shown at the field it names.
    let r = post(format!("/ui/entities/{repo}/pools"), pool(&csrf, "5000")).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("id=\"max_runners-error\"")
            && page.contains("above the limit of 1000 runners per pool"),
        "{page}"
    );

    // With it, the pool is made, exactly as through the API.
    let r = post(format!("/ui/entities/{repo}/pools"), pool(&csrf, "2")).await;
    assert_eq!(r.status(), 303);
    let pools = api.get("/api/v1/pools").await.unwrap();
    assert_eq!(pools.as_array().unwrap().len(), 1);
    assert_eq!(pools[0]["max_runners"], 2);
    assert_eq!(pools[0]["tags"], json!(["linux", "self-hosted"]));

    // The cookie is not an API credential.
    let r = http
        .get(format!("{url}/api/v1/pools"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Logging out needs the token too; afterwards the cookie is cleared.
    let r = post("/ui/logout".into(), vec![("csrf", String::new())]).await;
    assert_eq!(r.status(), 403);
    let r = post("/ui/logout".into(), vec![("csrf", csrf.clone())]).await;
    assert_eq!(r.status(), 303);
    assert!(set_cookie(&r, "hangar_session").contains("Max-Age=0"));
}

// ---- the browser ----

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver, from `HANGAR_CHROMIUM`/`HANGAR_CHROMEDRIVER`
/// or the PATH (Debian's `chromium` and `chromium-driver`).
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("HANGAR_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which("chromium"))
        .or_else(|| which("chromium-browser"))?;
    let driver = std::env::var_os("HANGAR_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which("chromedriver"))?;
    Some((chromium, driver))
}

/// chromedriver on a loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(binary: &Path, log: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    wait_for(Duration::from_secs(30), "chromedriver to be ready", || {
        let status = status.clone();
        async move {
            let v: Value = reqwest::get(&status)
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if v["value"]["ready"] == true {
                Ok(())
            } else {
                Err(v.to_string())
            }
        }
    })
    .await;
    driver
}

async fn open_browser(driver: &Driver, chromium: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000", "--no-first-run",
                     "--disable-extensions", "--force-prefers-reduced-motion"],
        }),
    );
    // Both of rustls' crypto back ends are in this build; pick ring, as
    // hangard does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ClientBuilder::rustls()
        .expect("TLS roots for the WebDriver client")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    async fn take(&self, c: &Client, name: &str) {
        let png = c.screenshot().await.expect("screenshot");
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

/// Waits until `check` passes on the current page, re-reading it as the
/// live regions change; the page is not reloaded.
async fn until<F, Fut>(c: &Client, what: &str, mut check: F) -> String
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let source = c.source().await.expect("page source");
        if check(source.clone()).await {
            return source;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}; page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The text of the first element matching `css`. Live regions swap their
/// content every few seconds, so an element found just before a swap is
/// gone a moment later: such a miss is retried.
async fn text_of(c: &Client, css: &str) -> String {
    let mut last = None;
    for _ in 0..20 {
        match c.find(Locator::Css(css)).await {
            Ok(el) => match el.text().await {
                Ok(t) => return t,
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: {last:?}")
}

/// Clicks the first element matching `css`, retried as [`text_of`].
async fn click(c: &Client, css: &str) {
    let mut last = None;
    for _ in 0..20 {
        match c.find(Locator::Css(css)).await {
            Ok(el) => match el.click().await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: {last:?}")
}

async fn fill(c: &Client, id: &str, value: &str) {
    let el = c
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"));
    el.clear().await.unwrap();
    if !value.is_empty() {
        el.send_keys(value).await.unwrap();
    }
}

/// A marker in the page's JavaScript state: it survives live updates and
/// vanishes on any reload.
async fn mark(c: &Client) {
    c.execute("window.hangarNoReload = 'still here'; return true;", vec![])
        .await
        .unwrap();
}

async fn still_marked(c: &Client) -> bool {
    c.execute("return window.hangarNoReload === 'still here';", vec![])
        .await
        .unwrap()
        == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_hangar_from_the_browser() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set but chromium/chromedriver are missing: install Debian's chromium and chromium-driver (cargo xtask ci does)"
        );
        eprintln!(
            "\n!!!!!!!!\n!!! SKIPPING the browser test: chromium and chromedriver are not installed\n!!! (apt-get install chromium chromium-driver, or run cargo xtask ci)\n!!!!!!!!\n"
        );
        return;
    };
    let (dir, daemon, api, gh, repo) = setup().await;
    // Long enough that the job is seen in progress between two polls.
    gh.set_job_duration(Duration::from_secs(8));
    let shots = Shots {
        dir: target_dir().join("ui-screenshots"),
    };
    std::fs::create_dir_all(&shots.dir).unwrap();
    let driver = start_driver(&chromedriver, &dir.path().join("chromedriver.log")).await;
    let c = open_browser(&driver, &chromium).await;
    let url = daemon.url.clone();

    // Log in.
    c.goto(&format!("{url}/ui")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");
    shots.take(&c, "login").await;
    fill(&c, "username", ADMIN).await;
    fill(&c, "password", PASSWORD).await;
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "the overview", |s| async move {
        s.contains("<h1>Overview</h1>")
    })
    .await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui");

    // A job arrives while the Jobs page is open: it shows up, queued (no
    // pool serves it yet), without a reload.
    c.goto(&format!("{url}/ui/jobs")).await.unwrap();
    mark(&c).await;
    let job = gh.queue_job("octo/app", &["self-hosted", "linux"]).await;
    let row = format!("tr[data-job=\"{job}\"]");
    until(&c, "the queued job", |s| async move {
        s.contains(&format!("data-job=\"{job}\""))
    })
    .await;
    assert!(
        text_of(&c, &format!("{row} td.status"))
            .await
            .contains("queued")
    );
    assert!(still_marked(&c).await, "the job appeared through a reload");

    // A pool for it, with a mistake first: the API's message at the field.
    c.goto(&format!("{url}/ui/entities")).await.unwrap();
    shots.take(&c, "entities").await;
    c.find(Locator::LinkText("octo/app"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "the entity page", |s| async move {
        s.contains("Add a pool")
    })
    .await;
    c.find(Locator::Css("#provider_name"))
        .await
        .unwrap()
        .select_by_value("fake")
        .await
        .unwrap();
    fill(&c, "image", "ubuntu-24.04").await;
    fill(&c, "flavor", "small").await;
    fill(&c, "tags", "self-hosted, linux, x64").await;
    fill(&c, "min_idle_runners", "3").await;
    fill(&c, "max_runners", "2").await;
    c.find(Locator::Css("form[action$='/pools'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "the validation error", |s| async move {
        s.contains("max_runners-error")
    })
    .await;
    let error = text_of(&c, "#max_runners-error").await;
    assert!(
        error.contains("must be at least min_idle_runners"),
        "{error}"
    );
    assert_eq!(
        c.find(Locator::Id("max_runners"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    // The form kept what was typed.
    assert_eq!(
        c.find(Locator::Id("image"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("ubuntu-24.04")
    );
    shots.take(&c, "validation-error").await;
    fill(&c, "min_idle_runners", "1").await;
    c.find(Locator::Css("form[action$='/pools'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "the new pool's page", |s| async move {
        s.contains("Created.")
    })
    .await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/ui/pools/")
    );
    let pools = api.get("/api/v1/pools").await.unwrap();
    assert_eq!(pools.as_array().unwrap().len(), 1, "{pools}");
    assert_eq!(pools[0]["min_idle_runners"], 1);
    assert_eq!(pools[0]["image"], "ubuntu-24.04");
    shots.take(&c, "pool").await;

    // The job gets a runner and finishes; the Jobs page follows live.
    c.goto(&format!("{url}/ui/jobs")).await.unwrap();
    mark(&c).await;
    let status = format!("{row} td.status");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let s = text_of(&c, &status).await;
        let st = s.split_whitespace().next().unwrap_or_default().to_owned();
        if seen.last() != Some(&st) {
            seen.push(st.clone());
        }
        if st == "completed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job stuck; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen.contains(&"in_progress".to_owned()),
        "the runner's turn was shown: {seen:?}"
    );
    assert!(still_marked(&c).await, "the Jobs page reloaded");
    let runner = text_of(&c, &format!("{row} td:nth-child(5)")).await;
    assert!(runner.starts_with("hangar-"), "{runner}");
    shots.take(&c, "jobs").await;

    // The overview: the pool against its max, the hour's wait.
    c.goto(&format!("{url}/ui")).await.unwrap();
    let overview = until(&c, "the pool on the overview", |s| async move {
        s.contains("octo/app · linux, self-hosted, x64") && s.contains("1 jobs")
    })
    .await;
    assert!(overview.contains("of 2"), "runners against max_runners");
    assert!(overview.contains("Queued to runner over the last hour: p50"));
    assert!(overview.contains("healthy"), "provider health");
    shots.take(&c, "overview").await;
    // The same on a phone's screen: one column, nothing cut off.
    c.set_window_size(390, 844).await.unwrap();
    c.refresh().await.unwrap();
    until(&c, "the overview on a phone", |s| async move {
        s.contains("<h1>Overview</h1>")
    })
    .await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(false),
        "the overview scrolls sideways on a phone"
    );
    shots.take(&c, "overview-phone").await;
    c.set_window_size(1280, 1000).await.unwrap();

    // Delete the idle runner the pool keeps.
    c.goto(&format!("{url}/ui/runners")).await.unwrap();
    let idle = wait_for(LONG, "an idle runner", || {
        let api = api.clone();
        async move {
            let all = api.instances(false).await.map_err(|e| e.to_string())?;
            all.iter()
                .find(|i| i["runner_status"] == "idle" && i["status"] == "running")
                .and_then(|i| i["name"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("{all:?}"))
        }
    })
    .await;
    let runner_row = format!("tr[data-runner=\"{idle}\"]");
    until(&c, "the idle runner in the list", |s| {
        let idle = idle.clone();
        async move { s.contains(&format!("data-runner=\"{idle}\"")) && s.contains("idle") }
    })
    .await;
    shots.take(&c, "runners").await;
    click(&c, &format!("{runner_row} button[value=false]")).await;
    until(&c, "the deletion notice", |s| async move {
        s.contains("Runner deletion requested")
    })
    .await;
    wait_for(LONG, "the runner to be deleted", || {
        let api = api.clone();
        let idle = idle.clone();
        async move {
            let all = api.instances(true).await.map_err(|e| e.to_string())?;
            match all.iter().find(|i| i["name"] == idle.as_str()) {
                Some(i) if i["status"] == "deleted" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    until(&c, "the deleted runner to leave the list", |s| {
        let idle = idle.clone();
        async move { !s.contains(&format!("data-runner=\"{idle}\"")) }
    })
    .await;

    // Log out: the session is gone.
    c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "the login page", |s| async move {
        s.contains("name=\"login_csrf\"")
    })
    .await;
    c.goto(&format!("{url}/ui/runners")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");

    c.close().await.unwrap();
    drop(driver);
    let _ = repo;
}
