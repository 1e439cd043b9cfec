//! Clients calling `rs__echo` (2026-07-28) in a loop until told to stop, counting the calls
//! answered and keeping every failure: the load under which a fleet test changes something
//! and then requires that no call failed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clients::echo_modern;

/// A client gives up on a call after this long: a lost call is an error, never a hang.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The running clients.
pub struct Load {
    done: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// One client per `(client, url)` on `rt`, each making at most `calls` calls with `token`;
    /// returns once they have answered `warm_up` calls between them.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        clients: Vec<(reqwest::Client, String)>,
        token: Option<&str>,
        calls: usize,
        warm_up: usize,
    ) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let workers = clients
            .into_iter()
            .enumerate()
            .map(|(n, (http, url))| {
                let (done, ok, failures) = (done.clone(), ok.clone(), failures.clone());
                let token = token.map(str::to_owned);
                rt.spawn(async move {
                    for call in 0..calls {
                        if done.load(Ordering::Acquire) {
                            break;
                        }
                        let text = format!("c{n}-{call}");
                        match echo_modern(&http, &url, token.as_deref(), &text).await {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::AcqRel);
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{url}: {e}")),
                        }
                    }
                })
            })
            .collect();
        let load = Self {
            done,
            ok,
            failures,
            workers,
        };
        load.until_more(warm_up);
        load
    }

    /// Calls answered so far.
    pub fn answered(&self) -> usize {
        self.ok.load(Ordering::Acquire)
    }

    /// Wait until `more` calls more than now are answered (or every client is done).
    pub fn until_more(&self, more: usize) {
        let target = self.answered() + more;
        while self.answered() < target && self.workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop the clients and wait for them; the calls answered and the failures they saw.
    pub fn stop(self, rt: &tokio::runtime::Runtime) -> (usize, Vec<String>) {
        self.done.store(true, Ordering::Release);
        for w in self.workers {
            rt.block_on(w).unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Acquire), failures)
    }
}

/// Assert that `failures` is empty, showing the first few and `context` (logs) if not.
pub fn assert_no_failure(answered: usize, failures: &[String], context: impl Fn() -> String) {
    println!("{answered} calls answered, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} failed calls of {}, e.g. {:?}\n{}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(5)],
        context()
    );
}
