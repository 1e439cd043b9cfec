//! The Rust upstream fixture behind a gateway without auth, shared by the session and
//! subscription tests (`tests/sessions.rs`, `tests/subscriptions.rs`).

use serde_json::Value;

use super::upstream::Upstream;
use super::{Dir, Gateway, clients};

/// The fixture registered as `rs` behind a gateway without auth, and what tests reach it with.
pub struct Plain {
    pub dir: Dir,
    pub up: Upstream,
    /// Other upstreams it holds for as long as it lives.
    pub others: Vec<Upstream>,
    pub gw: Gateway,
    pub rt: tokio::runtime::Runtime,
    /// `http://ADDR` of the gateway.
    pub base: String,
    pub http: reqwest::Client,
}

pub fn plain() -> Plain {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    Plain {
        rt: tokio::runtime::Runtime::new().unwrap(),
        base: format!("http://{}", gw.addr),
        http: clients::http(None),
        dir,
        up,
        others: Vec::new(),
        gw,
    }
}

/// The JSON answer to `request`.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}
