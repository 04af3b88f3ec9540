//! An in-memory snapshot of what webhook intake needs: every entity with its
//! webhook secret, every GitHub App's hook secret, and every pool's labels.
//!
//! Intake verifies signatures and matches labels against this snapshot, so a
//! forged delivery costs an HMAC and nothing else — never a database query.
//! The admin API rebuilds it after every change it makes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hangar_core::matching::{PoolCandidate, rank_pools};
use hangar_core::{Entity, EntityId, EntityKind, Labels, PoolId, ScopeRef, Secret};
use hangar_github::routing;
use hangar_store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct PoolEntry {
    pub id: PoolId,
    pub tags: Labels,
    pub priority: u32,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct EntityEntry {
    pub entity: Entity,
    pub secret: Secret,
    /// Lowercase host of its endpoint's web URL (see
    /// [`routing::delivery_host`]).
    pub host: String,
    pub pools: Vec<PoolEntry>,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub entities: HashMap<EntityId, Arc<EntityEntry>>,
    /// (kind, lowercase owner, lowercase name) → its entities, one per
    /// endpoint.
    by_scope: HashMap<(EntityKind, String, String), Vec<Arc<EntityEntry>>>,
    /// GitHub App id → that App's webhook secrets (one per credentials).
    pub apps: HashMap<i64, Vec<Secret>>,
    /// Lowercase controller ids whose `/webhooks/<id>` is the shared hook:
    /// this controller's and those of garm deployments imported into it.
    controller_ids: HashSet<String>,
}

impl Snapshot {
    pub fn entity(&self, id: &EntityId) -> Option<&Arc<EntityEntry>> {
        self.entities.get(id)
    }

    /// The entity registered for `scope` that a delivery from `host` is
    /// for (see [`routing::pick_by_host`]).
    pub fn by_scope(&self, scope: ScopeRef<'_>, host: &str) -> Option<&Arc<EntityEntry>> {
        let twins = self.by_scope.get(&scope_key(scope))?;
        routing::pick_by_host(twins, host, |e| &e.host)
    }

    /// Whether `/webhooks/<id>` names a controller (garm's hook URL), not
    /// an entity.
    pub fn is_controller(&self, id: &str) -> bool {
        self.controller_ids.contains(&id.to_ascii_lowercase())
    }

    pub fn of_kind(&self, kind: Option<EntityKind>) -> impl Iterator<Item = &Arc<EntityEntry>> {
        self.entities
            .values()
            .filter(move |e| kind.is_none_or(|k| e.entity.scope.kind() == k))
    }
}

fn scope_key(scope: ScopeRef<'_>) -> (EntityKind, String, String) {
    match scope {
        ScopeRef::Repository { owner, name } => (
            EntityKind::Repository,
            owner.to_ascii_lowercase(),
            name.to_ascii_lowercase(),
        ),
        ScopeRef::Organization { name } => (
            EntityKind::Organization,
            String::new(),
            name.to_ascii_lowercase(),
        ),
        ScopeRef::Enterprise { slug } => (
            EntityKind::Enterprise,
            String::new(),
            slug.to_ascii_lowercase(),
        ),
    }
}

/// The shared, swappable snapshot plus an approximate per-pool load used to
/// break priority ties.
#[derive(Debug, Default)]
pub struct Catalog {
    snapshot: RwLock<Arc<Snapshot>>,
    load: RwLock<HashMap<PoolId, u32>>,
    /// When a miss last rebuilt the snapshot (see [`Catalog::refresh_after_miss`]).
    missed: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The least time between two rebuilds a miss asks for.
const MISS_REFRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Catalog {
    /// After a delivery found no entity, or no pool for its labels: on a
    /// database other replicas share, the entity or pool may have been
    /// added (or its secret changed) through another replica a moment ago,
    /// before this one's periodic rebuild. Rebuilds the snapshot now, at
    /// most once per 100 ms (a stream of unknown deliveries cannot hammer
    /// the database), and says whether it did; never on SQLite, where only
    /// this process changes the catalog and rebuilds it at once.
    pub async fn refresh_after_miss(&self, store: &Store) -> bool {
        if store.backend_name() == "sqlite" {
            return false;
        }
        {
            let mut last = self.missed.lock().expect("catalog lock");
            if last.is_some_and(|t| t.elapsed() < MISS_REFRESH_EVERY) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.refresh(store).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot refresh the intake catalog after a miss");
                false
            }
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("catalog lock").clone()
    }

    /// Rebuilds the snapshot from the store.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let secrets = store.entity_webhook_secrets().await?;
        let pools = store.list_webhook_pools(None).await?;
        let apps = store.app_webhook_secrets().await?;
        let controller = store.controller_info().await?;
        let hosts: HashMap<String, String> = store
            .list_endpoints()
            .await?
            .into_iter()
            .map(|e| (e.name.as_str().to_owned(), routing::url_host(&e.base_url)))
            .collect();
        let mut snap = Snapshot {
            controller_ids: std::iter::once(controller.controller_id.to_string())
                .chain(controller.garm_controller_ids)
                .map(|id| id.to_ascii_lowercase())
                .collect(),
            ..Snapshot::default()
        };
        for (entity, secret) in secrets {
            let id = entity.id;
            let key = scope_key(entity.scope.as_scope_ref());
            let host = hosts
                .get(entity.endpoint.as_str())
                .cloned()
                .unwrap_or_default();
            let entity_pools = pools
                .iter()
                .filter(|p| p.entity_id == id)
                .map(|p| PoolEntry {
                    id: p.id,
                    tags: p.spec.tags.clone(),
                    priority: p.spec.priority,
                    enabled: p.spec.enabled,
                })
                .collect();
            let entry = Arc::new(EntityEntry {
                entity,
                secret,
                host,
                pools: entity_pools,
            });
            snap.by_scope.entry(key).or_default().push(entry.clone());
            snap.entities.insert(id, entry);
        }
        for (_, app_id, secret) in apps {
            snap.apps.entry(app_id).or_default().push(secret);
        }
        *self.snapshot.write().expect("catalog lock") = Arc::new(snap);
        Ok(())
    }

    pub async fn refresh_load(&self, store: &Store) -> Result<(), StoreError> {
        let usage = store.pool_usage().await?;
        *self.load.write().expect("load lock") =
            usage.into_iter().map(|(p, u)| (p, u.live)).collect();
        Ok(())
    }

    /// The best pool of `entity` for a job with `labels`.
    pub fn choose_pool(&self, entity: &EntityEntry, labels: &Labels) -> Option<PoolId> {
        let load = self.load.read().expect("load lock");
        let candidates: Vec<PoolCandidate<'_>> = entity
            .pools
            .iter()
            .map(|p| PoolCandidate {
                id: p.id,
                tags: &p.tags,
                priority: p.priority,
                enabled: p.enabled,
                busy: load.get(&p.id).copied().unwrap_or(0),
            })
            .collect();
        rank_pools(labels, &candidates).into_iter().next()
    }
}
