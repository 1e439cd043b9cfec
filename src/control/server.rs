//! Server side of the control socket.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The directory for the socket could not be created.
    #[error("cannot create control socket directory {path}: {error}")]
    Dir {
        /// Directory.
        path: String,
        /// I/O error.
        error: std::io::Error,
    },
    /// Another gateway holds the lock.
    #[error("another mcpgw is already serving control socket {path} (lock {lock} is held)")]
    Busy {
        /// Socket path.
        path: String,
        /// Lock file.
        lock: String,
    },
    /// Binding or securing the socket failed.
    #[error("cannot bind control socket {path}: {error}")]
    Bind {
        /// Socket path.
        path: String,
        /// I/O error.
        error: std::io::Error,
    },
}

/// A bound control socket, holding its lock for as long as it lives.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    lock: File,
    /// Set once the socket was handed to a new process: the file is its now.
    keep_file: Arc<AtomicBool>,
}

impl ControlSocket {
    /// Take the lock, remove a stale socket, bind, and restrict the socket to its owner.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let display = path.display().to_string();
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::create_dir_all(dir).map_err(|error| ControlError::Dir {
                path: dir.display().to_string(),
                error,
            })?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let lock_path = PathBuf::from(format!("{display}.lock"));
        // Never through a link planted at the lock's name.
        let lock = crate::files::own_file(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| ControlError::Bind {
                path: display.clone(),
                error,
            })?;
        if lock.try_lock().is_err() {
            return Err(ControlError::Busy {
                path: display,
                lock: lock_path.display().to_string(),
            });
        }
        // We hold the lock, so whatever socket is there belongs to a gateway that is gone.
        let listener = bind_owner_only(path).map_err(|error| ControlError::Bind {
            path: display.clone(),
            error,
        })?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            lock,
            keep_file: Arc::default(),
        })
    }

    /// The control socket a gateway handed over ([`crate::handoff`]): its listener and its
    /// lock (the same open lock file, so the lock was never released in between).
    pub fn inherit(
        path: &Path,
        listener: std::os::unix::net::UnixListener,
        lock: File,
    ) -> Result<Self, ControlError> {
        let bind = |error| ControlError::Bind {
            path: path.display().to_string(),
            error,
        };
        listener.set_nonblocking(true).map_err(bind)?;
        Ok(Self {
            listener: UnixListener::from_std(listener).map_err(bind)?,
            path: path.to_owned(),
            lock,
            keep_file: Arc::default(),
        })
    }

    /// Copies of the listener and the lock, to hand to a new process, and the switch that
    /// leaves the socket file in place at the stop (the new process serves it then).
    pub fn share(&self) -> std::io::Result<(OwnedFd, OwnedFd, Arc<AtomicBool>)> {
        Ok((
            self.listener.as_fd().try_clone_to_owned()?,
            self.lock.as_fd().try_clone_to_owned()?,
            self.keep_file.clone(),
        ))
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve `app` to permitted peers until `stop` fires, then remove the socket file.
    pub async fn run(
        self,
        app: crate::http::App,
        stop: CancellationToken,
        graceful: Arc<GracefulShutdown>,
    ) {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(error = %err, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(peer_uid) = peer_permitted(&stream) {
                tracing::warn!(peer_uid, "control socket: refused a peer with another uid");
                tokio::spawn(refuse(stream));
                continue;
            }
            tokio::spawn(crate::server::serve_connection(
                stream,
                app.clone(),
                graceful.watcher(),
                crate::server::HEADER_TIMEOUT,
                stop.clone(),
            ));
        }
        if !self.keep_file.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind a Unix socket at `path` (over a stale one) that only its owner may connect to: created
/// under umask 0177, closing the window between bind and chmod, then set to 0600.
pub(crate) fn bind_owner_only(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let old_umask = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old_umask);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Whether the peer of a Unix socket runs as the gateway's user (or root), who alone may use
/// its sockets; `Err` with the peer's uid (if known) otherwise.
pub(crate) fn peer_permitted(stream: &tokio::net::UnixStream) -> Result<(), Option<u32>> {
    let own_uid = rustix::process::geteuid().as_raw();
    let peer_uid = stream.peer_cred().map(|c| c.uid()).ok();
    if peer_uid.is_some_and(|uid| uid == own_uid || uid == 0) {
        Ok(())
    } else {
        Err(peer_uid)
    }
}

/// Tell a refused peer why, in HTTP so the CLI can show it, then close. The request head is
/// read first (bounded in size and time): answering before the client finished sending makes
/// its HTTP stack report a cancelled request instead of our answer.
async fn refuse(mut stream: tokio::net::UnixStream) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let body = r#"{"error":{"code":"forbidden","message":"the control socket only serves its owner's uid"}}"#;
    let response = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
