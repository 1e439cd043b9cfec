//! Issue 22 item 5: `mcpgw cert rotate --all` installs one certificate on every instance sharing
//! a PostgreSQL store, each checking it before it swaps and reporting, while clients keep calling
//! through every instance over new HTTPS connections: every instance then serves the new
//! certificate (a real handshake to each), and no call fails. An instance whose own check
//! refuses the pair keeps its old certificate and the command says why; a pair the instance it
//! talks to refuses is never published. On SQLite, `--all` is the local rotate, and says so.

mod common;

use std::time::Duration;

use common::clients::echo_modern;
use common::load::{CALL_TIMEOUT, Load};
use common::postgres::Postgres;
use common::upstream::Upstream;
use common::{Dir, Gateway, Instance, Pki, fingerprint_pem, tls};

/// Instances on the store.
const INSTANCES: usize = 3;
/// Clients calling each instance at once.
const CLIENTS_PER_INSTANCE: usize = 2;

/// PostgreSQL, the echo fixture registered as `rs`, and three HTTPS gateways on the store,
/// each serving its own copy of `pki`'s server pair.
struct Fleet {
    pg: Postgres,
    _up: Upstream,
    /// Holds the CAs.
    home: Dir,
    pki: Pki,
    /// Both CAs' certificates, which the clients trust.
    trust: std::path::PathBuf,
    /// The fingerprint each instance serves at start.
    first: Vec<String>,
    instances: Vec<Instance>,
    rt: tokio::runtime::Runtime,
}

impl Fleet {
    /// Everything started. With `refusing`, the last instance serves a pair of another CA and
    /// only takes certificates that CA issued (`--tls-ca`).
    fn start(refusing: bool) -> Self {
        let pg = Postgres::start();
        let up = Upstream::start(&[]);
        let home = Dir::new();
        let pki = home.cert_gen("pki", &[]);
        let other = home.cert_gen("other", &[]);
        let trust = home.join("trust.pem");
        let mut both = std::fs::read(pki.file("ca.crt")).unwrap();
        both.extend(std::fs::read(other.file("ca.crt")).unwrap());
        std::fs::write(&trust, both).unwrap();
        let mut first = Vec::new();
        let instances: Vec<Instance> = (0..INSTANCES)
            .map(|i| {
                let dir = Dir::new();
                let own = if refusing && i == INSTANCES - 1 {
                    &other
                } else {
                    &pki
                };
                // Each instance's own files: an install writes over them.
                let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
                std::fs::copy(own.file("server.crt"), &cert).unwrap();
                std::fs::copy(own.file("server.key"), &key).unwrap();
                first.push(fingerprint_pem(&std::fs::read(&cert).unwrap()));
                let mut cmd = dir.cmd();
                cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
                    .args(["--store", &pg.url()])
                    .arg("--tls-cert")
                    .arg(&cert)
                    .arg("--tls-key")
                    .arg(&key);
                if refusing && i == INSTANCES - 1 {
                    cmd.arg("--tls-ca").arg(other.file("ca.crt"));
                }
                Instance {
                    dir,
                    gw: Gateway::spawn(cmd),
                }
            })
            .collect();
        let url = format!("{}/mcp", up.base);
        let fleet = Self {
            pg,
            _up: up,
            home,
            pki,
            trust,
            first,
            instances,
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        fleet.instances[0]
            .dir
            .run_expect(&["gateway", "add", "rs", &url], 0);
        fleet.until_callable_everywhere();
        fleet
    }

    /// Wait until `rs__echo` answers through every instance (the registration travelled).
    fn until_callable_everywhere(&self) {
        let http = self.client();
        for i in 0..INSTANCES {
            let url = self.url(i);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let answer = self.rt.block_on(echo_modern(&http, &url, None, "hi"));
                if answer.is_ok() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{url} not callable within 20 s: {answer:?}\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}/mcp", self.instances[i].gw.addr.port())
    }

    /// A client trusting the fleet's CA that opens a new connection (a new handshake) for
    /// every call.
    fn client(&self) -> reqwest::Client {
        let config = (*tls::client_config(&self.trust)).clone();
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .pool_max_idle_per_host(0)
            .http1_only()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap()
    }

    /// The fingerprint instance `i` presents to a new handshake now.
    fn served(&self, i: usize) -> String {
        let config = tls::client_config(&self.trust);
        self.rt
            .block_on(tls::connect(self.instances[i].gw.addr, config))
            .unwrap()
            .fingerprint
    }

    /// `mcpgw cert rotate --all --issue` with the fleet's CA through instance 0, which must
    /// exit with `code`; stdout, stderr.
    fn rotate_all_issue(&self, code: i32) -> (String, String) {
        rotate_all_issue(&self.instances[0].dir, &self.pki, &[], code)
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (i, instance) in self.instances.iter().enumerate() {
            all.push_str(&format!("--- instance {i} log\n{}\n", instance.gw.log()));
        }
        all.push_str(&format!("--- postgres log\n{}\n", self.pg.log()));
        all
    }
}

/// Clients calling `rs__echo` through every instance in a loop, each call on a new connection,
/// until they have made 50 calls.
fn load(fleet: &Fleet) -> Load {
    let clients = (0..INSTANCES * CLIENTS_PER_INSTANCE)
        .map(|n| (fleet.client(), fleet.url(n % INSTANCES)))
        .collect();
    Load::start(&fleet.rt, clients, None, usize::MAX, 50)
}

/// `mcpgw cert rotate --all --issue` with `pki`'s CA through the gateway of `dir`, which must
/// exit with `code`; stdout, stderr.
fn rotate_all_issue(dir: &Dir, pki: &Pki, more: &[&str], code: i32) -> (String, String) {
    let (ca, key) = (pki.s("ca.crt"), pki.s("ca.key"));
    let mut args = vec![
        "cert",
        "rotate",
        "--all",
        "--issue",
        "--ca-cert",
        &ca,
        "--ca-key",
        &key,
    ];
    args.extend_from_slice(more);
    dir.run_expect(&args, code)
}

/// The fingerprint of the rotation line `rotation N: <fingerprint> (...`.
fn published_fingerprint(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("rotation "))
        .unwrap_or_else(|| panic!("no rotation line in\n{stdout}"));
    line.split_whitespace().nth(2).unwrap().to_owned()
}

