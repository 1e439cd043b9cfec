//! The hash map of the request path's tables (sessions, requests in flight, metrics series).
//!
//! std's default hasher (SipHash-1-3) is built to resist flooding by whoever chooses the keys, at
//! a price paid on every lookup of every forwarded call (measured in docs/PERFORMANCE.md).
//! foldhash, which hashbrown already builds here, is several times faster on short keys and
//! still seeded at random per process. The keys of these
//! tables are made by mcpgw (session ids, route templates, upstream names) or bounded per
//! session (ids of requests in flight), so flooding one bucket is not within a client's reach.

/// A `HashMap` with foldhash's randomly seeded fast hasher.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with the same hasher.
pub type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
