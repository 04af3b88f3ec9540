//! A deterministic simulation of Hangar: the real scheduler
//! (`hangar-scheduler`, with its run loop, intake writer and sweep) over a
//! real SQLite `hangar-store`, against a simulated GitHub and simulated
//! providers, in virtual time — an hour of traffic in seconds.
//!
//! A scenario file ([`scenario`]) says what traffic arrives, how the
//! providers and webhook deliveries misbehave and what the run must
//! achieve; [`run`] plays it with a seed and returns a [`Report`]: jobs
//! served and stranded, surplus VM-minutes, GitHub calls per job and
//! time-to-runner percentiles. Dev-only: no binary of the product links it.

pub mod driver;
pub mod report;
pub mod scenario;
pub mod world;

pub use driver::run;
pub use report::{Report, markdown};
pub use scenario::Scenario;
