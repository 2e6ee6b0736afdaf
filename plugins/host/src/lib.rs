//! Placement plugins: WebAssembly components implementing the
//! `shardgate:placement@0.1.0` world (`wit/placement.wit`), run in
//! wasmtime. This is the only crate that links wasmtime.
//!
//! Why a sandbox this strict: a plugin is code an operator wrote, run on
//! every write. It gets nothing but its input and a `log` import (no WASI),
//! every call is bounded in time (epoch interruption, a 1 ms tick) and
//! memory (store limits), a trapped instance is thrown away, and every
//! answer is checked by the caller ([`PluginPlacer`]) before use.
//!
//! - [`PluginHost`]: the engine, the epoch ticker and the on-disk cache of
//!   compiled artifacts (keyed by the plugin's blake3 and wasmtime's
//!   version), so a restart loads plugins in milliseconds.
//! - [`Plugin`]: one loaded plugin with a small pool of instances.
//! - [`PluginPlacer`]: a plugin behind the gateway's `Placer` seam, with
//!   the policy's fallback.

mod cache;
mod placer;
mod plugin;

pub use placer::{PluginPlacer, Strictness};
pub use plugin::{Limits, Plugin, PluginError, PluginHost, Stats};

/// Types generated from `wit/placement.wit`.
pub mod wit {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "placement",
    });
    pub use shardgate::placement::host::Level;
    pub use shardgate::placement::types::{Candidate, Health, ObjectFacts};
}
