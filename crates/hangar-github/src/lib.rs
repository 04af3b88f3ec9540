//! GitHub, as Hangar talks to it.
//!
//! [`webhook`] checks deliveries' signatures and holds the payload types
//! intake parses (only after the signature is good).

pub mod webhook;
