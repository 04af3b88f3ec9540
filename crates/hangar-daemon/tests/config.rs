//! hangard's config: the example documents (and parses with) every key, the
//! dev config is ready, bad files name the key and the line, environment
//! overrides and secret files work.

use std::path::{Path, PathBuf};

use hangar_daemon::config::{Config, ProviderKind, Synchronous};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_example_parses_and_sets_every_section() {
    let c = Config::load_with(&root().join("config/hangard.example.toml"), &no_env).unwrap();
    assert_eq!(c.server.bind, "127.0.0.1:9997");
    assert_eq!(c.server.webhook_body_limit, 1_048_576);
    assert_eq!(c.server.read_timeout_secs, 30);
    assert_eq!(c.server.max_connections, 1024);
    assert_eq!(c.server.max_runners_per_pool, 1000);
    assert_eq!(c.database.synchronous, Synchronous::Full);
    assert_eq!(c.auth.token_ttl_hours, 24);
    assert_eq!(c.scheduler.idle_grace_secs, 5);
    assert_eq!(c.github.budget_per_hour, 4000);
    let kinds: Vec<ProviderKind> = c.providers.iter().map(|p| p.kind).collect();
    for k in [
        ProviderKind::External,
        ProviderKind::Libvirt,
        ProviderKind::Azure,
        ProviderKind::Fake,
    ] {
        assert!(kinds.contains(&k), "the example documents a {k:?} provider");
    }
    // The example's values equal the defaults it claims to show.
    let defaults = Config::parse(
        "[server]\nbind = \"127.0.0.1:9997\"\npublic_url = \"http://127.0.0.1:9997\"\n",
    )
    .unwrap();
    assert_eq!(c.scheduler, defaults.scheduler);
    assert_eq!(c.github, defaults.github);
    assert_eq!(c.server.max_connections, defaults.server.max_connections);
    assert_eq!(
        c.server.max_runners_per_pool,
        defaults.server.max_runners_per_pool
    );
    // Unset, the worker count follows the CPUs and leaves one to SQLite's
    // writer, but is never zero.
    assert_eq!(c.server.worker_threads, None);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(defaults.server.worker_thread_count(), (cpus - 1).max(1));
    let set = Config::parse(
        "[server]\nbind = \"127.0.0.1:9997\"\npublic_url = \"http://127.0.0.1:9997\"\nworker_threads = 3\n",
    )
    .unwrap();
    assert_eq!(set.server.worker_thread_count(), 3);
}

