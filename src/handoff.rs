//! Upgrade on one host without a refused connection: `mcpgw serve --upgrade` takes the listening
//! sockets from the gateway running on the same data directory, starts serving on them, then
//! tells it to go; the old one stops accepting, drains under its shutdown grace, and exits 0.
//!
//! Every gateway serves a hand-off socket, [`SOCKET_NAME`] in its data directory (mode 0600,
//! the peer's uid checked like the control socket's). The exchange on one connection:
//! 1. the new process sends [`HELLO`];
//! 2. the old sends one line of JSON (its pid and listen address) with four descriptors
//!    (SCM_RIGHTS): the TCP listener, the control socket's listener, the control socket's open
//!    lock file, and the hand-off socket's listener, in that order;
//! 3. the new process builds its state, serves on the descriptors (both processes accept on the
//!    same sockets for a moment: the kernel gives each connection to one of them), then sends
//!    [`READY`];
//! 4. the old stops accepting and drains. If the new process goes away before `READY`, the old
//!    one goes on serving as if nothing had happened.
//!
//! The lock moves with its open file: both processes share the one lock, so it is never free
//! between them and no third gateway can start on the data directory meanwhile (see
//! docs/ARCHITECTURE.md, "Upgrading in place").

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The hand-off socket's name in the data directory.
pub const SOCKET_NAME: &str = "mcpgw.handoff.sock";
/// What the new process says first: a stray connection cannot take the sockets by accident.
const HELLO: &[u8] = b"mcpgw-upgrade 1\n";
/// What the new process says once it serves.
const READY: &[u8] = b"ready\n";
/// Descriptors in one hand-off.
const FDS: usize = 4;
/// How long the new process may take from receiving the sockets to serving on them (it loads
/// the store, the upstreams, the certificate).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long either side waits for the other's next message otherwise.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an upgrade could not take the sockets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// Nothing answers on the hand-off socket.
    #[error(
        "no gateway is running on this data directory to upgrade (cannot connect to {path}: {error}); start one with `mcpgw serve`"
    )]
    NoGateway {
        /// The hand-off socket.
        path: String,
        /// Why the connection failed.
        error: std::io::Error,
    },
    /// The exchange failed part-way.
    #[error("the hand-off over {path} failed while {step}: {error}")]
    Exchange {
        /// The hand-off socket.
        path: String,
        /// What was being done.
        step: &'static str,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The running gateway sent something this one does not understand.
    #[error(
        "the running gateway's answer on {path} is not a hand-off this version understands: {detail}"
    )]
    Protocol {
        /// The hand-off socket.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

/// What the old process says along with its descriptors.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    pid: u32,
    listen: String,
}

/// The hand-off socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// The sockets taken from the running gateway.
#[derive(Debug)]
pub struct Inherited {
    /// The TCP listener.
    pub listener: std::net::TcpListener,
    /// The control socket's listener.
    pub control: std::os::unix::net::UnixListener,
    /// The control socket's lock, held.
    pub lock: std::fs::File,
    /// The hand-off socket's listener, for the next upgrade.
    pub handoff: std::os::unix::net::UnixListener,
    /// The gateway they were taken from, to be told when this one serves.
    pub predecessor: Predecessor,
}

/// The gateway the sockets were taken from, still serving until told.
#[derive(Debug)]
pub struct Predecessor {
    /// Its pid.
    pub pid: u32,
    conn: UnixStream,
}

/// Take the sockets of the gateway of `data_dir`. Blocking.
pub fn take_over(data_dir: &Path) -> Result<Inherited, HandoffError> {
    let path = socket_path(data_dir);
    let shown = path.display().to_string();
    let exchange = |step| {
        let shown = shown.clone();
        move |error| HandoffError::Exchange {
            path: shown,
            step,
            error,
        }
    };
    let mut conn = UnixStream::connect(&path).map_err(|error| HandoffError::NoGateway {
        path: shown.clone(),
        error,
    })?;
    conn.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(exchange("setting a timeout"))?;
    conn.write_all(HELLO)
        .map_err(exchange("asking for the sockets"))?;
    let mut text = [0u8; 1024];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &conn,
        &mut [IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| exchange("receiving the sockets")(e.into()))?;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(FDS);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let protocol = |detail: String| HandoffError::Protocol {
        path: shown.clone(),
        detail,
    };
    let header: Header = serde_json::from_slice(text[..got.bytes].trim_ascii_end())
        .map_err(|e| protocol(format!("its header does not parse ({e})")))?;
    let [listener, control, lock, handoff]: [OwnedFd; FDS] = fds
        .try_into()
        .map_err(|fds: Vec<_>| protocol(format!("{} descriptors instead of {FDS}", fds.len())))?;
    conn.set_read_timeout(None)
        .map_err(exchange("setting a timeout"))?;
    tracing::info!(from_pid = header.pid, listen = %header.listen, "took the listening sockets over from the running gateway");
    Ok(Inherited {
        listener: listener.into(),
        control: control.into(),
        lock: lock.into(),
        handoff: handoff.into(),
        predecessor: Predecessor {
            pid: header.pid,
            conn,
        },
    })
}

impl Predecessor {
    /// Tell the old process this one serves now: it stops accepting and drains. Blocking (one
    /// small write).
    pub fn serving(mut self) {
        if let Err(error) = self.conn.write_all(READY) {
            // The old one keeps serving beside us until it is stopped; nothing is lost.
            tracing::warn!(from_pid = self.pid, %error, "cannot tell the previous gateway to stop; both serve until it is stopped");
        } else {
            tracing::info!(
                from_pid = self.pid,
                "told the previous gateway to drain and exit"
            );
        }
    }
}

