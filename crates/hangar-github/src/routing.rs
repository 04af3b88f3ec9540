//! Which registered entity a verified delivery is about, decided from its
//! payload alone, so the rules are tested here and the server only looks
//! the answer up in its catalog.

use hangar_core::{EntityScope, ScopeRef};

use crate::webhook::{DeliveryTarget, Enterprise, Organization, Repository, WorkflowJobEvent};

/// The parts of a delivery that say whom it is about, borrowed from the
/// parsed payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub repository: Option<&'a Repository>,
    pub organization: Option<&'a Organization>,
    pub enterprise: Option<&'a Enterprise>,
}

impl<'a> From<&'a DeliveryTarget> for Subject<'a> {
    fn from(t: &'a DeliveryTarget) -> Self {
        Self {
            repository: t.repository.as_ref(),
            organization: t.organization.as_ref(),
            enterprise: t.enterprise.as_ref(),
        }
    }
}

impl<'a> From<&'a WorkflowJobEvent> for Subject<'a> {
    fn from(e: &'a WorkflowJobEvent) -> Self {
        Self {
            repository: e.repository.as_ref(),
            organization: e.organization.as_ref(),
            enterprise: e.enterprise.as_ref(),
        }
    }
}

impl<'a> Subject<'a> {
    /// The scopes this delivery may belong to, most specific first: its
    /// repository, the payload's organization, the repository's owner (as
    /// an organization), its enterprise.
    pub fn candidates(self) -> impl Iterator<Item = ScopeRef<'a>> {
        let repo = self.repository.map(Repository::owner_and_name);
        repo.map(|(owner, name)| ScopeRef::Repository { owner, name })
            .into_iter()
            .chain(
                self.organization
                    .map(|o| ScopeRef::Organization { name: &o.login }),
            )
            .chain(repo.map(|(owner, _)| ScopeRef::Organization { name: owner }))
            .chain(
                self.enterprise
                    .map(|e| ScopeRef::Enterprise { slug: &e.slug }),
            )
    }

    /// Whether a delivery sent to `scope`'s own hook is about it. An
    /// enterprise's payloads do not always name the enterprise, so one that
    /// names none belongs.
    pub fn belongs_to(self, scope: &EntityScope) -> bool {
        match scope {
            EntityScope::Repository { .. } => self.repository.is_some_and(|r| {
                let (owner, name) = r.owner_and_name();
                ScopeRef::Repository { owner, name }.is(scope)
            }),
            EntityScope::Organization { .. } => {
                self.organization
                    .is_some_and(|o| ScopeRef::Organization { name: &o.login }.is(scope))
                    || self.repository.is_some_and(|r| {
                        ScopeRef::Organization {
                            name: r.owner_and_name().0,
                        }
                        .is(scope)
                    })
            }
            EntityScope::Enterprise { .. } => self
                .enterprise
                .is_none_or(|e| ScopeRef::Enterprise { slug: &e.slug }.is(scope)),
        }
    }
}

/// The header a GitHub Enterprise Server puts on its deliveries, naming its
/// host; github.com sends none.
pub const ENTERPRISE_HOST_HEADER: &str = "X-GitHub-Enterprise-Host";

/// The host a delivery came from: its `X-GitHub-Enterprise-Host`, or
/// `github.com` without one; lowercase, without a port.
pub fn delivery_host(enterprise_host: Option<&str>) -> String {
    enterprise_host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map_or_else(|| "github.com".to_owned(), url_host)
}

/// The lowercase host of an endpoint's web URL (`https://HOST[:port]/…`),
/// as [`delivery_host`] spells it.
pub fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.to_ascii_lowercase()
}

/// Of the entities registered for one scope (one per endpoint), the one a
/// delivery from `host` is for: the only one, or the one whose endpoint is
/// on that host. `None` when several are and none (or more than one) is on
/// it; the caller cannot tell them apart.
pub fn pick_by_host<'t, T>(
    candidates: &'t [T],
    host: &str,
    host_of: impl Fn(&T) -> &str,
) -> Option<&'t T> {
    match candidates {
        [] => None,
        [only] => Some(only),
        many => {
            let mut on_host = many.iter().filter(|c| host_of(c) == host);
            match (on_host.next(), on_host.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        }
    }
}

