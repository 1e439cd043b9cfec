//! Two helpers the other modules here ask of their parent: a free port, and polling until
//! something holds. A file of their own, std only, so that the bench's PostgreSQL
//! (`benches/mcpload/scenarios/store.rs`) can include it beside `postgres.rs`.

use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Call `check` every 50 ms until it gives `Ok`; past `timeout`, panic with its last `Err`.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(done) => return done,
            Err(why) if Instant::now() > deadline => panic!("{why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
