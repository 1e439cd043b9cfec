//! A real PostgreSQL server in a temp dir for one test: `initdb`, then `postgres` on a free
//! 127.0.0.1 port with its Unix socket in the temp dir, stopped on drop. The binaries come from
//! Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`). PostgreSQL refuses to run as
//! root, so as root the cluster belongs to `nobody` and its programs run under `setpriv`.
//!
//! Host connections need the password (SCRAM), so the URL tests use carries one: what the
//! gateway must never print.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The database password in every URL the tests give; a test greps the gateway's output for it.
pub const PASSWORD: &str = "pg-Secret-7c1e95";
const USER: &str = "mcpgw";
const DATABASE: &str = "registry";

/// A running server, stopped (fast shutdown) on drop.
pub struct Postgres {
    bin: PathBuf,
    tmp: tempfile::TempDir,
    child: Option<Child>,
    /// Server settings beyond the defaults (`-c name=value`).
    settings: Vec<String>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// A fresh cluster with the database `registry`, running.
    pub fn start() -> Self {
        let bin = binaries();
        let tmp = tempfile::Builder::new()
            .prefix("mcpgw-pg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(tmp.path().join("pwfile"), PASSWORD).unwrap();
        std::fs::create_dir(tmp.path().join("sock")).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(tmp.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the PostgreSQL temp dir failed");
        }
        let data = tmp.path().join("data");
        let out = unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", tmp.path().join("pwfile").display()))
            .args(["--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_port();
        let mut pg = Self {
            bin,
            tmp,
            child: None,
            settings: Vec::new(),
            port,
        };
        pg.restart();
        pg.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    /// The store URL of the test database, password included, with `query` appended.
    pub fn url_with(&self, query: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}{query}",
            self.port
        )
    }

    /// The store URL of the test database (`sslmode=disable`: the server has no certificate).
    pub fn url(&self) -> String {
        self.url_with("?sslmode=disable")
    }

    /// Start the server (again) and wait until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let log = std::fs::File::create(self.tmp.path().join("postgres.log")).unwrap();
        let child = unprivileged(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.tmp.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(self.tmp.path().join("sock"))
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        super::wait_for(Duration::from_secs(30), || {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .unwrap();
            if ready.success() {
                return Ok(());
            }
            Err(format!("PostgreSQL did not start:\n{}", self.log()))
        });
    }

    /// Serve TLS with this certificate and key from now on (restarts the server). The key is
    /// copied where the server's user owns it with mode 0600, as PostgreSQL requires.
    pub fn serve_tls(&mut self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        self.stop();
        let (own_cert, own_key) = (
            self.tmp.path().join("server.crt"),
            self.tmp.path().join("server.key"),
        );
        std::fs::copy(cert, &own_cert).unwrap();
        std::fs::copy(key, &own_key).unwrap();
        std::fs::set_permissions(&own_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("nobody:nogroup")
                .args([&own_cert, &own_key])
                .status()
                .unwrap();
            assert!(status.success(), "chown of the server certificate failed");
        }
        self.settings = vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", own_cert.display()),
            format!("ssl_key_file={}", own_key.display()),
        ];
        self.restart();
    }

    /// Stop the server (fast shutdown: clients are disconnected) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Run `sql` in `database` with psql; its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Run `sql` in the test database.
    pub fn sql(&self, sql: &str) -> String {
        self.psql(DATABASE, sql)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of Debian's PostgreSQL programs; the test fails (it cannot run) without them.
fn binaries() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             apt-get install postgresql (.ci/setup does)"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program`, run as `nobody` when the tests run as root (initdb and postgres refuse root).
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(program)
            // A working directory `nobody` may enter.
            .current_dir("/");
        cmd
    } else {
        Command::new(program)
    }
}
