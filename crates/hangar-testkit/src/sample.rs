//! Domain values the test suites seed their stores with, written once: an
//! endpoint, PAT credentials on it, and a Linux pool spec. Tests change
//! what they care about on the returned value.

use hangar_core::*;

/// An endpoint named `name` at `base_url`, its API at `api_base_url`.
pub fn endpoint(name: &str, base_url: &str, api_base_url: &str) -> Endpoint {
    Endpoint {
        name: ResourceName::parse(name).expect("a valid endpoint name"),
        description: String::new(),
        base_url: base_url.into(),
        api_base_url: api_base_url.into(),
        ca_bundle: None,
    }
}

/// The public `github.com` endpoint.
pub fn github_com() -> Endpoint {
    endpoint("github.com", "https://github.com", "https://api.github.com")
}

/// PAT credentials `name` on `endpoint`.
pub fn pat(name: &str, endpoint: &str, token: &str) -> Credentials {
    Credentials {
        name: ResourceName::parse(name).expect("a valid credentials name"),
        description: String::new(),
        endpoint: ResourceName::parse(endpoint).expect("a valid endpoint name"),
        auth: CredentialsAuth::Pat {
            token: Secret::new(token),
        },
        app_webhook_secret: None,
    }
}

/// A Linux/amd64 pool on `provider` with these tags (comma-separated), no
/// idle minimum and room for `max` runners.
pub fn pool_spec(provider: &str, tags: &str, max: u32) -> PoolSpec {
    PoolSpec {
        provider_name: ResourceName::parse(provider).expect("a valid provider name"),
        image: "img".into(),
        flavor: "small".into(),
        tags: Labels::parse_list(tags).expect("valid tags"),
        os_type: OsType::Linux,
        os_arch: OsArch::Amd64,
        min_idle_runners: 0,
        max_runners: max,
        runner_prefix: RunnerPrefix::default(),
        runner_bootstrap_timeout: 20,
        extra_specs: serde_json::Map::new(),
        runner_group: None,
        priority: 0,
        enabled: true,
    }
}