#[test]
fn cert_rotate_all_under_load_installs_the_new_certificate_on_every_instance_with_no_failed_call() {
    let fleet = Fleet::start(false);
    for i in 0..INSTANCES {
        assert_eq!(fleet.served(i), fleet.first[i], "instance {i} at start");
    }
    let load = load(&fleet);

    let (stdout, stderr) = fleet.rotate_all_issue(0);
    println!("{stdout}");
    let new = published_fingerprint(&stdout);
    assert_ne!(new, fleet.first[0], "{stdout}");
    assert!(
        stdout.contains(&format!("published to {INSTANCES} live instance(s)")),
        "{stdout}\n{stderr}"
    );
    for i in 0..INSTANCES {
        let addr = fleet.instances[i].gw.addr;
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("({addr}")))
            .unwrap_or_else(|| panic!("no line for instance {i} ({addr}) in\n{stdout}"));
        assert!(
            line.contains(&format!("installed, serving {new}")),
            "instance {i}: {line}\n{stdout}"
        );
        assert_eq!(
            fleet.served(i),
            new,
            "instance {i} after the rotation\n{stdout}"
        );
    }
    assert!(stdout.contains(&format!("presents {new}")), "{stdout}");
    // Calls go on over new handshakes with the new certificate.
    load.until_more(50);
    let (answered, failures) = load.stop(&fleet.rt);
    common::load::assert_no_failure(answered, &failures, || fleet.logs());
    // Every instance reported, so the key is gone from the store; the outcomes remain.
    assert_eq!(
        fleet
            .pg
            .sql("SELECT count(*) FROM cert_rotations WHERE key_pem IS NOT NULL"),
        "0"
    );
    assert_eq!(
        fleet
            .pg
            .sql("SELECT count(*) FROM cert_rotation_results WHERE ok"),
        INSTANCES.to_string()
    );
    // The key never reaches a log.
    let key_line = "-----BEGIN PRIVATE KEY-----";
    assert!(!fleet.logs().contains(key_line), "a key in a log");
}