#[test]
fn the_dev_config_is_ready() {
    let c = Config::load_with(&root().join("config/hangard.toml"), &no_env).unwrap();
    assert!(c.bind_addr().unwrap().ip().is_loopback());
    assert!(c.database.url.contains("./data/"));
    assert!(c.passphrase().is_ok());
    assert_eq!(c.providers.len(), 1);
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_and_line() {
    let e =
        Config::parse("[server]\nbind = \"127.0.0.1:1\"\npublic_url = \"http://x\"\nbnid = 3\n")
            .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("bnid") && msg.contains("line 4"), "{msg}");

    let e = Config::parse("[server]\nbind = \"127.0.0.1:1\"\npublic_url = \"http://x\"\n[scheduler]\nidle_grace_secs = \"soon\"\n").unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("line 5") && msg.contains("invalid type"),
        "{msg}"
    );

    let e = Config::parse("[database]\nurl = \"sqlite://x\"\n").unwrap_err();
    assert!(format!("{e:#}").contains("server"), "{e:#}");
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("h.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn semantic_checks() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[server]\nbind = \"127.0.0.1:9997\"\npublic_url = \"http://127.0.0.1:9997\"\n";
    for (extra, want) in [
        ("", ""),
        (
            "[[provider]]\nname = \"x\"\nkind = \"libvirt\"\n",
            "no [provider.libvirt] table",
        ),
        (
            "[[provider]]\nname = \"x\"\nkind = \"fake\"\n[[provider]]\nname = \"x\"\nkind = \"fake\"\n",
            "defined twice",
        ),
        (
            "[[provider]]\nname = \"has space\"\nkind = \"fake\"\n",
            "provider name",
        ),
        ("[scheduler]\ncreate_attempts = 0\n", "create_attempts"),
        ("worker_threads = 0\n", "server.worker_threads"),
        ("read_timeout_secs = 0\n", "server.read_timeout_secs"),
        ("read_timeout_secs = 5\n", ""),
        ("worker_threads = 100000\n", "server.worker_threads"),
        ("worker_threads = 3\n", ""),
        ("max_connections = 0\n", "server.max_connections"),
        ("max_connections = 10\n", ""),
        ("max_runners_per_pool = 0\n", "server.max_runners_per_pool"),
        ("max_runners_per_pool = 50\n", ""),
    ] {
        let r = Config::load_with(&write(dir.path(), &format!("{base}{extra}")), &no_env);
        if want.is_empty() {
            r.unwrap();
        } else {
            let msg = format!("{:#}", r.unwrap_err());
            assert!(msg.contains(want), "{extra}: {msg}");
        }
    }
    let bad_bind = "[server]\nbind = \"localhost\"\npublic_url = \"http://x\"\n";
    assert!(
        format!(
            "{:#}",
            Config::load_with(&write(dir.path(), bad_bind), &no_env).unwrap_err()
        )
        .contains("server.bind")
    );
    let bad_url = "[server]\nbind = \"127.0.0.1:1\"\npublic_url = \"ftp://x\"\n";
    assert!(
        format!(
            "{:#}",
            Config::load_with(&write(dir.path(), bad_url), &no_env).unwrap_err()
        )
        .contains("public_url")
    );
}

#[test]
fn environment_overrides_and_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "a passphrase from a file, long enough\n").unwrap();
    let p = write(
        dir.path(),
        &format!(
            "[server]\nbind = \"127.0.0.1:1\"\npublic_url = \"http://a\"\n[database]\npassphrase_file = \"{}\"\n",
            pass.display()
        ),
    );
    let c = Config::load_with(&p, &no_env).unwrap();
    assert_eq!(
        c.passphrase().unwrap().expose(),
        "a passphrase from a file, long enough"
    );
    let env = |k: &str| match k {
        "HANGAR_BIND" => Some("127.0.0.1:2".to_owned()),
        "HANGAR_PUBLIC_URL" => Some("https://hangar.example".to_owned()),
        "HANGAR_DATABASE_URL" => Some("sqlite:///var/lib/hangar/h.db".to_owned()),
        "HANGAR_PASSPHRASE" => Some("from the environment, 32+ characters".to_owned()),
        _ => None,
    };
    let c = Config::load_with(&p, &env).unwrap();
    assert_eq!(c.server.bind, "127.0.0.1:2");
    assert_eq!(c.server.public_url, "https://hangar.example");
    assert_eq!(c.database.url, "sqlite:///var/lib/hangar/h.db");
    assert_eq!(
        c.passphrase().unwrap().expose(),
        "from the environment, 32+ characters"
    );
    let missing = write(
        dir.path(),
        "[server]\nbind = \"127.0.0.1:1\"\npublic_url = \"http://a\"\n[database]\npassphrase_file = \"/nonexistent\"\n",
    );
    let e = Config::load_with(&missing, &no_env)
        .unwrap()
        .passphrase()
        .unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent"), "{e:#}");
}

