//! `mcpgw call METHOD [PARAMS]`: one request, its result printed as JSON.
//!
//! Through the control socket it is answered by the running gateway's `/mcp`, exactly as a
//! network client would be. With `--url` mcpgw is itself an MCP client of that endpoint, over
//! the same TLS-identity path the gateway uses for its upstreams.

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use crate::cli::{CallArgs, UsageError};
use crate::config::{self, GlobalPaths};
use crate::control::client::ControlClient;
use crate::jsonrpc;
use crate::store::{Transport, UpstreamAuth};
use crate::upstream::clients::ClientCache;
use crate::upstream::connection::{self, Connection};
use crate::upstream::identity::PathPolicy;

/// Run the call and print the result; a JSON-RPC error exits 1 with its message.
pub async fn run(args: &CallArgs, globals: &GlobalPaths, _json: bool) -> anyhow::Result<()> {
    let params: Option<Value> = match &args.params {
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|e| UsageError(format!("PARAMS is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    if args.url.is_none() && args.tls.is_set() {
        return Err(UsageError(
            "--ca-cert, --client-cert, --client-key and --server-name apply to --url only".into(),
        )
        .into());
    }
    let timeout = Duration::from_secs(args.timeout.max(1));
    let answer = match &args.url {
        None => {
            let client = ControlClient::new(config::client_socket(globals));
            let request = jsonrpc::request(1, &args.method, params);
            tokio::time::timeout(timeout, client.post("/mcp", Some(&request)))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {} s", timeout.as_secs()))??
        }
        Some(url) => direct(args, url, params, timeout).await?,
    };
    if let Some(err) = answer.get("error") {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let code = err.get("code").and_then(Value::as_i64).unwrap_or_default();
        bail!("{} failed: {message} (JSON-RPC error {code})", args.method);
    }
    super::print_json(answer.get("result").unwrap_or(&Value::Null))
}

async fn direct(
    args: &CallArgs,
    url: &str,
    params: Option<Value>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let settings = args.tls.settings()?;
    let transport = args
        .transport
        .unwrap_or(if url.trim_end_matches('/').ends_with("/sse") {
            Transport::Sse
        } else {
            Transport::StreamableHttp
        });
    let client = ClientCache::new(PathPolicy::default()).client_for(url, &settings)?;
    let headers = crate::upstream::headers::auth_headers(&UpstreamAuth {
        bearer: args.bearer.clone(),
        headers: Vec::new(),
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    let link = connection::Link::Http {
        client,
        transport,
        headers,
    };
    let conn = Connection::open(
        link,
        timeout,
        std::sync::Arc::new(|_| {}),
        crate::store::EraChoice::Auto,
        connection::gateway_hello(),
    )
    .await?;
    Ok(conn.request(&args.method, params, timeout).await?)
}
