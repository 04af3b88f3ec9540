//! The instance and runner state machines: whatever sequence of changes is
//! asked for, only the table's moves happen; every status can still reach
//! the end; the ends are absorbing; a retired instance is never revived and
//! a runner never goes back.

use std::collections::VecDeque;

use hangar_core::{InstanceStatus as I, RunnerStatus as R};
use proptest::prelude::*;

fn instance_status() -> impl Strategy<Value = I> {
    prop::sample::select(I::ALL.to_vec())
}

fn runner_status() -> impl Strategy<Value = R> {
    prop::sample::select(R::ALL.to_vec())
}

/// Shortest legal path from `from` to `to` by the table, endpoints included.
fn path<S: Copy + PartialEq + 'static>(
    from: S,
    to: S,
    next: impl Fn(S) -> &'static [S],
) -> Option<Vec<S>> {
    let mut queue = VecDeque::from([vec![from]]);
    let mut seen = vec![from];
    while let Some(p) = queue.pop_front() {
        let last = *p.last().expect("paths are never empty");
        if last == to {
            return Some(p);
        }
        for &n in next(last) {
            if !seen.contains(&n) {
                seen.push(n);
                let mut longer = p.clone();
                longer.push(n);
                queue.push_back(longer);
            }
        }
    }
    None
}

/// How far along its life a runner is; a legal move always goes up.
fn runner_rank(s: R) -> u8 {
    match s {
        R::Pending => 0,
        R::Installing => 1,
        R::Idle => 2,
        R::Failed => 2,
        R::Active => 3,
        R::Terminated => 4,
    }
}

fn retired(s: I) -> bool {
    matches!(s, I::PendingDelete | I::Deleting | I::Deleted)
}

proptest! {
    #![proptest_config(crate::config(256))]

    /// Requests are applied only when the table allows them; the three ways
    /// of asking agree; a refused request changes nothing; once retired, an
    /// instance never comes back; once deleted it never moves again.
    #[test]
    fn instance_requests_follow_the_table(
        start in instance_status(),
        asks in prop::collection::vec(instance_status(), 0..64),
    ) {
        let mut s = start;
        for to in asks {
            let allowed = s.successors().contains(&to);
            prop_assert_eq!(s.can_transition_to(to), allowed);
            match s.check_transition(to) {
                Ok(()) => prop_assert!(allowed, "{} -> {} accepted", s, to),
                Err(e) => {
                    prop_assert!(!allowed, "{} -> {} refused", s, to);
                    prop_assert_eq!(e.machine, "instance");
                    prop_assert_eq!((e.from, e.to), (s.as_str(), to.as_str()));
                    continue;
                }
            }
            prop_assert!(!retired(s) || retired(to), "{} revived to {}", s, to);
            prop_assert_ne!(s, I::Deleted, "deleted moved to {}", to);
            prop_assert_eq!(to.holds_capacity(), to != I::Deleted);
            s = to;
        }
    }

    /// Runner requests: only the table's moves, each strictly forward, and
    /// nothing leaves `terminated`.
    #[test]
    fn runner_requests_only_move_forward(
        start in runner_status(),
        asks in prop::collection::vec(runner_status(), 0..64),
    ) {
        let mut s = start;
        for to in asks {
            let allowed = s.successors().contains(&to);
            prop_assert_eq!(s.can_transition_to(to), allowed);
            prop_assert_eq!(s.check_transition(to).is_ok(), allowed);
            if !allowed {
                continue;
            }
            prop_assert!(runner_rank(to) > runner_rank(s), "{} -> {} goes back", s, to);
            prop_assert_ne!(s, R::Terminated);
            s = to;
        }
    }

    /// Wherever a random walk of legal moves has left an instance, a legal
    /// path to `deleted` exists, no longer than there are statuses, and
    /// every step of it is accepted.
    #[test]
    fn every_instance_status_reaches_deleted(
        start in instance_status(),
        walk in prop::collection::vec(0usize..4, 0..32),
    ) {
        let mut s = start;
        for pick in walk {
            let next = s.successors();
            if next.is_empty() {
                break;
            }
            s = next[pick % next.len()];
        }
        let p = path(s, I::Deleted, I::successors);
        prop_assert!(p.is_some(), "{} cannot reach deleted", s);
        let p = p.unwrap();
        prop_assert!(p.len() <= I::ALL.len());
        for w in p.windows(2) {
            prop_assert!(w[0].check_transition(w[1]).is_ok());
        }
    }

    #[test]
    fn every_runner_status_reaches_terminated(
        start in runner_status(),
        walk in prop::collection::vec(0usize..6, 0..16),
    ) {
        let mut s = start;
        for pick in walk {
            let next = s.successors();
            if next.is_empty() {
                break;
            }
            s = next[pick % next.len()];
        }
        let p = path(s, R::Terminated, R::successors);
        prop_assert!(p.is_some(), "{} cannot reach terminated", s);
        for w in p.unwrap().windows(2) {
            prop_assert!(w[0].check_transition(w[1]).is_ok());
        }
    }

    /// `deleted` and `terminated` refuse every request, and their names
    /// parse back to themselves like every other status.
    #[test]
    fn the_ends_are_absorbing(to_i in instance_status(), to_r in runner_status()) {
        prop_assert!(I::Deleted.check_transition(to_i).is_err());
        prop_assert!(R::Terminated.check_transition(to_r).is_err());
        prop_assert_eq!(to_i.to_string().parse::<I>(), Ok(to_i));
        prop_assert_eq!(to_r.to_string().parse::<R>(), Ok(to_r));
        let json = serde_json::to_string(&to_i).unwrap();
        prop_assert_eq!(json, format!("\"{}\"", to_i.as_str()));
    }
}
