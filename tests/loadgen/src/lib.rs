//! The load generator's parts that tests share: SigV4 signing for
//! requests written byte by byte, and the mixed load of valid and invalid
//! requests on keep-alive connections.

pub mod mix;
pub mod sigv4;
