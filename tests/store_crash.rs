//! Crash safety of the SQLite store: a writer process is SIGKILLed at random points while it
//! inserts registrations; every insert it acknowledged must be present and complete afterwards.
//!
//! The writer is this test binary itself, re-run with [`WRITER_ENV`] naming the directory to
//! write in, so no helper binary is needed. It records a name in the acknowledgement file only
//! after `insert` returned, mirroring the gateway answering the CLI only after the store did.
//! SIGKILL tests process death, not power loss: the page cache survives, so this checks that
//! commits are atomic and recovered, while `synchronous=FULL` is what covers the power-loss case.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcpgw::store::sqlite::SqliteStore;
use mcpgw::store::{
    EraChoice, Health, HealthStatus, PemSource, Registration, Store, TlsSettings, Transport,
    UpstreamAuth,
};

/// Set in the child: the directory holding the database and the acknowledgement file.
const WRITER_ENV: &str = "MCPGW_TEST_STORE_CRASH_WRITER";
/// Set in the child: the round number, which prefixes the names it writes.
const ROUND_ENV: &str = "MCPGW_TEST_STORE_CRASH_ROUND";
const ROUNDS: u32 = 10;

/// Everything about a registration derives from its name, so the reader can tell a complete row
/// from a torn or mixed one.
fn expected(name: &str) -> Registration {
    let seed = name.len() as i64;
    Registration {
        name: name.to_owned(),
        url: format!("https://{name}.example:8443/mcp"),
        transport: Transport::StreamableHttp,
        tls: TlsSettings {
            ca: Some(PemSource::Path(PathBuf::from(format!(
                "/etc/{name}/ca.pem"
            )))),
            client_cert: Some(PemSource::Inline(format!("CERT-{name}-").repeat(40))),
            client_key: Some(PemSource::Inline(format!("KEY-{name}-").repeat(40))),
            server_name: Some(format!("{name}.internal")),
        },
        auth: UpstreamAuth {
            bearer: Some(format!("token-{name}")),
            headers: vec![("x-upstream".to_owned(), name.to_owned())],
        },
        enabled: true,
        era: EraChoice::Auto,
        shared_session: false,
        command: None,
        created_at: 1_700_000_000 + seed,
        updated_at: 1_700_000_000 + seed,
        health: Health {
            status: HealthStatus::Online,
            since: seed,
            last_success: Some(seed),
            last_error: Some(format!("last error of {name}")),
            consecutive_failures: 7,
        },
    }
}

/// Child entry point, not a test of its own: ignored in a normal run, and run (with
/// `--ignored`) only as the writer of `acknowledged_registrations_survive_sigkill_of_the_writer`.
#[test]
#[ignore = "the writer child of acknowledged_registrations_survive_sigkill_of_the_writer, which runs it"]
fn writer_child_process_entry_point() {
    let dir = std::env::var_os(WRITER_ENV).unwrap_or_else(|| {
        panic!("{WRITER_ENV} is not set: this is the writer child process, which only acknowledged_registrations_survive_sigkill_of_the_writer runs")
    });
    let dir = PathBuf::from(dir);
    let round = std::env::var(ROUND_ENV).expect("round number");
    let store = SqliteStore::open(&dir.join("mcpgw.db")).expect("open store");
    let mut acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acks"))
        .expect("open ack file");
    // Bounded so an orphaned writer (parent died) stops on its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let name = format!("r{round}-{i}");
        store.insert(&expected(&name)).expect("insert");
        // One unbuffered write per line: the kernel keeps it even if we die right after.
        acks.write_all(format!("{name}\n").as_bytes())
            .expect("write ack");
    }
}

/// Pseudo-random delay without a rand dependency: the clock's nanoseconds vary run to run.
fn kill_delay(round: u32) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let spread = (nanos ^ round.wrapping_mul(2_654_435_761)) % 250;
    Duration::from_millis(50 + u64::from(spread))
}

fn acknowledged(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("acks")).unwrap_or_default();
    // A line without its newline was being written when the kill came: not acknowledged.
    text.split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn acknowledged_registrations_survive_sigkill_of_the_writer() {
    let dir = tempfile::Builder::new()
        .prefix("mcpgw-crash")
        .tempdir()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let stderr_path = dir.path().join(format!("writer-{round}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "writer_child_process_entry_point",
                "--ignored",
                "--quiet",
            ])
            .env(WRITER_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn writer");
        std::thread::sleep(kill_delay(round));
        // Ok also when the writer has already exited; its status tells the two apart.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.signal() == Some(rustix::process::Signal::KILL.as_raw()) || status.success(),
            "writer failed in round {round} ({status}): {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );

        let store = SqliteStore::open(&dir.path().join("mcpgw.db"))
            .unwrap_or_else(|e| panic!("reopen after round {round}: {e}"));
        let acked = acknowledged(dir.path());
        for name in &acked {
            let got = store
                .get(name)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {name} lost: {e}"));
            assert_eq!(got, expected(name), "round {round}: {name} is incomplete");
        }
        // Rows inserted but not yet acknowledged may exist; they must be whole as well.
        for row in store.list().unwrap() {
            assert_eq!(row, expected(&row.name), "round {round}: row is torn");
        }
        total_acked = acked.len();
    }
    // Guards against a writer that never got to write (the test would then prove nothing).
    assert!(
        total_acked > 0,
        "the writer acknowledged nothing in {ROUNDS} rounds"
    );
}