/// What a running gateway can hand over: copies of its descriptors.
#[derive(Debug)]
pub struct Offer {
    listener: OwnedFd,
    control: OwnedFd,
    lock: OwnedFd,
    /// Set when the control socket was handed over: the old process leaves its file in place.
    keep_control_file: Arc<AtomicBool>,
    handoff: tokio::net::UnixListener,
    listen: String,
}

impl Offer {
    /// The offer of a gateway serving `listener` and `control`, on the hand-off socket of
    /// `data_dir`: bound now (the caller holds the control socket's lock, so a socket left
    /// there belongs to a gateway that is gone), or inherited from the previous gateway.
    pub fn new(
        data_dir: &Path,
        listener: &tokio::net::TcpListener,
        control: &crate::control::server::ControlSocket,
        inherited: Option<std::os::unix::net::UnixListener>,
    ) -> std::io::Result<Self> {
        let handoff = match inherited {
            Some(handoff) => {
                handoff.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(handoff)?
            }
            None => crate::control::server::bind_owner_only(&socket_path(data_dir))?,
        };
        let (control, lock, keep_control_file) = control.share()?;
        Ok(Self {
            listener: listener.as_fd().try_clone_to_owned()?,
            control,
            lock,
            keep_control_file,
            handoff,
            listen: listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        })
    }

    /// Serve hand-offs until one succeeds (then fire `handed_over`) or `stop` fires. One at a
    /// time; a failed one leaves this gateway serving as before.
    pub async fn serve(self, handed_over: CancellationToken, stop: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                accepted = this.handoff.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "hand-off socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(peer_uid) = crate::control::server::peer_permitted(&stream) {
                tracing::warn!(peer_uid, "hand-off socket: refused a peer with another uid");
                continue;
            }
            let offer = this.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let conn = stream.into_std()?;
                conn.set_nonblocking(false)?;
                offer.give(conn)
            })
            .await;
            match outcome {
                Ok(Ok(new_pid)) => {
                    this.keep_control_file.store(true, Ordering::Release);
                    tracing::info!(?new_pid, "a new gateway serves on the sockets; draining");
                    handed_over.cancel();
                    return;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "upgrade abandoned: the new gateway did not start serving; this one goes on");
                }
                Err(join) => {
                    tracing::error!(error = %join, "upgrade abandoned: the hand-off task did not finish; this one goes on");
                }
            }
        }
    }

    /// One exchange (blocking): hello, the descriptors, then wait for `ready`. The new
    /// process's pid, when the kernel says.
    fn give(&self, mut conn: UnixStream) -> std::io::Result<Option<i32>> {
        expect(
            &mut conn,
            HELLO,
            STEP_TIMEOUT,
            "the peer did not ask for an upgrade this version understands",
        )?;
        let header = serde_json::to_vec(&Header {
            pid: std::process::id(),
            listen: self.listen.clone(),
        })
        .map_err(std::io::Error::other)?;
        let fds = [
            self.listener.as_fd(),
            self.control.as_fd(),
            self.lock.as_fd(),
            self.handoff.as_fd(),
        ];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(std::io::Error::other(
                "the descriptors do not fit a message",
            ));
        }
        rustix::net::sendmsg(
            &conn,
            &[IoSlice::new(&header)],
            &mut control,
            SendFlags::empty(),
        )?;
        let new_pid = rustix::net::sockopt::socket_peercred(&conn)
            .ok()
            .map(|cred| cred.pid.as_raw_nonzero().get());
        tracing::info!(
            ?new_pid,
            "sockets handed to a new gateway; waiting for it to serve"
        );
        expect(
            &mut conn,
            READY,
            START_TIMEOUT,
            "the new gateway did not say it serves",
        )?;
        Ok(new_pid)
    }
}

/// Read exactly `wanted` from `conn` within `timeout`; anything else is an error saying `what`.
fn expect(
    conn: &mut UnixStream,
    wanted: &[u8],
    timeout: Duration,
    what: &'static str,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(timeout))?;
    let mut got = vec![0u8; wanted.len()];
    conn.read_exact(&mut got)?;
    if got == wanted {
        Ok(())
    } else {
        Err(std::io::Error::other(what))
    }
}

/// Why `--listen-stdin` has no socket to serve on.
#[derive(Debug, thiserror::Error)]
#[error(
    "--listen-stdin: standard input is not a listening TCP socket ({detail}); it needs the socket a launcher hands over, such as systemd with StandardInput=socket and Accept=no"
)]
pub struct StdinSocketError {
    /// What standard input is instead.
    detail: String,
}

/// The listening TCP socket handed over as standard input (systemd socket activation with
/// `StandardInput=socket`), as a listener; standard input itself is left as it is.
pub fn listener_on_stdin() -> Result<tokio::net::TcpListener, StdinSocketError> {
    use rustix::net::{SocketType, sockopt};
    let fail = |detail: String| StdinSocketError { detail };
    let stdin = rustix::stdio::stdin();
    let kind = sockopt::socket_type(stdin).map_err(|e| fail(format!("not a socket: {e}")))?;
    let listening = sockopt::socket_acceptconn(stdin).map_err(|e| fail(e.to_string()))?;
    if kind != SocketType::STREAM || !listening {
        return Err(fail(
            "a socket, but not one listening for TCP connections".into(),
        ));
    }
    let owned = rustix::io::fcntl_dupfd_cloexec(stdin, 3).map_err(|e| fail(e.to_string()))?;
    let listener = std::net::TcpListener::from(owned);
    let addr = listener
        .local_addr()
        .map_err(|e| fail(format!("no address: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(listen = %addr, "serving on the socket given as standard input");
    tokio::net::TcpListener::from_std(listener).map_err(|e| fail(e.to_string()))
}
