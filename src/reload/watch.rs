//! Reload when a certificate file changes on disk, with no signal: every `[tls] watch_interval`
//! the files a reload reads ([`Reloader::files`]) are looked at, and a change asks
//! [`Reloader::reload`] for the same reload SIGHUP does (trigger `watch`).
//!
//! Why polling rather than inotify: a Kubernetes secret volume replaces its files by swapping
//! a symbolic link (`..data -> ..2026_12_07_...`) over a whole directory; the files the
//! gateway was given are links through it and never change themselves, so an inotify watch on
//! them sees nothing. Looking at what each path leads to now (the file behind every link: its
//! device, inode, modification time and size, and the resolved path) sees a rename, a rewrite
//! in place and a link swap alike, on every file system, for a few `stat` calls a second.
//!
//! A pair written in two steps (the certificate first, the key a moment later) may be caught
//! half-way: that reload is refused (the key does not match), the old certificate keeps
//! serving, and the next change (the key arriving) reloads again. A refused state is not
//! retried until something changes, so a broken file logs once, not once a tick.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Action, Reloader};
use crate::metrics::ReloadTrigger;

/// What a path leads to now; `None` when it leads nowhere (missing, unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    /// The path with every link resolved: a link swap changes it even when the new file has
    /// the same size and time.
    target: PathBuf,
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

impl Stamp {
    /// Blocking: a `stat` that follows links, and a `realpath`.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let target = std::fs::canonicalize(path).ok()?;
        Some(Self {
            target,
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
        })
    }
}

/// Each watched path with its role and what it led to at a look.
type Seen = BTreeMap<PathBuf, (String, Option<Stamp>)>;

/// Blocking: one look at each file.
fn look(files: Vec<(String, PathBuf)>) -> Seen {
    files
        .into_iter()
        .map(|(role, path)| {
            let stamp = Stamp::of(&path);
            (path, (role, stamp))
        })
        .collect()
}

/// What the serving certificate's files led to just before start-up read them: the watch's
/// first look compares with it, so that a change made between that read and the first look (a
/// swap right after the gateway says it is ready) is a change. Taken blocking, at start-up.
#[derive(Debug)]
pub struct Baseline(Seen);

impl Baseline {
    /// Look at `files` now.
    pub fn of(files: Vec<(String, PathBuf)>) -> Self {
        Self(look(files))
    }
}

/// What the files led to when the last reload read them, whoever asked for it: the watch
/// reloads only what changed since, so a SIGHUP or `cert rotate` after a change is not followed
/// by a second reload of the same files.
#[derive(Debug, Default)]
pub(super) struct Stamps(std::sync::Mutex<Seen>);

impl Stamps {
    /// Look at `files` now (off the async workers) and keep that as what was read.
    pub(super) async fn record(&self, files: Vec<(String, PathBuf)>) {
        let now = tokio::task::spawn_blocking(move || look(files))
            .await
            .unwrap_or_default();
        *self.lock() = now;
    }

    /// Take `baseline` for the paths no reload has read yet.
    pub(super) fn seed(&self, baseline: Baseline) {
        let mut read = self.lock();
        for (path, seen) in baseline.0 {
            read.entry(path).or_insert(seen);
        }
    }

