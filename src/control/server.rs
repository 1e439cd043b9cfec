//! Server side of the control socket.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

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
    _lock: File,
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
        let _ = std::fs::remove_file(path);
        // Create the socket already owner-only, closing the window between bind and chmod.
        let old_umask = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old_umask);
        let listener = bound.map_err(|error| ControlError::Bind {
            path: display.clone(),
            error,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |error| ControlError::Bind {
                path: display,
                error,
            },
        )?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            _lock: lock,
        })
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
        let own_uid = rustix::process::geteuid().as_raw();
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
            let peer_uid = stream.peer_cred().map(|c| c.uid()).ok();
            if !peer_uid.is_some_and(|uid| uid == own_uid || uid == 0) {
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
        let _ = std::fs::remove_file(&self.path);
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
