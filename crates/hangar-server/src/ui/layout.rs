//! The page shell every dashboard page shares (head, navigation, logout)
//! and the small formatters the pages use for times and durations.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::Session;

/// The navigation's entries: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/ui", "Overview"),
    ("/ui/entities", "Entities and pools"),
    ("/ui/scalesets", "Scale sets"),
    ("/ui/runners", "Runners"),
    ("/ui/jobs", "Jobs"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Hangar" }
            link rel="stylesheet" href="/ui/assets/style.css";
            script src="/ui/assets/app.js" defer {}
        }
    }
}

/// A page without navigation (login, errors).
pub fn bare(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (main) }
        }
    }
}

/// A page with navigation; `active` is the path of its nav entry.
pub fn page(session: &Session, title: &str, active: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "Hangar" }
                    nav aria-label="Main" {
                        ul {
                            @for (href, label) in NAV {
                                li {
                                    @if *href == active {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.logout method="post" action="/ui/logout" {
                        (csrf(session))
                        span.user { (session.user()) }
                        button.link type="submit" { "Log out" }
                    }
                }
                main #main data-poll-ms=(super::POLL_MS) {
                    h1 { (title) }
                    (main)
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A notice after a redirect, from a fixed set (nothing from the URL is
/// echoed).
pub fn notice(code: Option<&str>) -> Markup {
    let text = match code {
        Some("created") => "Created.",
        Some("saved") => "Saved.",
        Some("deleted") => "Deleted.",
        Some("enabled") => "Pool enabled.",
        Some("disabled") => "Pool disabled.",
        Some("ss-enabled") => "Scale set enabled: its listener takes jobs from GitHub again.",
        Some("ss-disabled") => {
            "Scale set disabled: its listener stops and no new runner is made for it."
        }
        Some("runner-deleting") => "Runner deletion requested: it leaves GitHub, then its VM goes.",
        Some("runner-forced") => {
            "Forced deletion requested: the runner is removed even if the provider keeps failing."
        }
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

/// "3s", "4m 05s", "2h 03m", "3d 4h".
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long ago `t` was, e.g. "4m 05s".
pub fn age(t: DateTime<Utc>) -> String {
    duration_ms((hangar_store::clock::now() - t).num_milliseconds())
}

/// An absolute time for a `title`/`datetime` attribute.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A `<time>` showing the age, with the exact time on hover.
pub fn ago(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(iso(t)) title=(iso(t)) { (age(t)) " ago" } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ms(-5), "0.0s");
        assert_eq!(duration_ms(1_234), "1.2s");
        assert_eq!(duration_ms(42_000), "42s");
        assert_eq!(duration_ms(245_000), "4m 05s");
        assert_eq!(duration_ms(7_380_000), "2h 03m");
        assert_eq!(duration_ms(273_600_000), "3d 4h");
    }
}
