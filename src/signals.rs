//! Process signals mapped to one small enum: SIGHUP reloads ([`crate::reload`]), SIGTERM and
//! SIGINT stop the gateway gracefully. Nothing else in the program touches signals.
//!
//! Installing the handlers replaces the default action, which for SIGHUP is to terminate the
//! process: exactly the NET-02 failure of the gateway mcpgw replaces.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Re-read the serving certificate and every upstream TLS identity.
    Reload,
    /// Stop accepting, drain, exit 0.
    Shutdown,
}

/// Register the handlers now (before the gateway reports ready) and deliver signals on a channel.
pub fn install() -> std::io::Result<mpsc::UnboundedReceiver<Signal>> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            let kind = if signal == SIGHUP {
                Signal::Reload
            } else {
                Signal::Shutdown
            };
            if tx.send(kind).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