#[test]
fn a_rotation_whose_notice_was_missed_is_installed_by_every_instance_all_the_same() {
    let fleet = Fleet::start(false);
    // A rotation stored without its notice (as if the notice had been lost): each instance's own
    // look at the store finds it.
    let at = fleet.home.join("missed");
    std::fs::create_dir_all(&at).unwrap();
    let (cert, key) = (at.join("tls.crt"), at.join("tls.key"));
    let new = common::mint_server(&fleet.pki, &cert, &key);
    let (cert_pem, key_pem) = (
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap(),
    );
    fleet.pg.sql(&format!(
        "INSERT INTO cert_rotations (cert_pem, key_pem, fingerprint, requested_ms, requested_by) \
         VALUES ('{cert_pem}', '{key_pem}', '{new}', \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint, 'a test')"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 0..INSTANCES {
        while fleet.served(i) != new {
            assert!(
                std::time::Instant::now() < deadline,
                "instance {i} never installed the rotation\n{}",
                fleet.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Each reported, and with that the key left the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fleet
        .pg
        .sql("SELECT count(*) FROM cert_rotations WHERE key_pem IS NOT NULL")
        != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the key is still in the store: {}",
            fleet
                .pg
                .sql("SELECT instance, ok, error FROM cert_rotation_results")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fleet
            .pg
            .sql("SELECT count(*) FROM cert_rotation_results WHERE ok"),
        INSTANCES.to_string()
    );
}

#[test]
fn an_instance_whose_own_check_refuses_the_pair_keeps_its_certificate_and_says_why() {
    // The last instance only takes certificates from another CA, so the pair instance 0 checks
    // and publishes is refused there.
    let fleet = Fleet::start(true);
    let (stdout, stderr) = fleet.rotate_all_issue(1);
    println!("{stdout}{stderr}");
    let new = published_fingerprint(&stdout);
    let last = INSTANCES - 1;
    let refused = fleet.instances[last].gw.addr;
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("({refused}")))
        .unwrap_or_else(|| panic!("no line for the last instance in\n{stdout}"));
    assert!(
        line.contains(&format!("refused, still serving {}", fleet.first[last]))
            && line.contains("was not issued by the configured CA"),
        "{line}"
    );
    assert!(stderr.contains("1 instance(s) refused it"), "{stderr}");
    assert_eq!(
        fleet.served(last),
        fleet.first[last],
        "the refusing instance"
    );
    for i in 0..last {
        assert_eq!(fleet.served(i), new, "instance {i}\n{stdout}");
    }
}

#[test]
fn an_instance_that_does_not_answer_in_time_is_named_and_gets_no_key_afterwards() {
    const SIGCONT: i32 = 18;
    const SIGSTOP: i32 = 19;
    let fleet = Fleet::start(false);
    let last = INSTANCES - 1;
    // Alive a moment ago (its mark is fresh), but answering nothing now.
    fleet.instances[last].gw.signal(SIGSTOP);
    let (stdout, stderr) =
        rotate_all_issue(&fleet.instances[0].dir, &fleet.pki, &["--wait", "2"], 1);
    fleet.instances[last].gw.signal(SIGCONT);
    println!("{stdout}{stderr}");
    let new = published_fingerprint(&stdout);
    assert!(
        stdout.contains("no answer within 2.0 s") && stderr.contains("1 did not answer"),
        "{stdout}\n{stderr}"
    );
    for i in 0..last {
        assert_eq!(fleet.served(i), new, "instance {i}\n{stdout}");
    }
    // The command stopped waiting, so the key left the store: the late instance keeps its
    // certificate.
    assert_eq!(
        fleet
            .pg
            .sql("SELECT count(*) FROM cert_rotations WHERE key_pem IS NOT NULL"),
        "0"
    );
    assert_eq!(fleet.served(last), fleet.first[last]);
}

#[test]
fn a_pair_the_instance_refuses_up_front_is_never_published() {
    let fleet = Fleet::start(false);
    // A certificate with another certificate's key.
    let home = Dir::new();
    let other = home.cert_gen("other", &[]);
    let (cert, key) = (fleet.pki.s("client.crt"), other.s("server.key"));
    let (_, stderr) = fleet.instances[0].dir.run_expect(
        &["cert", "rotate", "--all", "--cert", &cert, "--key", &key],
        1,
    );
    assert!(
        stderr.contains("key does not match certificate") && stderr.contains(&key),
        "{stderr}"
    );
    assert_eq!(fleet.pg.sql("SELECT count(*) FROM cert_rotations"), "0");
    for i in 0..INSTANCES {
        assert_eq!(fleet.served(i), fleet.first[i], "instance {i}");
    }
}

#[test]
fn cert_rotate_all_on_sqlite_is_the_local_rotate_and_says_so() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let first = fingerprint_pem(&std::fs::read(pki.file("server.crt")).unwrap());
    let gw = Gateway::start_tls(&dir, &pki, &["--no-auth"]);
    let (stdout, _) = rotate_all_issue(&dir, &pki, &[], 0);
    assert!(
        stdout.contains("the store is SQLite") && stdout.contains("this is the local rotate"),
        "{stdout}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = rt
        .block_on(tls::connect(
            gw.addr,
            tls::client_config(&pki.file("ca.crt")),
        ))
        .unwrap()
        .fingerprint;
    assert_ne!(served, first);
    assert!(
        stdout.contains(&format!("rotated: {first} -> {served}")),
        "{stdout}"
    );
}
