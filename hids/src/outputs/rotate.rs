//! An append-only alert file that rotates daily or at a size, keeping N old files
//! (`alerts.log.1` is the newest, as logrotate names them). The file is opened without following
//! a symlink, created 0600, and reopened when something else moved or removed it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, NaiveDate};

use crate::config::{AlertFileConfig, Rotate};

/// See the module documentation.
pub struct RotatingFile {
    path: PathBuf,
    rotate: Rotate,
    max_size: u64,
    keep: u32,
    open: Option<Open>,
}

struct Open {
    file: File,
    dev: u64,
    ino: u64,
    size: u64,
    day: NaiveDate,
}

fn today() -> NaiveDate {
    Local::now().date_naive()
}

impl RotatingFile {
    pub fn new(cfg: &AlertFileConfig) -> RotatingFile {
        RotatingFile {
            path: cfg.path.clone(),
            rotate: cfg.rotate,
            max_size: cfg.max_size.max(1),
            keep: cfg.keep,
            open: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Shifts `path.1` .. `path.keep-1` up by one and moves the current file to `path.1`.
    fn rotate_now(&mut self) -> io::Result<()> {
        self.open = None;
        if self.keep == 0 {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let _ = fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if fs::symlink_metadata(&from).is_ok() {
                fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        match fs::rename(&self.path, self.rotated(1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn open_file(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)?;
            }
        }
        // A file left by an earlier run on an earlier day is rotated before writing today's.
        if self.rotate == Rotate::Daily {
            if let Ok(m) = fs::symlink_metadata(&self.path) {
                if let Ok(mt) = m.modified() {
                    if DateTime::<Local>::from(mt).date_naive() != today() && m.len() > 0 {
                        self.rotate_now()?;
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)?;
        let m = file.metadata()?;
        if !m.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        self.open = Some(Open {
            file,
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            day: today(),
        });
        Ok(())
    }

    /// Whether the open file is still the one at `path`.
    fn still_there(&self) -> bool {
        match (&self.open, fs::symlink_metadata(&self.path)) {
            (Some(o), Ok(m)) => m.dev() == o.dev && m.ino() == o.ino,
            _ => false,
        }
    }

    /// Appends whole entries, rotating before an entry when due, and syncs them to disk.
    pub fn write<S: AsRef<[u8]>>(&mut self, entries: &[S]) -> io::Result<()> {
        if self.open.is_some() && !self.still_there() {
            self.open = None;
        }
        let r = self.write_entries(entries);
        if r.is_err() {
            self.open = None;
        }
        r
    }

    fn write_entries<S: AsRef<[u8]>>(&mut self, entries: &[S]) -> io::Result<()> {
        for e in entries {
            let e = e.as_ref();
            if self.open.is_none() {
                self.open_file()?;
            }
            let due = match (&self.open, self.rotate) {
                (Some(o), Rotate::Daily) => o.day != today() && o.size > 0,
                (Some(o), Rotate::Size) => o.size > 0 && o.size + e.len() as u64 > self.max_size,
                _ => false,
            };
            if due {
                // What was written to the old file so far must be on disk before it is renamed.
                if let Some(o) = &self.open {
                    o.file.sync_data()?;
                }
                self.rotate_now()?;
                self.open_file()?;
            }
            let Some(o) = self.open.as_mut() else {
                return Err(io::Error::other("alert file not open"));
            };
            o.file.write_all(e)?;
            o.size += e.len() as u64;
        }
        match &self.open {
            Some(o) => o.file.sync_data(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, rotate: Rotate, max_size: u64, keep: u32) -> AlertFileConfig {
        AlertFileConfig {
            enabled: true,
            path: dir.join("alerts.log"),
            rotate,
            max_size,
            keep,
        }
    }

    #[test]
    fn size_rotation_keeps_n_files() {
        let d = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::new(&cfg(d.path(), Rotate::Size, 10, 2));
        for i in 0..5 {
            f.write(&[format!("entry{i}\n")]).unwrap();
        }
        let read = |n: &str| fs::read_to_string(d.path().join(n)).unwrap();
        assert_eq!(read("alerts.log"), "entry4\n");
        assert_eq!(read("alerts.log.1"), "entry3\n");
        assert_eq!(read("alerts.log.2"), "entry2\n");
        assert!(!d.path().join("alerts.log.3").exists());
        let mode = fs::metadata(d.path().join("alerts.log")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reopens_after_external_rotation_and_refuses_symlink() {
        let d = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::new(&cfg(d.path(), Rotate::Never, 10, 2));
        f.write(&["a\n"]).unwrap();
        fs::rename(d.path().join("alerts.log"), d.path().join("moved")).unwrap();
        f.write(&["b\n"]).unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("alerts.log")).unwrap(),
            "b\n"
        );
        let d2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d.path().join("moved"), d2.path().join("alerts.log")).unwrap();
        let mut f2 = RotatingFile::new(&cfg(d2.path(), Rotate::Never, 10, 2));
        assert!(f2.write(&["x\n"]).is_err());
        assert_eq!(fs::read_to_string(d.path().join("moved")).unwrap(), "a\n");
    }

    #[test]
    fn file_from_an_earlier_day_is_rotated_on_open() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("alerts.log");
        fs::write(&p, "old\n").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut f = RotatingFile::new(&cfg(d.path(), Rotate::Daily, 10, 3));
        f.write(&["new\n"]).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(
            fs::read_to_string(d.path().join("alerts.log.1")).unwrap(),
            "old\n"
        );
    }
}
