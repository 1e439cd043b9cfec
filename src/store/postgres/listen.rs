//! The LISTEN side: one connection per instance subscribed to the registry channel and the
//! certificate rotations' ([`super::fleet`]), turning each notice into a [`StoreChange`], and connecting again (with back-off) when it is lost.
//! Every (re)connection also publishes [`StoreChange::Resync`]: notices sent while it was down
//! are gone, so the registry compares everything once.

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast::Sender;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::fleet::CERT_CHANNEL;
use super::{CHANNEL, Connector, PgUrl, RETRY_MAX, RETRY_MIN, StoreChange, describe};

/// Keep a LISTEN connection until `stop`.
pub(super) async fn run(
    url: PgUrl,
    connector: Connector,
    changes: Sender<StoreChange>,
    stop: CancellationToken,
) {
    let mut delay = RETRY_MIN;
    let mut was_down = false;
    loop {
        match listen_once(&url, &connector, &changes, &stop, &mut was_down).await {
            Ok(()) => return,
            Err(detail) => {
                if !was_down {
                    delay = RETRY_MIN;
                    tracing::warn!(store = %url, error = %detail, "store: change notices interrupted; the registry in memory keeps serving, reconnecting");
                }
                was_down = true;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One LISTEN connection for as long as it lasts: `Ok` when stopped, `Err` when lost.
async fn listen_once(
    url: &PgUrl,
    connector: &Connector,
    changes: &Sender<StoreChange>,
    stop: &CancellationToken,
    was_down: &mut bool,
) -> Result<(), String> {
    let (client, driver) = connector
        .connect_driven(url, Some(changes.clone()))
        .await
        .map_err(|e| describe(&e))?;
    // One statement each, the registry's last: `pg_stat_activity` then shows this connection's
    // last query as `LISTEN mcpgw_registry`, which is how an operator (and a test) finds it.
    for channel in [CERT_CHANNEL, CHANNEL] {
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(|e| describe(&e))?;
    }
    if *was_down {
        tracing::info!(store = %url, "store: change notices resumed");
        *was_down = false;
    }
    let _ = changes.send(StoreChange::Resync);
    tokio::select! {
        () = stop.cancelled() => Ok(()),
        _ = driver => Err("the connection closed".to_owned()),
    }
}

/// Drive a connection's protocol until it ends, passing its notifications to `notices`.
pub(super) async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notices: Option<Sender<StoreChange>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(n)) => {
                let change = match n.channel() {
                    CHANNEL => Some(StoreChange::Upstream(n.payload().to_owned())),
                    CERT_CHANNEL => n.payload().parse().ok().map(StoreChange::Rotation),
                    _ => None,
                };
                if let (Some(notices), Some(change)) = (&notices, change) {
                    let _ = notices.send(change);
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %describe(&err), "store: connection ended");
                break;
            }
        }
    }
}
