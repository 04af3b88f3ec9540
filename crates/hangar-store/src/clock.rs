//! Hangar's clock, shared by the store (every timestamp it writes) and the
//! scheduler (every comparison it makes against them), so the two always
//! agree. It is the wall clock, moved by however far tokio's clock is
//! ahead of the real one: in production the two run together and this is
//! exactly the wall clock; under tokio's paused clock (tests), time moves
//! only as the test advances it, for the store and the scheduler alike.

use chrono::{DateTime, Utc};

/// The current time.
pub fn now() -> DateTime<Utc> {
    let virtual_now = tokio::time::Instant::now().into_std();
    let real_now = std::time::Instant::now();
    let wall = Utc::now();
    let shift = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or_default();
    match virtual_now.checked_duration_since(real_now) {
        Some(ahead) => wall + shift(ahead),
        None => wall - shift(real_now - virtual_now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn is_the_wall_clock_when_time_runs() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let d = now() - Utc::now();
            assert!(d.num_milliseconds().abs() < 50, "{d:?}");
        });
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_paused_clock() {
        let t0 = now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let d = now() - t0;
        // An hour, give or take the real time the test took.
        assert!(
            (d - chrono::Duration::hours(1)).num_seconds().abs() <= 1,
            "{d:?}"
        );
    }
}
