//! The LISTEN side: one connection per instance subscribed to the registry channel, turning
//! each notice into a [`StoreChange`], and connecting again (with back-off) when it is lost.
//! Every (re)connection also publishes [`StoreChange::Resync`]: notices sent while it was down
//! are gone, so the registry compares everything once.

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast::Sender;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::{CHANNEL, Connector, PgUrl, RETRY_MAX, RETRY_MIN, StoreChange, describe};
use crate::store::fleet::ROTATION_NOTICE;
use crate::store::sessions::{ENDED_NOTICE, EVENT_NOTICE, STORED_EVENT_NOTICE};

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
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| describe(&e))?;
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
            Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                if let Some(notices) = &notices {
                    let payload = n.payload();
                    let change = if let Some(hash) = payload.strip_prefix(ENDED_NOTICE) {
                        Some(StoreChange::SessionEnded(hash.to_owned()))
                    } else if let Some((hash, message)) = payload
                        .strip_prefix(EVENT_NOTICE)
                        .and_then(|e| e.split_once(':'))
                    {
                        Some(StoreChange::SessionEvent {
                            hash: hash.to_owned(),
                            message: message.to_owned(),
                        })
                    } else if let Some((hash, id)) = payload
                        .strip_prefix(STORED_EVENT_NOTICE)
                        .and_then(|e| e.split_once(':'))
                    {
                        id.parse().ok().map(|id| StoreChange::SessionEventStored {
                            hash: hash.to_owned(),
                            id,
                        })
                    } else if let Some(id) = payload.strip_prefix(ROTATION_NOTICE) {
                        id.parse().ok().map(StoreChange::Rotation)
                    } else {
                        Some(StoreChange::Upstream(payload.to_owned()))
                    };
                    if let Some(change) = change {
                        let _ = notices.send(change);
                    }
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
