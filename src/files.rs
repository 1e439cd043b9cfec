//! Opening files the gateway reads and creating the ones it owns, so that neither can be turned
//! against the host.
//!
//! A file named by someone else (a registrant's certificate path) is opened once, without
//! following a symbolic link as its last component and without blocking (a FIFO must not hold
//! a thread in `open`), then judged by `fstat` on the open descriptor (what is plainly not a
//! regular file is refused before the open already): only a regular file under a size cap is
//! read, so a device (`/dev/zero`), a FIFO, a directory or a huge file is refused
//! without reading a byte. Whatever checks the caller makes on the file's location are made on
//! what was opened ([`Opened::real_path`]), not on the name, so a swap between a check and the
//! open cannot escape them.
//!
//! The gateway's own files in its data directory are created with `O_NOFOLLOW` too: a symlink
//! planted at one of their names is refused, never followed to a file elsewhere.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most a certificate or key file may hold: far above any real bundle, far below a problem.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why a file could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The operating system refused to open or inspect it.
    #[error("cannot read {path}: {error}")]
    Open {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Its last component is a symbolic link, which is not followed.
    #[error(
        "{path} is a symbolic link, which is not followed here: give the path of the file itself"
    )]
    Symlink {
        /// The file.
        path: String,
    },
    /// It is not a regular file (a FIFO, a device, a directory, a socket).
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular {
        /// The file.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// It is larger than the cap; nothing of it was read.
    #[error("{path} is {size} bytes, more than the {cap} bytes a certificate or key file may hold")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// Reading it failed.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Whether a symbolic link as the last component of a path is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Followed: the operator's own configured files (certbot's `live/` names are links).
    Follow,
    /// Refused: paths someone else gave, and the gateway's own files.
    Refuse,
}

/// A regular file, open for reading, and what `fstat` said of it.
#[derive(Debug)]
pub struct Opened {
    file: File,
    meta: Metadata,
    path: PathBuf,
}

/// Open `path` for reading: once, without blocking, a regular file only; `links` says whether
/// a symbolic link as its last component is followed.
pub fn open_regular(path: &Path, links: Links) -> Result<Opened, FileError> {
    let shown = || path.display().to_string();
    // Looked at before the open too: opening some devices acts on them (a watchdog starts its
    // countdown, a tape rewinds), so what is plainly not a regular file is never opened. The
    // `fstat` after the open is what decides, whatever replaced the name in between.
    let before = match links {
        Links::Follow => std::fs::metadata(path),
        Links::Refuse => std::fs::symlink_metadata(path),
    };
    if let Ok(meta) = before {
        if meta.file_type().is_symlink() {
            return Err(FileError::Symlink { path: shown() });
        }
        if let Some(kind) = not_regular(&meta) {
            return Err(FileError::NotRegular {
                path: shown(),
                kind,
            });
        }
    }
    open_then_stat(path, links)
}

/// The open itself (`O_NONBLOCK`, `O_NOFOLLOW` unless `links` follows them) and the judgement on
/// the open descriptor: a regular file, or a refusal naming what it is.
fn open_then_stat(path: &Path, links: Links) -> Result<Opened, FileError> {
    let shown = || path.display().to_string();
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(libc::ELOOP) {
                FileError::Symlink { path: shown() }
            } else {
                FileError::Open {
                    path: shown(),
                    error,
                }
            }
        })?;
    let meta = file.metadata().map_err(|error| FileError::Open {
        path: shown(),
        error,
    })?;
    if let Some(kind) = not_regular(&meta) {
        return Err(FileError::NotRegular {
            path: shown(),
            kind,
        });
    }
    Ok(Opened {
        file,
        meta,
        path: path.to_owned(),
    })
}

/// What a file that is not a regular one is, for messages.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("directory")
    } else if kind.is_fifo() {
        Some("FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("character device")
    } else if kind.is_block_device() {
        Some("block device")
    } else if kind.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

impl Opened {
    /// Device and inode of the open file.
    pub fn id(&self) -> (u64, u64) {
        (self.meta.dev(), self.meta.ino())
    }

    /// Where the open file lies, with every link and `..` resolved: the canonical form of its
    /// path, provided that path still names this very file (same device and inode). `None` when
    /// it does not (it was replaced after the open), which callers treat as a refusal.
    pub fn real_path(&self) -> Option<PathBuf> {
        let real = std::fs::canonicalize(&self.path).ok()?;
        let now = std::fs::metadata(&real).ok()?;
        ((now.dev(), now.ino()) == self.id()).then_some(real)
    }

    /// Its whole content, refused without reading when larger than `cap` (and never more than
    /// `cap` bytes read, should it grow meanwhile).
    pub fn read_capped(self, cap: u64) -> Result<Vec<u8>, FileError> {
        let shown = self.path.display().to_string();
        if self.meta.len() > cap {
            return Err(FileError::TooLarge {
                path: shown,
                size: self.meta.len(),
                cap,
            });
        }
        let mut bytes = Vec::with_capacity(self.meta.len() as usize);
        self.file
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| FileError::Read {
                path: shown.clone(),
                error,
            })?;
        if bytes.len() as u64 > cap {
            return Err(FileError::TooLarge {
                path: shown,
                size: bytes.len() as u64,
                cap,
            });
        }
        Ok(bytes)
    }
}

/// Read a certificate or key file: opened as [`open_regular`] says, at most [`MAX_PEM_BYTES`].
pub fn read_pem_file(path: &Path, links: Links) -> Result<Vec<u8>, FileError> {
    open_regular(path, links)?.read_capped(MAX_PEM_BYTES)
}

/// Options to open (and maybe create) one of the gateway's own files: never through a
/// symbolic link, and created with `mode`.
pub fn own_file(mode: u32) -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.mode(mode).custom_flags(libc::O_NOFOLLOW);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_device_a_directory_and_a_link_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = read_pem_file(&fifo, Links::Follow).unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        // Should the name become a FIFO after the look before the open: the open does not wait
        // for a writer, and the open descriptor is refused.
        let err = open_then_stat(&fifo, Links::Refuse).unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        let err = open_then_stat(Path::new("/dev/zero"), Links::Refuse).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let link = dir.path().join("fifo-link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let err = open_then_stat(&link, Links::Refuse).unwrap_err();
        assert!(matches!(err, FileError::Symlink { .. }), "{err}");
        let err = read_pem_file(Path::new("/dev/zero"), Links::Follow).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_pem_file(dir.path(), Links::Follow).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        let target = dir.path().join("real.pem");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = read_pem_file(&link, Links::Refuse).unwrap_err();
        assert!(matches!(err, FileError::Symlink { .. }), "{err}");
        assert_eq!(read_pem_file(&link, Links::Follow).unwrap(), b"x");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_the_real_path_is_the_opened_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        let file = File::create(&big).unwrap();
        file.set_len(MAX_PEM_BYTES + 1).unwrap();
        let err = read_pem_file(&big, Links::Refuse).unwrap_err();
        assert!(matches!(err, FileError::TooLarge { .. }), "{err}");

        let small = dir.path().join("small.pem");
        std::fs::write(&small, "a").unwrap();
        let opened = open_regular(&small, Links::Refuse).unwrap();
        assert_eq!(
            opened.real_path(),
            Some(std::fs::canonicalize(&small).unwrap())
        );
        // Replaced after the open: the name no longer says where the open file is.
        std::fs::remove_file(&small).unwrap();
        std::fs::write(&small, "b").unwrap();
        assert_eq!(opened.real_path(), None);
    }

    #[test]
    fn an_own_file_is_not_created_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let planted = dir.path().join("own");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = own_file(0o600)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&planted)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