/// Routes a delivery to the first of its [`Subject::candidates`] that
/// `lookup` knows (a GitHub App's single hook, or the shared hook).
pub fn route<'a, T>(
    subject: Subject<'a>,
    lookup: impl FnMut(ScopeRef<'a>) -> Option<T>,
) -> Option<T> {
    subject.candidates().find_map(lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_come_from_github_com_unless_a_ghes_says_so() {
        assert_eq!(delivery_host(None), "github.com");
        assert_eq!(delivery_host(Some("  ")), "github.com");
        assert_eq!(delivery_host(Some("GHES.example.com")), "ghes.example.com");
        assert_eq!(url_host("https://github.com"), "github.com");
        assert_eq!(
            url_host("https://GHES.example.com:8443/"),
            "ghes.example.com"
        );
        assert_eq!(url_host("http://ghes.internal/path"), "ghes.internal");
    }

    #[test]
    fn twins_on_two_endpoints_are_told_apart_by_host() {
        let twins = [("a", "github.com"), ("b", "ghes.example.com")];
        fn host<'a>(c: &'a (&'static str, &'static str)) -> &'a str {
            c.1
        }
        assert_eq!(
            pick_by_host(&twins, "github.com", host).map(|c| c.0),
            Some("a")
        );
        assert_eq!(
            pick_by_host(&twins, "ghes.example.com", host).map(|c| c.0),
            Some("b")
        );
        assert_eq!(pick_by_host(&twins, "other.example.com", host), None);
        // A single registration takes its deliveries whatever the host.
        assert_eq!(
            pick_by_host(&twins[1..], "github.com", host).map(|c| c.0),
            Some("b")
        );
        assert_eq!(pick_by_host(&[], "github.com", host), None);
    }
    use crate::webhook::Account;

    fn repo(full_name: &str) -> Repository {
        let (owner, name) = full_name.split_once('/').unwrap();
        Repository {
            id: None,
            name: name.into(),
            full_name: full_name.into(),
            owner: Account {
                login: owner.into(),
                id: None,
            },
            html_url: None,
        }
    }

    fn org(login: &str) -> Organization {
        Organization {
            login: login.into(),
            id: None,
        }
    }

    fn ent(slug: &str) -> Enterprise {
        Enterprise {
            slug: slug.into(),
            id: None,
        }
    }

    fn repo_scope(owner: &str, name: &str) -> EntityScope {
        EntityScope::Repository {
            owner: owner.into(),
            name: name.into(),
        }
    }

    fn org_scope(name: &str) -> EntityScope {
        EntityScope::Organization { name: name.into() }
    }

    fn ent_scope(slug: &str) -> EntityScope {
        EntityScope::Enterprise { slug: slug.into() }
    }

    /// Routes against a registry of scopes, as the server's catalog would.
    fn route_in<'s>(registered: &'s [EntityScope], s: Subject<'_>) -> Option<&'s EntityScope> {
        route(s, |c| registered.iter().find(|r| c.is(r)))
    }

    #[test]
    fn candidates_run_from_repository_to_enterprise() {
        let (r, o, e) = (repo("acme/app"), org("acme-org"), ent("big"));
        let s = Subject {
            repository: Some(&r),
            organization: Some(&o),
            enterprise: Some(&e),
        };
        assert_eq!(
            s.candidates().collect::<Vec<_>>(),
            [
                ScopeRef::Repository {
                    owner: "acme",
                    name: "app"
                },
                ScopeRef::Organization { name: "acme-org" },
                ScopeRef::Organization { name: "acme" },
                ScopeRef::Enterprise { slug: "big" },
            ]
        );
        assert_eq!(Subject::default().candidates().count(), 0);
    }

    #[test]
    fn route_prefers_the_repository_then_the_organization_then_the_enterprise() {
        let (r, o, e) = (repo("Acme/App"), org("acme"), ent("big"));
        let s = Subject {
            repository: Some(&r),
            organization: Some(&o),
            enterprise: Some(&e),
        };
        let all = [
            ent_scope("big"),
            org_scope("ACME"),
            repo_scope("acme", "app"),
        ];
        assert_eq!(route_in(&all, s), Some(&all[2]));
        assert_eq!(route_in(&all[..2], s), Some(&all[1]));
        assert_eq!(route_in(&all[..1], s), Some(&all[0]));
        assert_eq!(route_in(&[repo_scope("acme", "other")], s), None);
    }

    #[test]
    fn route_falls_back_to_the_repository_owner() {
        let r = repo("acme/app");
        let s = Subject {
            repository: Some(&r),
            ..Subject::default()
        };
        let orgs = [org_scope("acme")];
        assert_eq!(route_in(&orgs, s), Some(&orgs[0]));
    }

    #[test]
    fn belongs_to_compares_names_without_case() {
        let (r, o) = (repo("Acme/App"), org("Acme-Org"));
        let s = Subject {
            repository: Some(&r),
            organization: Some(&o),
            enterprise: None,
        };
        assert!(s.belongs_to(&repo_scope("acme", "app")));
        assert!(!s.belongs_to(&repo_scope("acme", "other")));
        assert!(s.belongs_to(&org_scope("acme-org")));
        // An organization also owns its repositories' deliveries.
        assert!(s.belongs_to(&org_scope("ACME")));
        assert!(!s.belongs_to(&org_scope("elsewhere")));
    }

    #[test]
    fn a_repository_hook_needs_a_repository() {
        let o = org("acme");
        let s = Subject {
            organization: Some(&o),
            ..Subject::default()
        };
        assert!(!s.belongs_to(&repo_scope("acme", "app")));
    }

    #[test]
    fn an_enterprise_owns_deliveries_that_name_no_enterprise() {
        let e = ent("Big");
        assert!(Subject::default().belongs_to(&ent_scope("big")));
        let named = Subject {
            enterprise: Some(&e),
            ..Subject::default()
        };
        assert!(named.belongs_to(&ent_scope("big")));
        assert!(!named.belongs_to(&ent_scope("small")));
    }

    #[test]
    fn full_name_wins_over_owner_login() {
        let mut r = repo("acme/app");
        r.owner.login = "renamed".into();
        let s = Subject {
            repository: Some(&r),
            ..Subject::default()
        };
        assert!(s.belongs_to(&repo_scope("acme", "app")));
        assert!(!s.belongs_to(&org_scope("renamed")));
    }
}
