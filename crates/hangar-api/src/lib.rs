//! Hangar's HTTP wire types, shared by the server and the CLI.
//!
//! These are not the domain types: they are what crosses the wire, with the
//! field names the contract pins (DESIGN §4). The server converts at its
//! edge; the CLI prints them. Every type has an OpenAPI schema.
//!
//! [`client::Client`] speaks these types over HTTP, so the CLI (and tests)
//! cannot drift from what the server answers.

pub mod client;
pub mod dto;
pub mod scalesets;

pub use dto::*;
pub use scalesets::*;
