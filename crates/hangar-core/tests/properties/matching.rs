//! Label matching: case never matters; a pool serves a job exactly when
//! every job label is among its tags; pools rank by priority, then load,
//! the same whatever order they are listed in; more tags never lose a match.

use std::collections::BTreeSet;

use hangar_core::matching::{PoolCandidate, can_serve, choose_pool, rank_pools};
use hangar_core::{Labels, PoolId};
use proptest::prelude::*;
use uuid::Uuid;

/// A small vocabulary, so that jobs and pools share labels often.
const WORDS: [&str; 10] = [
    "self-hosted",
    "linux",
    "x64",
    "arm64",
    "gpu",
    "windows",
    "ubuntu-22.04",
    "azure-cvm",
    "k8s",
    "big",
];

/// One vocabulary word in a random mix of upper and lower case.
fn word() -> impl Strategy<Value = String> {
    (0..WORDS.len(), any::<u64>()).prop_map(|(i, bits)| {
        WORDS[i]
            .chars()
            .enumerate()
            .map(|(n, c)| {
                if bits >> (n % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

fn words(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(word(), 0..max)
}

fn labels(w: &[String]) -> Labels {
    Labels::from_strs(w).expect("vocabulary words are valid labels")
}

/// The rule, written out on lowercase strings.
fn model_serves(tags: &[String], job: &[String]) -> bool {
    let tags: BTreeSet<String> = tags.iter().map(|t| t.to_lowercase()).collect();
    !job.is_empty() && job.iter().all(|l| tags.contains(&l.to_lowercase()))
}

fn flip_case(w: &[String]) -> Vec<String> {
    w.iter()
        .map(|s| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Cand {
    id: u128,
    tags: Vec<String>,
    priority: u32,
    enabled: bool,
    busy: u32,
}

fn cands() -> impl Strategy<Value = Vec<Cand>> {
    prop::collection::vec(
        (
            0u128..1000,
            words(6),
            0u32..4,
            prop::bool::weighted(0.85),
            0u32..5,
        )
            .prop_map(|(id, tags, priority, enabled, busy)| Cand {
                id,
                tags,
                priority,
                enabled,
                busy,
            }),
        0..8,
    )
    // Pool ids are unique.
    .prop_map(|mut v| {
        let mut seen = BTreeSet::new();
        v.retain(|c| seen.insert(c.id));
        v
    })
}

fn rank(job: &Labels, cands: &[Cand]) -> Vec<PoolId> {
    let tags: Vec<Labels> = cands.iter().map(|c| labels(&c.tags)).collect();
    let list: Vec<PoolCandidate<'_>> = cands
        .iter()
        .zip(&tags)
        .map(|(c, t)| PoolCandidate {
            id: PoolId(Uuid::from_u128(c.id)),
            tags: t,
            priority: c.priority,
            enabled: c.enabled,
            busy: c.busy,
        })
        .collect();
    let ranked = rank_pools(job, &list);
    assert_eq!(choose_pool(job, &list), ranked.first().copied());
    ranked
}

proptest! {
    #![proptest_config(crate::config(256))]

    #[test]
    fn a_pool_serves_iff_every_job_label_is_a_tag(tags in words(8), job in words(5)) {
        prop_assert_eq!(can_serve(&labels(&tags), &labels(&job)), model_serves(&tags, &job));
    }

    #[test]
    fn case_never_matters(tags in words(8), job in words(5)) {
        let want = can_serve(&labels(&tags), &labels(&job));
        prop_assert_eq!(can_serve(&labels(&flip_case(&tags)), &labels(&job)), want);
        prop_assert_eq!(can_serve(&labels(&tags), &labels(&flip_case(&job))), want);
        let (a, b) = (labels(&tags), labels(&flip_case(&tags)));
        prop_assert!(a.is_subset_of(&b) && b.is_subset_of(&a));
        prop_assert_eq!(a.len(), b.len());
        for w in &job {
            prop_assert_eq!(a.contains(w), a.contains(&w.to_uppercase()));
        }
    }

    #[test]
    fn more_tags_never_lose_a_match(tags in words(6), extra in words(4), job in words(5)) {
        let mut more = tags.clone();
        more.extend(extra);
        if can_serve(&labels(&tags), &labels(&job)) {
            prop_assert!(can_serve(&labels(&more), &labels(&job)));
        }
    }

    /// The ranking is exactly: enabled pools that can serve, by priority
    /// (high first), then busy (low first), then id.
    #[test]
    fn ranking_is_priority_then_load(job in words(4), cands in cands()) {
        let job = labels(&job);
        let ranked = rank(&job, &cands);
        let mut want: Vec<&Cand> = cands
            .iter()
            .filter(|c| c.enabled && can_serve(&labels(&c.tags), &job))
            .collect();
        want.sort_by_key(|c| (std::cmp::Reverse(c.priority), c.busy, c.id));
        let want: Vec<PoolId> = want.iter().map(|c| PoolId(Uuid::from_u128(c.id))).collect();
        prop_assert_eq!(&ranked, &want);
    }

    /// Listing the pools in another order changes nothing.
    #[test]
    fn ranking_is_deterministic(
        job in words(4),
        (cands, shuffled) in cands().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
    ) {
        let job = labels(&job);
        prop_assert_eq!(rank(&job, &cands), rank(&job, &shuffled));
    }

    /// A pool given more tags stays ranked wherever it was eligible.
    #[test]
    fn more_tags_keep_a_pool_ranked(
        job in words(4),
        cands in cands(),
        pick in any::<prop::sample::Index>(),
        extra in words(4),
    ) {
        prop_assume!(!cands.is_empty());
        let job = labels(&job);
        let before = rank(&job, &cands);
        let i = pick.index(cands.len());
        let mut grown = cands.clone();
        grown[i].tags.extend(extra);
        let after = rank(&job, &grown);
        let id = PoolId(Uuid::from_u128(cands[i].id));
        if before.contains(&id) {
            prop_assert!(after.contains(&id));
        }
        prop_assert!(before.iter().all(|p| after.contains(p)));
    }

    /// A label list survives printing and parsing, and JSON.
    #[test]
    fn labels_round_trip(w in words(8)) {
        let l = labels(&w);
        prop_assert_eq!(Labels::parse_list(&l.to_string()).unwrap(), l.clone());
        let json = serde_json::to_string(&l).unwrap();
        prop_assert_eq!(serde_json::from_str::<Labels>(&json).unwrap(), l);
    }
}
