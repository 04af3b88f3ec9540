//! hangard's config file: any text given to `Config::parse` and then to
//! `validate` (what `hangard --config` does before it touches anything)
//! answers with a config or an error, never a panic. Whatever parses also
//! survives TOML's own round trip: the same document written out by `toml`
//! and read again gives the same config, and the same verdict.
//!
//! Input: the file's bytes (not UTF-8: nothing to do, as `load` would fail
//! reading it).

use hangar_daemon::config::Config;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Config::parse(text);
    if let Ok(c) = &parsed {
        check(c);
    }
    let Ok(table) = text.parse::<toml::Table>() else {
        assert!(parsed.is_err(), "not TOML, yet a config: {text:?}");
        return;
    };
    let Ok(again) = toml::to_string(&table) else {
        return;
    };
    // Only where TOML itself round-trips (NaN is not equal to itself).
    if again.parse::<toml::Table>().ok().as_ref() != Some(&table) {
        return;
    }
    let reparsed = Config::parse(&again);
    match (&parsed, &reparsed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "the round trip changed the config"
            );
            assert_eq!(a.validate().is_ok(), b.validate().is_ok());
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "the round trip changed the verdict: {:?} then {:?}\n{text}\n---\n{again}",
            a.as_ref().err().map(ToString::to_string),
            b.as_ref().err().map(ToString::to_string)
        ),
    }
}

/// Everything `hangard` derives from a parsed config without reading files
/// or the environment.
fn check(c: &Config) {
    if c.validate().is_ok() {
        let addr = c.bind_addr().expect("a valid config has a bind address");
        assert_eq!(addr.to_string().parse(), Ok(addr));
        let n = c.server.worker_thread_count();
        assert!((1..=512).contains(&n) || c.server.worker_threads.is_none());
        for p in &c.providers {
            let _ = p.proxy();
        }
    }
    if let Some(p) = &c.database.passphrase {
        assert_eq!(c.passphrase().expect("given inline").expose(), p);
    }
}