#[test]
fn the_database_url_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("database-url");
    std::fs::write(
        &url,
        "postgres://hangar:s3cret@db.example:5432/hangar?sslmode=verify-full\n",
    )
    .unwrap();
    let config = |extra: &str| {
        write(
            dir.path(),
            &format!(
                "[server]\nbind = \"127.0.0.1:1\"\npublic_url = \"http://a\"\n[database]\nurl = \"sqlite://./x.db\"\npassphrase = \"a passphrase of at least 32 characters\"\n{extra}"
            ),
        )
    };
    let p = config(&format!("url_file = \"{}\"\n", url.display()));
    let c = Config::load_with(&p, &no_env).unwrap();
    assert_eq!(
        c.database.url, "postgres://hangar:s3cret@db.example:5432/hangar?sslmode=verify-full",
        "url_file wins over url"
    );
    // HANGAR_DATABASE_URL wins over both, and the file is not read.
    let env = |k: &str| (k == "HANGAR_DATABASE_URL").then(|| "sqlite://./env.db".to_owned());
    let gone = config("url_file = \"/nonexistent/database-url\"\n");
    assert_eq!(
        Config::load_with(&gone, &env).unwrap().database.url,
        "sqlite://./env.db"
    );
    // A missing or empty file, or one holding no database URL, is refused
    // with the key's name.
    let e = Config::load_with(&gone, &no_env).unwrap_err();
    assert!(format!("{e:#}").contains("database.url_file"), "{e:#}");
    // (`write` always writes the same config file.)
    let p = config(&format!("url_file = \"{}\"\n", url.display()));
    std::fs::write(&url, "\n").unwrap();
    let e = Config::load_with(&p, &no_env).unwrap_err();
    assert!(format!("{e:#}").contains("empty"), "{e:#}");
    std::fs::write(&url, "mysql://nope\n").unwrap();
    let e = Config::load_with(&p, &no_env).unwrap_err();
    assert!(format!("{e:#}").contains("database.url"), "{e:#}");
}

#[test]
fn github_proxy_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "[server]\nbind = \"127.0.0.1:1\"\npublic_url = \"http://a\"\n",
    );
    let c = Config::load_with(&p, &no_env).unwrap();
    assert!(c.github.proxy.is_empty());
    // Upper case wins; lower case fills in; an empty value is unset.
    let env = |k: &str| match k {
        "HTTPS_PROXY" => Some("http://proxy.corp:3128".to_owned()),
        "https_proxy" => Some("http://ignored:1".to_owned()),
        "HTTP_PROXY" => Some(String::new()),
        "http_proxy" => Some("http://plain.corp:3128".to_owned()),
        "no_proxy" => Some("ghes.corp,.internal".to_owned()),
        _ => None,
    };
    let c = Config::load_with(&p, &env).unwrap();
    assert_eq!(
        c.github.proxy.https_proxy.as_deref(),
        Some("http://proxy.corp:3128")
    );
    assert_eq!(
        c.github.proxy.http_proxy.as_deref(),
        Some("http://plain.corp:3128")
    );
    assert_eq!(
        c.github.proxy.no_proxy.as_deref(),
        Some("ghes.corp,.internal")
    );
}

#[test]
fn the_metrics_token_comes_from_the_config_or_a_file_and_is_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[server]\nbind = \"127.0.0.1:9997\"\npublic_url = \"http://127.0.0.1:9997\"\n";
    let c = Config::load_with(&write(dir.path(), base), &no_env).unwrap();
    assert!(
        c.metrics_token().unwrap().is_none(),
        "open unless configured"
    );

    let c = Config::load_with(
        &write(
            dir.path(),
            &format!("{base}[metrics]\ntoken = \"0123456789abcdef-metrics\"\n"),
        ),
        &no_env,
    )
    .unwrap();
    assert_eq!(
        c.metrics_token().unwrap().unwrap().expose(),
        "0123456789abcdef-metrics"
    );

    let file = dir.path().join("metrics-token");
    std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
    let c = Config::load_with(
        &write(
            dir.path(),
            &format!(
                "{base}[metrics]\ntoken_file = {:?}\n",
                file.display().to_string()
            ),
        ),
        &no_env,
    )
    .unwrap();
    assert_eq!(
        c.metrics_token().unwrap().unwrap().expose(),
        "from-a-file-0123456789"
    );

    let e = Config::load_with(
        &write(dir.path(), &format!("{base}[metrics]\ntoken = \"short\"\n")),
        &no_env,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("at least 16"), "{e:#}");
}
