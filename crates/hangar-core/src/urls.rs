//! The addresses GitHub and instances use to reach Hangar, derived in one
//! place from the operator's `public_url` and overrides.

use crate::entity::EntityScope;

/// The URLs instances and GitHub use to reach Hangar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    pub public_url: String,
    pub webhook_base_url: String,
    pub metadata_url: String,
    pub callback_url: String,
}

impl Urls {
    /// URLs derived from `public_url`, with the operator's overrides.
    pub fn derive(
        public_url: &str,
        webhook: Option<&str>,
        metadata: Option<&str>,
        callback: Option<&str>,
    ) -> Self {
        let base = public_url.trim_end_matches('/');
        Self {
            public_url: base.to_owned(),
            webhook_base_url: webhook
                .map(|s| s.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("{base}/webhooks")),
            metadata_url: metadata
                .map(|s| s.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("{base}/api/v1/metadata")),
            callback_url: callback
                .map(|s| s.to_owned())
                .unwrap_or_else(|| format!("{base}/api/v1/callbacks/status")),
        }
    }
}

/// The web URL runners register against (`config.sh --url`).
pub fn entity_web_url(base_url: &str, scope: &EntityScope) -> String {
    let base = base_url.trim_end_matches('/');
    match scope {
        EntityScope::Repository { owner, name } => format!("{base}/{owner}/{name}"),
        EntityScope::Organization { name } => format!("{base}/{name}"),
        EntityScope::Enterprise { slug } => format!("{base}/enterprises/{slug}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_derive_from_public_url() {
        let u = Urls::derive("http://127.0.0.1:9997/", None, None, None);
        assert_eq!(u.webhook_base_url, "http://127.0.0.1:9997/webhooks");
        assert_eq!(u.metadata_url, "http://127.0.0.1:9997/api/v1/metadata");
        assert_eq!(
            u.callback_url,
            "http://127.0.0.1:9997/api/v1/callbacks/status"
        );
        let o = Urls::derive(
            "http://a",
            Some("https://hooks.example/"),
            Some("http://10.0.2.2:1/m"),
            None,
        );
        assert_eq!(o.webhook_base_url, "https://hooks.example");
        assert_eq!(o.metadata_url, "http://10.0.2.2:1/m");
    }

    #[test]
    fn web_urls() {
        let s = EntityScope::Repository {
            owner: "o".into(),
            name: "r".into(),
        };
        assert_eq!(
            entity_web_url("https://github.com/", &s),
            "https://github.com/o/r"
        );
        let e = EntityScope::Enterprise { slug: "big".into() };
        assert_eq!(
            entity_web_url("https://ghes.local", &e),
            "https://ghes.local/enterprises/big"
        );
    }
}
