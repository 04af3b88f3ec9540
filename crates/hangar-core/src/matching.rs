//! Which pool serves a job: every job label must be among the pool's tags
//! (case-insensitively); among the pools that qualify, higher priority first,
//! then the one with the fewest busy runners.

use crate::ids::PoolId;
use crate::labels::Labels;

/// A pool as the matcher sees it.
#[derive(Debug, Clone)]
pub struct PoolCandidate<'a> {
    pub id: PoolId,
    pub tags: &'a Labels,
    pub priority: u32,
    pub enabled: bool,
    /// Instances of the pool currently holding capacity.
    pub busy: u32,
}

/// Whether a pool with `pool_tags` can run a job asking for `job_labels`.
/// A job with no labels matches nothing: GitHub never routes such a job to a
/// self-hosted runner.
pub fn can_serve(pool_tags: &Labels, job_labels: &Labels) -> bool {
    !job_labels.is_empty() && job_labels.is_subset_of(pool_tags)
}

/// The pools that could serve the job, best first. Ties on priority and load
/// are broken by pool id so the order is stable.
pub fn rank_pools(job_labels: &Labels, candidates: &[PoolCandidate<'_>]) -> Vec<PoolId> {
    let mut fit: Vec<&PoolCandidate<'_>> = candidates
        .iter()
        .filter(|c| c.enabled && can_serve(c.tags, job_labels))
        .collect();
    fit.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.busy.cmp(&b.busy))
            .then(a.id.cmp(&b.id))
    });
    fit.into_iter().map(|c| c.id).collect()
}

/// The best pool for the job, if any.
pub fn choose_pool(job_labels: &Labels, candidates: &[PoolCandidate<'_>]) -> Option<PoolId> {
    rank_pools(job_labels, candidates).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> PoolId {
        PoolId(Uuid::from_u128(n))
    }

    fn labels(s: &str) -> Labels {
        Labels::parse_list(s).unwrap()
    }

    #[test]
    fn every_job_label_must_be_a_pool_tag() {
        let pool = labels("self-hosted,linux,x64,gpu");
        assert!(can_serve(&pool, &labels("self-hosted,LINUX")));
        assert!(can_serve(&pool, &labels("Self-Hosted,linux,x64,gpu")));
        assert!(!can_serve(&pool, &labels("self-hosted,windows")));
        assert!(!can_serve(&pool, &Labels::default()));
    }

    #[test]
    fn priority_then_load() {
        let tags = labels("self-hosted,linux");
        let c = |n, priority, busy| PoolCandidate {
            id: id(n),
            tags: &tags,
            priority,
            enabled: true,
            busy,
        };
        let job = labels("self-hosted");
        let ranked = rank_pools(&job, &[c(1, 0, 0), c(2, 10, 5), c(3, 10, 1), c(4, 5, 0)]);
        assert_eq!(ranked, vec![id(3), id(2), id(4), id(1)]);
    }

    #[test]
    fn disabled_and_non_matching_pools_are_skipped() {
        let linux = labels("self-hosted,linux");
        let win = labels("self-hosted,windows");
        let cands = [
            PoolCandidate {
                id: id(1),
                tags: &linux,
                priority: 9,
                enabled: false,
                busy: 0,
            },
            PoolCandidate {
                id: id(2),
                tags: &win,
                priority: 9,
                enabled: true,
                busy: 0,
            },
            PoolCandidate {
                id: id(3),
                tags: &linux,
                priority: 0,
                enabled: true,
                busy: 7,
            },
        ];
        assert_eq!(choose_pool(&labels("linux"), &cands), Some(id(3)));
        assert_eq!(choose_pool(&labels("macos"), &cands), None);
    }
}