    /// The files in `now` that differ from what the last reload read, as `role path` for the
    /// log. A path not read before (an upstream registered since) is not a change: it is
    /// taken as it is now, and changes from there.
    fn changes(&self, now: Seen) -> Vec<String> {
        let mut read = self.lock();
        let mut changed = Vec::new();
        for (path, (role, stamp)) in now {
            match read.get(&path) {
                Some((_, old)) if *old != stamp => {
                    let how = if stamp.is_none() { " (gone)" } else { "" };
                    changed.push(format!("{role} {}{how}", path.display()));
                }
                Some(_) => {}
                None => {
                    read.insert(path, (role, stamp));
                }
            }
        }
        changed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain data, whole after every write: a panic elsewhere leaves nothing half-done.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Start watching every `interval` until `stop` fires.
pub fn spawn(
    reloader: Arc<Reloader>,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // The serving files compare with what they led to when start-up read them (seeded by
        // `serve`); the first look is the baseline of the others (upstream files).
        let files = look_off_workers(&reloader).await;
        let count = files.len();
        if !reloader.stamps.changes(files).is_empty() {
            // Changed since start-up read them: the next tick reloads.
            tracing::debug!("certificate files changed since start-up");
        }
        tracing::info!(
            files = count,
            interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            "watching the certificate files for changes"
        );
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            let files = reloader.stamps.changes(look_off_workers(&reloader).await);
            if files.is_empty() {
                continue;
            }
            let files = files.join(", ");
            tracing::info!(%files, "certificate files changed on disk; reloading");
            // The outcome (swapped, or refused and why) is logged by the reload itself.
            if reloader
                .reload(ReloadTrigger::Watch, Action::Reread)
                .await
                .is_err()
            {
                tracing::warn!(%files, "the changed files were refused; reloading again at their next change");
            }
        }
    })
}

/// One look at every watched file, on the blocking pool (a `stat` may block on a slow mount).
async fn look_off_workers(reloader: &Reloader) -> Seen {
    let files = reloader.files();
    tokio::task::spawn_blocking(move || look(files))
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_swap_a_rewrite_and_a_removal_are_changes_until_read_and_a_new_path_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("..2026_a"), dir.path().join("..2026_b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("tls.crt"), "same").unwrap();
        std::fs::write(b.join("tls.crt"), "same").unwrap();
        std::os::unix::fs::symlink("..2026_a", dir.path().join("..data")).unwrap();
        let served = dir.path().join("tls.crt");
        std::os::unix::fs::symlink("..data/tls.crt", &served).unwrap();
        let plain = dir.path().join("tls.key");
        std::fs::write(&plain, "key").unwrap();
        let files = || {
            vec![
                ("certificate".to_owned(), served.clone()),
                ("key".to_owned(), plain.clone()),
            ]
        };
        let read = Stamps::default();
        let changed = |files: Vec<(String, PathBuf)>| read.changes(look(files));
        let record = |files: Vec<(String, PathBuf)>| *read.lock() = look(files);
        assert!(
            changed(files()).is_empty(),
            "the first look is the baseline"
        );
        assert!(changed(files()).is_empty());

        // The Kubernetes swap: a new `..data` link renamed over the old one.
        std::os::unix::fs::symlink("..2026_b", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        let seen = changed(files());
        assert_eq!(seen, [format!("certificate {}", served.display())]);
        // Until a reload reads them, they are still a change.
        assert_eq!(changed(files()).len(), 1);
        record(files());
        assert!(changed(files()).is_empty());

        std::fs::write(&plain, "a longer key").unwrap();
        assert_eq!(changed(files()), [format!("key {}", plain.display())]);
        record(files());

        std::fs::remove_file(&plain).unwrap();
        assert_eq!(
            changed(files()),
            [format!("key {} (gone)", plain.display())]
        );
        record(files());

        let mut more = files();
        more.push(("upstream a CA".to_owned(), dir.path().join("new.pem")));
        assert!(
            changed(more).is_empty(),
            "a path not read before is no change"
        );
    }

    #[test]
    fn a_change_between_the_start_up_read_and_the_first_look_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        std::fs::write(&cert, "first").unwrap();
        let files = || vec![("certificate".to_owned(), cert.clone())];
        let baseline = Baseline::of(files());
        // Replaced after start-up read it, before the watch first looks.
        std::fs::write(dir.path().join("next"), "second, longer").unwrap();
        std::fs::rename(dir.path().join("next"), &cert).unwrap();
        let read = Stamps::default();
        read.seed(baseline);
        assert_eq!(
            read.changes(look(files())),
            [format!("certificate {}", cert.display())]
        );
        // Without the seed, the first look would have taken the new file as the baseline.
        let unseeded = Stamps::default();
        assert!(unseeded.changes(look(files())).is_empty());
    }
}
