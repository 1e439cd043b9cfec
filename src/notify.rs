//! systemd readiness (`Type=notify`): when `NOTIFY_SOCKET` is set, tell the service manager
//! that the gateway is ready, reloading or stopping, as sd_notify(3) does.
//!
//! The protocol is one datagram of `KEY=VALUE` lines on a Unix socket, simple enough not to
//! need a crate. A path starting with `@` names a socket in the abstract namespace. Failures
//! are logged and otherwise ignored: a gateway that serves but could not say so is better
//! than one that refuses to start (systemd then times the start out and says why).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for `Type=notify` services.
const ENV: &str = "NOTIFY_SOCKET";

/// Start-up is complete: the listener accepts and the control socket answers.
pub fn ready() {
    send("READY=1");
}

/// A reload begins; the returned guard reports `READY=1` when it is dropped, on every path out
/// of the reload (swapped, refused, or nothing to reload).
#[must_use = "READY=1 is sent when the guard is dropped"]
pub fn reloading() -> Reloading {
    send("RELOADING=1");
    Reloading(())
}

/// Shutdown has begun: no new connections, in-flight ones drain.
pub fn stopping() {
    send("STOPPING=1");
}

/// See [`reloading`].
#[derive(Debug)]
pub struct Reloading(());

impl Drop for Reloading {
    fn drop(&mut self) {
        ready();
    }
}

fn send(state: &str) {
    let Some(target) = std::env::var_os(ENV) else {
        return;
    };
    if let Err(err) = send_to(&target.to_string_lossy(), state) {
        tracing::warn!(socket = %target.to_string_lossy(), state, error = %err, "cannot notify the service manager");
    }
}

fn send_to(target: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn at_sign_means_the_abstract_namespace() {
        let name = format!("mcpgw-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
