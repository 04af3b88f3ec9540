//! The web dashboard against the real `hangard` (FakeGitHub, FakeActions,
//! the fake provider): its security over plain HTTP (cookie flags, CSRF,
//! origin checks), then in a real browser — headless Chromium driven
//! through chromedriver's WebDriver: log in, see validation errors at their
//! field (entity and pool forms), create a pool, watch a job go from queued
//! to a runner to done without a reload, filter the jobs, delete and force
//! delete a runner, log out; and a runner scale set made, shown, disabled
//! and deleted from the browser against the fake Actions service. A
//! screenshot of each page lands in `<target>/ui-screenshots/`.
//!
//! Without `chromium` and `chromedriver` the browser test is skipped with
//! a loud message, unless `CI` is set, where it fails (`cargo xtask ci`
//! installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hangar_e2e::{ADMIN, Api, Daemon, PASSWORD, free_port, wait_for, write_config};
use hangar_testkit::fake_actions::FakeActions;
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
    /// Saves the page's screenshot, once the page passes the accessibility
    /// checks of [`a11y_issues`].
    async fn take(&self, c: &Client, name: &str) {
        let issues = a11y_issues(c).await;
        assert!(issues.is_empty(), "page {name}: {issues:#?}");
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

/// What sticks out of the window sideways (the innermost elements, at
/// most ten, as `tag.class#id: text`): empty when the page fits.
async fn sideways(c: &Client) -> Vec<String> {
    let found = c
        .execute(
            "const w = document.documentElement.clientWidth;
             if (document.documentElement.scrollWidth <= w + 1) return [];
             const out = [];
             for (const el of document.body.querySelectorAll('*')) {
               const pos = getComputedStyle(el).position;
               if (el.parentElement && el.parentElement.closest('.scroll') && pos !== 'absolute' && pos !== 'fixed') continue;
               const r = el.getBoundingClientRect();
               const inner = Array.from(el.children).some(ch => ch.getBoundingClientRect().right > w + 1);
               if (r.right > w + 1 && !inner) {
                 out.push(el.tagName.toLowerCase() + '.' + el.className + '#' + el.id + ': ' + (el.textContent || '').trim().slice(0, 60));
               }
               if (out.length >= 10) break;
             }
             return out.length ? out : ['(the page is wider than the window)'];",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

/// What a keyboard or screen reader user would miss on the current page:
/// form fields without a label, links and buttons without a name, controls
/// taken out of the tab order, and click handlers on things that are not
/// controls. Empty when there is nothing.
async fn a11y_issues(c: &Client) -> Vec<String> {
    let found = c
        .execute(
            "const bad = [];
             const show = el => el.outerHTML.slice(0, 90);
             for (const el of document.querySelectorAll('input, select, textarea')) {
               if (el.type === 'hidden') continue;
               if (['submit', 'button', 'reset'].includes(el.type) && el.value) continue;
               const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
                 || el.getAttribute('aria-labelledby');
               if (!named) bad.push('unlabelled field: ' + show(el));
             }
             for (const el of document.querySelectorAll('button, a[href], summary')) {
               const name = (el.textContent || '').trim() || el.getAttribute('aria-label')
                 || el.getAttribute('title');
               if (!name) bad.push('control without a name: ' + show(el));
               if (el.tabIndex < 0) bad.push('out of the tab order: ' + show(el));
             }
             for (const el of document.querySelectorAll('input, select, textarea')) {
               if (el.type !== 'hidden' && el.tabIndex < 0) bad.push('out of the tab order: ' + show(el));
             }
             for (const el of document.querySelectorAll('[onclick]')) {
               bad.push('click handler in markup: ' + show(el));
             }
             if (!document.documentElement.lang) bad.push('no lang on <html>');
             if (!document.title) bad.push('no <title>');
             if (document.querySelectorAll('h1').length !== 1) bad.push('not exactly one <h1>');
             return bad;",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

/// Types `keys` (text and WebDriver key codes) into whatever has focus.
async fn press(c: &Client, keys: &str) {
    let mut typing = KeyActions::new("keyboard".into());
    for value in keys.chars() {
        typing = typing
            .then(KeyAction::Down { value })
            .then(KeyAction::Up { value });
    }
    c.perform_actions(typing).await.unwrap();
}

/// The id of the element that has focus ("" for none).
async fn focused_id(c: &Client) -> String {
    c.active_element()
        .await
        .unwrap()
        .attr("id")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Logs in from the login page the dashboard sends to; with `shots`, by
/// keyboard alone.
async fn log_in(c: &Client, url: &str, shots: Option<&Shots>) {
    c.goto(&format!("{url}/ui")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");
    if let Some(shots) = shots {
        shots.take(c, "login").await;
        // By keyboard alone: Tab from the top of the page reaches the
        // fields, in order, and Enter submits.
        let (tab, enter) = (char::from(Key::Tab), char::from(Key::Enter));
        let mut presses = 0;
        while focused_id(c).await != "username" {
            assert!(presses < 8, "Tab did not reach the username field");
            press(c, &tab.to_string()).await;
            presses += 1;
        }
        press(c, ADMIN).await;
        press(c, &tab.to_string()).await;
        assert_eq!(
            focused_id(c).await,
            "password",
            "Tab goes on to the password"
        );
        press(c, &format!("{PASSWORD}{enter}")).await;
    } else {
        fill(c, "username", ADMIN).await;
        fill(c, "password", PASSWORD).await;
        c.find(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    until(c, "the overview", |s| async move {
        s.contains("<h1>Overview</h1>")
    })
    .await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui");
}

/// Submits the form whose action ends with `action`.
async fn submit(c: &Client, action: &str) {
    click(c, &format!("form[action$='{action}'] button[type=submit]")).await;
}

async fn assert_invalid(c: &Client, id: &str) {
    assert_eq!(
        c.find(Locator::Id(id))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true"),
        "#{id} is not marked invalid"
    );
}

async fn value_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Chromium and chromedriver, or `None` (the test is skipped) — unless
/// `CI` is set, where their absence fails the test.
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let found = browser_binaries();
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set but chromium/chromedriver are missing: install Debian's chromium and chromium-driver (cargo xtask ci does)"
        );
        eprintln!(
            "\n!!!!!!!!\n!!! SKIPPING the browser test: chromium and chromedriver are not installed\n!!! (apt-get install chromium chromium-driver, or run cargo xtask ci)\n!!!!!!!!\n"
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_hangar_from_the_browser() {
    let Some((chromium, chromedriver)) = browser_or_skip() else {
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
    log_in(&c, &url, Some(&shots)).await;

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
    // An entity form with a mistake: the API's message at its field, and
    // nothing made.
    c.find(Locator::Css("#kind"))
        .await
        .unwrap()
        .select_by_value("repository")
        .await
        .unwrap();
    fill(&c, "owner", "").await;
    fill(&c, "name", "website").await;
    submit(&c, "/ui/entities").await;
    until(&c, "the entity form's error", |s| async move {
        s.contains("owner-error")
    })
    .await;
    let error = text_of(&c, "#owner-error").await;
    assert!(error.contains("a repository needs an owner"), "{error}");
    assert_invalid(&c, "owner").await;
    assert_eq!(value_of(&c, "name").await, "website", "the form kept it");
    assert_eq!(
        api.get("/api/v1/repositories")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    shots.take(&c, "entity-validation-error").await;
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

    // Filtered by repository and label: the job is shown while both
    // match, and only then.
    let filter = |repository: &'static str, label: &'static str| {
        let c = c.clone();
        async move {
            fill(&c, "repository", repository).await;
            fill(&c, "label", label).await;
            click(&c, "form.filters button[type=submit]").await;
            // The form is a GET: the filter is in the address.
            let query = format!(
                "repository={}&label={label}&status=",
                repository.replace('/', "%2F")
            );
            wait_for(LONG, "the filtered page", || {
                let c = c.clone();
                let query = query.clone();
                async move {
                    let at = c.current_url().await.map_err(|e| e.to_string())?;
                    if at.query() == Some(query.as_str()) {
                        Ok(())
                    } else {
                        Err(at.to_string())
                    }
                }
            })
            .await;
            until(&c, "the filtered jobs", |s| async move {
                s.contains("<h1>Jobs</h1>")
            })
            .await
        }
    };
    let shown = filter("octo/app", "linux").await;
    assert!(shown.contains(&format!("data-job=\"{job}\"")), "{shown}");
    shots.take(&c, "jobs-filtered").await;
    let shown = filter("octo/app", "windows").await;
    assert!(
        !shown.contains(&format!("data-job=\"{job}\"")) && shown.contains("No jobs match."),
        "{shown}"
    );
    let shown = filter("octo/other", "linux").await;
    assert!(
        !shown.contains(&format!("data-job=\"{job}\"")) && shown.contains("No jobs match."),
        "{shown}"
    );

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
    shots.take(&c, "overview-phone").await;
    let wide = sideways(&c).await;
    assert!(
        wide.is_empty(),
        "the overview scrolls sideways on a phone: {wide:?}"
    );
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

    // The pool makes a new idle runner; force delete that one.
    let next = wait_for(LONG, "a new idle runner", || {
        let api = api.clone();
        let idle = idle.clone();
        async move {
            let all = api.instances(false).await.map_err(|e| e.to_string())?;
            all.iter()
                .find(|i| {
                    i["runner_status"] == "idle"
                        && i["status"] == "running"
                        && i["name"] != idle.as_str()
                })
                .and_then(|i| i["name"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("{all:?}"))
        }
    })
    .await;
    let next_row = format!("tr[data-runner=\"{next}\"]");
    until(&c, "the new runner in the list", |s| {
        let next = next.clone();
        async move { s.contains(&format!("data-runner=\"{next}\"")) }
    })
    .await;
    click(&c, &format!("{next_row} button[value=true]")).await;
    until(&c, "the forced deletion notice", |s| async move {
        s.contains("Forced deletion requested")
    })
    .await;
    wait_for(LONG, "the runner to be force deleted", || {
        let api = api.clone();
        let next = next.clone();
        async move {
            let all = api.instances(true).await.map_err(|e| e.to_string())?;
            match all.iter().find(|i| i["name"] == next.as_str()) {
                Some(i) if i["status"] == "deleted" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
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

/// A runner scale set from the browser, against the fake Actions service:
/// a mistake shown at its field, then made (on GitHub too), its job
/// served, its runner linked to its page, its figures on the overview,
/// disabled and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_scale_set_from_the_browser() {
    let Some((chromium, chromedriver)) = browser_or_skip() else {
        return;
    };
    let (dir, daemon, api, gh, repo) = setup().await;
    let fa = FakeActions::start(&gh).await;
    // Shorter than the service's 50 s, so the last poll ends soon; long
    // enough a job that its runner is seen at work.
    fa.set_poll_wait(Duration::from_secs(5));
    fa.set_job_duration(Duration::from_secs(20));
    let shots = Shots {
        dir: target_dir().join("ui-screenshots"),
    };
    std::fs::create_dir_all(&shots.dir).unwrap();
    let driver = start_driver(&chromedriver, &dir.path().join("chromedriver.log")).await;
    let c = open_browser(&driver, &chromium).await;
    let url = daemon.url.clone();
    log_in(&c, &url, None).await;

    // None yet, on the overview and on the entity's page, which leads to
    // the form.
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("No scale sets. <a href=\"/ui/scalesets\">")
    );
    c.goto(&format!("{url}/ui/entities/{repo}")).await.unwrap();
    until(&c, "the entity's scale sets", |s| async move {
        s.contains("No scale sets.")
    })
    .await;
    c.find(Locator::Css(&format!(
        "a[href='/ui/scalesets?entity={repo}#new-scaleset-h']"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until(&c, "the scale set form", |s| async move {
        s.contains("Add a scale set")
    })
    .await;
    assert_eq!(value_of(&c, "entity_id").await, repo, "the entity chosen");

    // A name workflows could not use: the API's message at the field,
    // nothing made here or on GitHub.
    fill(&c, "name", "linux x64").await;
    c.find(Locator::Css("#provider_name"))
        .await
        .unwrap()
        .select_by_value("fake")
        .await
        .unwrap();
    fill(&c, "image", "ubuntu-24.04").await;
    fill(&c, "flavor", "small").await;
    fill(&c, "max_runners", "2").await;
    submit(&c, "/ui/scalesets").await;
    until(&c, "the scale set form's error", |s| async move {
        s.contains("name-error")
    })
    .await;
    let error = text_of(&c, "#name-error").await;
    assert!(
        error.contains("scale set name") && error.contains("' '"),
        "{error}"
    );
    assert_invalid(&c, "name").await;
    assert_eq!(
        value_of(&c, "image").await,
        "ubuntu-24.04",
        "the form kept it"
    );
    assert!(fa.scale_sets().is_empty());
    shots.take(&c, "scaleset-validation-error").await;

    // Fixed: made here and on GitHub, and its listener holds a session.
    fill(&c, "name", "linux-x64").await;
    submit(&c, "/ui/scalesets").await;
    until(&c, "the new scale set's page", |s| async move {
        s.contains("Created.")
    })
    .await;
    let path = c.current_url().await.unwrap().path().to_owned();
    assert!(path.starts_with("/ui/scalesets/"), "{path}");
    let sets = api.get("/api/v1/scalesets").await.unwrap();
    assert_eq!(sets.as_array().unwrap().len(), 1, "{sets}");
    let set = sets[0].clone();
    let id = set["id"].as_str().unwrap().to_owned();
    assert_eq!(path, format!("/ui/scalesets/{id}"));
    assert_eq!(set["name"], "linux-x64");
    assert_eq!(set["max_runners"], 2);
    assert_eq!(set["image"], "ubuntu-24.04");
    let github_id = set["github_id"].as_i64().expect("made on GitHub");
    assert!(
        fa.scale_sets()
            .iter()
            .any(|s| s.name == "linux-x64" && s.id == github_id)
    );
    let held = fa
        .wait_for(LONG, |fa| {
            fa.scale_sets()
                .iter()
                .any(|s| s.name == "linux-x64" && s.session_owner.is_some())
        })
        .await;
    assert!(held, "no listener session:\n{}", daemon.logs());

    // A job on its queue gets a runner, which the Runners page links to
    // the scale set's page (a scale set's pool has no page of its own).
    let rid = fa.queue_job("linux-x64", "octo/app");
    c.goto(&format!("{url}/ui/runners")).await.unwrap();
    let link = format!("a[href='/ui/scalesets/{id}']");
    until(&c, "the scale set's runner", |s| {
        let id = id.clone();
        async move { s.contains(&format!("href=\"/ui/scalesets/{id}\"")) }
    })
    .await;
    assert!(
        text_of(&c, &link)
            .await
            .contains("octo/app · scale set linux-x64")
    );
    click(&c, &link).await;
    let page = until(&c, "the scale set's page with its runner", |s| async move {
        s.contains("data-runner=") && s.contains("runs-on: linux-x64")
    })
    .await;
    assert!(page.contains("of 2"), "runners against max_runners");
    assert!(
        page.contains(&format!("scale set <code>{github_id}</code>")),
        "its GitHub id"
    );
    shots.take(&c, "scaleset").await;
    // On a phone's screen: one column, nothing cut off.
    c.set_window_size(390, 844).await.unwrap();
    c.refresh().await.unwrap();
    until(&c, "the scale set's page on a phone", |s| async move {
        s.contains("runs-on: linux-x64")
    })
    .await;
    shots.take(&c, "scaleset-phone").await;
    let wide = sideways(&c).await;
    assert!(
        wide.is_empty(),
        "the scale set's page scrolls sideways on a phone: {wide:?}"
    );
    c.set_window_size(1280, 1000).await.unwrap();

    let served = fa
        .wait_for(LONG, |fa| {
            fa.job(rid).is_some_and(|j| j.status == "completed")
        })
        .await;
    assert!(
        served,
        "job not served: {:?}\n{}",
        fa.job(rid),
        daemon.logs()
    );

    // The overview: the scale set's own row, with the job's wait.
    c.goto(&format!("{url}/ui")).await.unwrap();
    let overview = until(&c, "the scale set on the overview", |s| async move {
        s.contains("octo/app · scale set linux-x64") && s.contains("1 jobs")
    })
    .await;
    let section = &overview[overview
        .find("id=\"scalesets-h\"")
        .expect("a Scale sets section")..];
    assert!(section.contains(&format!("href=\"/ui/scalesets/{id}\"")));
    assert!(section.contains("Scale set</th>"), "its own heading");
    assert!(section.contains("of 2"), "runners against max_runners");
    shots.take(&c, "overview-scaleset").await;

    // Disabled from its page: its listener lets go.
    c.goto(&format!("{url}/ui/scalesets/{id}")).await.unwrap();
    submit(&c, &format!("/ui/scalesets/{id}/enabled")).await;
    until(&c, "the disabled notice", |s| async move {
        s.contains("Scale set disabled")
    })
    .await;
    assert_eq!(
        api.get(&format!("/api/v1/scalesets/{id}")).await.unwrap()["enabled"],
        false
    );

    // Deleted once its runner is gone: here and on GitHub.
    wait_for(LONG, "the scale set's runner to be deleted", || {
        let api = api.clone();
        let pool = set["pool_id"].as_str().unwrap().to_owned();
        async move {
            let live = api.instances(false).await.map_err(|e| e.to_string())?;
            if live.iter().any(|i| i["pool_id"] == pool.as_str()) {
                Err(format!("{live:?}"))
            } else {
                Ok(())
            }
        }
    })
    .await;
    c.refresh().await.unwrap();
    click(&c, "details.danger summary").await;
    submit(&c, &format!("/ui/scalesets/{id}/delete")).await;
    until(&c, "the scale sets list", |s| async move {
        s.contains("Deleted.")
    })
    .await;
    assert!(
        api.get("/api/v1/scalesets")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!fa.scale_sets().iter().any(|s| s.name == "linux-x64"));

    c.close().await.unwrap();
    drop(driver);
}
