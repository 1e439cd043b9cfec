//! `--stdio`: the same tools, resources and prompts served on stdin/stdout, one JSON-RPC message
//! per line (the MCP stdio transport), so that a stdio upstream can be measured and tested like
//! for like with the HTTP one. The process is one session (`stdio`); both eras are answered as
//! over HTTP (`initialize` or `server/discover`, the 2026-07-28 `_meta` envelope).
//!
//! Lines are read and written on threads of their own with blocking I/O (tokio's stdin and
//! stdout go through its blocking pool, a hop per line); each request runs as a task, so many
//! may be in flight at once, and their answers leave in the order they are ready. Nothing but
//! messages goes to stdout.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use serde_json::{Value, json};

use crate::{AppState, PeerCn, answer, run_action, take_cancel_or_answer, talking_call};

/// The one session a stdio server has.
const SESSION: &str = "stdio";

/// Serve until stdin ends.
pub async fn serve(state: Arc<AppState>) {
    let (out, lines) = std_mpsc::channel::<String>();
    let writer = std::thread::spawn(move || write_lines(lines));
    let runtime = tokio::runtime::Handle::current();
    let reader = {
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = line.trim();
                if text.is_empty() {
                    continue;
                }
                let msg = match serde_json::from_str::<Value>(text) {
                    Ok(msg) => msg,
                    Err(e) => {
                        let error = json!({"jsonrpc": "2.0", "id": null,
                            "error": {"code": -32700, "message": format!("parse error: {e}")}});
                        let _ = out.send(error.to_string());
                        continue;
                    }
                };
                runtime.spawn(handle(state.clone(), out.clone(), msg));
            }
        })
    };
    let _ = reader.await;
    drop(out);
    // The writer ends once every task still answering has dropped its sender.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
}

/// One message from the client.
async fn handle(state: Arc<AppState>, out: std_mpsc::Sender<String>, msg: Value) {
    if take_cancel_or_answer(&state, Some(SESSION), &msg) {
        return;
    }
    if msg.get("method").and_then(Value::as_str) == Some("initialize") {
        let hello = msg.get("params").cloned().unwrap_or_default();
        state.sessions.lock().unwrap().insert(SESSION.into());
        state.hellos.lock().unwrap().insert(SESSION.into(), hello);
    }
    if let Some(action) = talking_call(&msg) {
        let mut said = run_action(state, msg.get("id").cloned().unwrap_or_default(), action);
        while let Some(m) = said.recv().await {
            let _ = out.send(m.to_string());
        }
        return;
    }
    if let Some(reply) = answer(&state, &PeerCn(None), Some(SESSION), &msg).await {
        let _ = out.send(reply.to_string());
    }
}

/// Write each message as one line, flushing when no other is waiting.
fn write_lines(lines: std_mpsc::Receiver<String>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(line) = next {
            if out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .is_err()
            {
                return;
            }
            next = lines.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}
