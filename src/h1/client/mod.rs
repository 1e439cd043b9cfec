//! The HTTP/1.1 client every upstream transport uses: [`request`] writes a request's bytes,
//! [`pool`] keeps connections to one origin and sends them, [`response`] reads the answer off
//! the connection, and [`wait`] is the upstream wait the pool uses at low load.
//!
//! It follows no redirects: a 3xx is an answer like any other, which the transports refuse.

pub mod pool;
pub mod request;
pub mod response;
pub mod wait;

pub use pool::{Answered, Driven, OriginError, Pool, PoolError};
pub use wait::Wait;
