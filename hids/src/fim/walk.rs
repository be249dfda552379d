//! The walk over the configured paths, in baseline key order (depth first, siblings sorted by name
//! bytes), so that a scan can merge-join it against the baseline read in the same order.
//!
//! Each entry is governed by the deepest configured path that contains it (its depth, ignore,
//! restrict, checks...). A configured path inside another is reached through the outer walk, even
//! when the outer path's depth or ignore list would not get there ("transit" directories are
//! descended but not recorded). Pseudo file systems are not entered unless configured by name;
//! with `one_file_system` no other file system is; symlinks are recorded as links unless
//! `follow_symlinks`, and a directory already on the current path (symlink loop, bind-mount cycle)
//! is never entered twice.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::baseline::key_of;
use super::hash::DirFd;
use crate::config::FimPath;
use crate::event::escape_bytes;
use crate::sys::{self, Stat};

/// File system types that describe the kernel rather than files: never walked into unless a
/// configured path names them.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "binfmt_misc",
    "autofs",
    "efivarfs",
    "selinuxfs",
    "rpc_pipefs",
    "nsfs",
];

/// One entry found by the walk.
#[derive(Debug)]
pub struct Node {
    pub path: PathBuf,
    pub key: Vec<u8>,
    /// `lstat`, or `stat` for a followed symlink. None for a regular file (as its directory
    /// listing says) when every file is read and hashed: the walk leaves its attributes to the
    /// `fstat` of the opened file rather than stat it once more.
    pub meta: Option<Stat>,
    /// The configured path governing this entry (index into `FimConfig::paths`).
    pub root: usize,
    /// A symlink's target, escaped.
    pub link_target: Option<String>,
    /// The directory holding a regular file, held open when it could be, for opening the file
    /// relative to it.
    pub dir: Option<Arc<DirFd>>,
}

/// What the walk hands on, in key order.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // entries are the common case; boxing them costs an allocation each
pub enum WalkItem {
    Entry(Node),
    /// The subtree under this key could not be listed: its baseline rows are kept as they are,
    /// neither compared nor reported deleted.
    Unreadable {
        key: Vec<u8>,
        root: usize,
    },
}

/// How a directory's children are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Recorded under configured path `root`, at `level` below it.
    Record { root: usize, level: u32 },
    /// Only walked through, towards a configured path deeper down.
    Transit,
}

/// Counts and first examples of what the walk could not do, per configured path.
#[derive(Debug, Default, Clone)]
pub struct WalkStats {
    /// Entries that could not be read or listed: count and the first path.
    pub denied: HashMap<usize, (u64, PathBuf)>,
    /// Configured paths that do not exist.
    pub missing: Vec<usize>,
    /// Configured paths that are symlinks, recorded as links (follow_symlinks is off).
    pub root_links: Vec<usize>,
    /// Directories not entered again because they were already on the path (loops, bind cycles).
    pub loops: u64,
    /// Mount points not entered: pseudo file systems, or other file systems under one_file_system.
    pub mounts_skipped: u64,
    /// Other errors (I/O errors on lstat or readdir): count and the first message.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl WalkStats {
    pub(crate) fn deny(&mut self, root: usize, path: &Path) {
        let e = self
            .denied
            .entry(root)
            .or_insert_with(|| (0, path.to_path_buf()));
        e.0 += 1;
    }
}

/// What the walk needs to know about the configured paths.
#[derive(Debug)]
pub struct Plan {
    /// Configured paths by (normalized) path.
    by_path: HashMap<PathBuf, usize>,
    /// Every proper ancestor of a configured path.
    ancestors: HashSet<PathBuf>,
    /// Configured paths not inside another, in key order: where walks start.
    tops: Vec<usize>,
    /// Normalized configured paths.
    roots: Vec<PathBuf>,
    /// Mount point -> file system type, from /proc/self/mountinfo.
    mounts: HashMap<PathBuf, String>,
}

fn normalize(p: &Path) -> PathBuf {
    p.components().collect()
}

impl Plan {
    pub fn new(paths: &[FimPath]) -> Plan {
        let roots: Vec<PathBuf> = paths.iter().map(|p| normalize(&p.path)).collect();
        let mut by_path = HashMap::new();
        let mut ancestors = HashSet::new();
        for (i, r) in roots.iter().enumerate() {
            by_path.entry(r.clone()).or_insert(i);
            let mut a = r.parent();
            while let Some(p) = a {
                ancestors.insert(p.to_path_buf());
                a = p.parent();
            }
        }
        let mut tops: Vec<usize> = (0..roots.len())
            .filter(|&i| {
                by_path.get(&roots[i]) == Some(&i)
                    && !roots
                        .iter()
                        .any(|o| o != &roots[i] && roots[i].starts_with(o))
            })
            .collect();
        tops.sort_by_key(|&i| key_of(&roots[i]));
        Plan {
            by_path,
            ancestors,
            tops,
            roots,
            mounts: read_mounts(),
        }
    }

    /// The normalized configured path `i`.
    pub fn root(&self, i: usize) -> &Path {
        &self.roots[i]
    }

    /// The configured path that governs `path` (the deepest that contains it) and how many levels
    /// below it `path` is.
    pub fn governing(&self, path: &Path) -> Option<(usize, u32)> {
        let mut level = 0;
        let mut cur = Some(path);
        while let Some(p) = cur {
            if let Some(&i) = self.by_path.get(p) {
                return Some((i, level));
            }
            level += 1;
            cur = p.parent();
        }
        None
    }

    /// Whether a scan would record `path` (as it is configured now: under a configured path,
    /// within its depth, not ignored, matching restrict). Used for baseline rows the walk did not
    /// meet: those in scope were deleted, the others were dropped from the configuration.
    pub fn in_scope(&self, paths: &[FimPath], path: &Path) -> bool {
        let Some((i, level)) = self.governing(path) else {
            return false;
        };
        if level == 0 {
            return true;
        }
        let fp = &paths[i];
        if level > fp.depth.saturating_add(1) {
            return false;
        }
        // Ignored itself or below an ignored directory.
        let mut cur = Some(path);
        while let Some(p) = cur {
            if p == self.roots[i] {
                break;
            }
            if fp.ignore.matches(p) {
                return false;
            }
            cur = p.parent();
        }
        fp.restrict.is_empty() || fp.restrict.matches(path)
    }

    fn pseudo(&self, path: &Path) -> Option<&str> {
        self.mounts
            .get(path)
            .map(String::as_str)
            .filter(|t| PSEUDO_FS.contains(t))
    }
}

/// Mount points and their types; unreadable mountinfo gives none (then only one_file_system guards).
fn read_mounts() -> HashMap<PathBuf, String> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read("/proc/self/mountinfo") else {
        return out;
    };
    for line in text.split(|b| *b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        let (Some(mnt), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(mnt)).to_os_string());
        out.insert(path, String::from_utf8_lossy(fstype).into_owned());
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            if let Some(oct) = s.get(i + 1..i + 4) {
                if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                    let v = oct
                        .iter()
                        .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                    out.push(v as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn link_target(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|t| escape_bytes(t.as_os_str().as_bytes()).0)
}

struct Frame {
    /// The names of the directory's entries, one after the other.
    names: Vec<u8>,
    /// The directory's entries: where each name lies in `names`, and its `d_type`; sorted by
    /// name in reverse (taken from the end). Their metadata is read through the open directory
    /// (fstatat), which spares the kernel a full path lookup.
    entries: Vec<(usize, usize, u8)>,
    scope: Scope,
    dev: u64,
    ino: u64,
    /// The directory itself, open: listed, its entries looked at, its subdirectories opened
    /// relative to it.
    dir: Arc<DirFd>,
    /// Whether its files are opened relative to it (see [`DirFd::hold`]).
    held: bool,
    /// The directory's key: its children's keys extend it by one component each.
    key: Vec<u8>,
    /// The directory's path: its children's paths extend it by one component each.
    path: PathBuf,
}

/// The walk over every configured path. `emit` returns false to stop early.
pub struct Walker<'a> {
    plan: &'a Plan,
    paths: &'a [FimPath],
    pub stats: WalkStats,
    /// Called once per entry before it is looked at (the files-per-second cap).
    pub pace: Option<&'a (dyn Fn() + Sync)>,
    /// Whether the tree being walked holds another configured path.
    nested: bool,
    /// Every file will be read: hold directories open for their files (see [`DirFd`]), and
    /// leave regular files' attributes to the `fstat` of the opened file ([`Node::meta`]).
    pub hold_dirs: bool,
    /// The buffer directories are listed through, reused from one to the next.
    buf: Vec<u8>,
}

/// An entry as its directory's listing gives it.
struct Child<'f> {
    name: &'f OsStr,
    /// `d_type`.
    dtype: u8,
    /// The directory it is in.
    dir: &'f Arc<DirFd>,
    /// Whether its directory is held for its files.
    held: bool,
}

enum Visit {
    Skip,
    Stop,
    Descend(Frame),
    Leaf,
}

impl<'a> Walker<'a> {
    pub fn new(plan: &'a Plan, paths: &'a [FimPath]) -> Walker<'a> {
        Walker {
            plan,
            paths,
            stats: WalkStats::default(),
            pace: None,
            nested: true,
            hold_dirs: false,
            buf: Vec::new(),
        }
    }

    /// Walks everything, handing each item to `emit` in key order. Returns false when `emit`
    /// asked to stop.
    pub fn run(&mut self, emit: &mut dyn FnMut(WalkItem) -> bool) -> bool {
        for ti in 0..self.plan.tops.len() {
            let i = self.plan.tops[ti];
            if !self.walk_top(i, emit) {
                return false;
            }
        }
        true
    }

    /// Looks at the single path `path` only (no descent): for a real-time event on one path.
    /// Returns None when it is not recorded by the configuration.
    pub fn one(&mut self, path: &Path, emit: &mut dyn FnMut(WalkItem) -> bool) {
        let path = normalize(path);
        let Some((root, level)) = self.plan.governing(&path) else {
            return;
        };
        if !self.plan.in_scope(self.paths, &path) {
            return;
        }
        let parent_dev = path
            .parent()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| m.dev());
        let _ = self.visit(
            path,
            None,
            None,
            Scope::Record { root, level },
            level == 0,
            parent_dev.unwrap_or(0),
            &[],
            emit,
            false,
        );
    }

    fn walk_top(&mut self, i: usize, emit: &mut dyn FnMut(WalkItem) -> bool) -> bool {
        let root = self.plan.roots[i].clone();
        let dev = match std::fs::symlink_metadata(&root) {
            Ok(m) => {
                if m.file_type().is_symlink() && !self.paths[i].follow_symlinks {
                    self.stats.root_links.push(i);
                }
                m.dev()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.missing.push(i);
                return true;
            }
            Err(_) => 0,
        };
        // Only a tree with another configured path inside needs the per-entry lookups of
        // configured paths and their ancestors.
        self.nested = self
            .plan
            .roots
            .iter()
            .any(|r| r != &self.plan.roots[i] && r.starts_with(&self.plan.roots[i]));
        let mut stack: Vec<Frame> = Vec::new();
        // (dev, inode) of each directory on the current path, for loop detection.
        let mut ids: Vec<(u64, u64)> = Vec::new();
        match self.visit(
            root,
            None,
            None,
            Scope::Record { root: i, level: 0 },
            true,
            dev,
            &[],
            emit,
            true,
        ) {
            Visit::Stop => return false,
            Visit::Descend(f) => {
                ids.push((f.dev, f.ino));
                stack.push(f);
            }
            Visit::Skip | Visit::Leaf => {}
        }
        while let Some(top) = stack.last_mut() {
            let Some((start, len, dtype)) = top.entries.pop() else {
                stack.pop();
                ids.pop();
                continue;
            };
            let top = &*top;
            let name = OsStr::from_bytes(top.names.get(start..start + len).unwrap_or_default());
            // The child's path (in one allocation) and its key from its directory's (the same as
            // `key_of(&path)`, without parsing the whole path again).
            let mut path = PathBuf::with_capacity(top.path.as_os_str().len() + 1 + name.len());
            path.push(&top.path);
            path.push(name);
            let mut key = Vec::with_capacity(top.key.len() + 1 + name.len());
            key.extend_from_slice(&top.key);
            key.push(0);
            key.extend_from_slice(name.as_bytes());
            let parent_scope = top.scope;
            let parent_dev = top.dev;
            let child = Child {
                name,
                dtype,
                dir: &top.dir,
                held: top.held,
            };
            let configured = if self.nested {
                self.plan.by_path.get(&path)
            } else {
                None
            };
            let (scope, is_root) = match configured {
                Some(&r) => (Scope::Record { root: r, level: 0 }, true),
                None => match parent_scope {
                    Scope::Record { root, level } => (
                        Scope::Record {
                            root,
                            level: level + 1,
                        },
                        false,
                    ),
                    Scope::Transit => (Scope::Transit, false),
                },
            };
            match self.visit(
                path,
                Some(key),
                Some(child),
                scope,
                is_root,
                parent_dev,
                &ids,
                emit,
                true,
            ) {
                Visit::Stop => return false,
                Visit::Descend(f) => {
                    ids.push((f.dev, f.ino));
                    stack.push(f);
                }
                Visit::Skip | Visit::Leaf => {}
            }
        }
        true
    }

    /// Looks at one entry: filters, lstat, emit, and whether (and how) to descend.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        mut path: PathBuf,
        key: Option<Vec<u8>>,
        child: Option<Child<'_>>,
        mut scope: Scope,
        is_root: bool,
        parent_dev: u64,
        ancestors: &[(u64, u64)],
        emit: &mut dyn FnMut(WalkItem) -> bool,
        descend: bool,
    ) -> Visit {
        let toward_root = self.nested && self.plan.ancestors.contains(&path);
        let mut key = key.unwrap_or_else(|| key_of(&path));
        let mut record = true;
        match scope {
            Scope::Transit => {
                if !toward_root {
                    return Visit::Skip;
                }
                record = false;
            }
            Scope::Record { root, level } if !is_root => {
                let fp = &self.paths[root];
                // (An empty matcher is skipped here: matching builds a candidate path each time.)
                if level > fp.depth.saturating_add(1)
                    || (!fp.ignore.is_empty() && fp.ignore.matches(&path))
                {
                    if !toward_root {
                        return Visit::Skip;
                    }
                    scope = Scope::Transit;
                    record = false;
                }
            }
            Scope::Record { .. } => {}
        }
        if let Some(p) = self.pace {
            p();
        }
        let err_root = match scope {
            Scope::Record { root, .. } => Some(root),
            Scope::Transit => self.plan.governing(&path).map(|g| g.0),
        };
        // An entry whose type its listing did not say is looked at now: it is a regular file or
        // not, and its lstat serves below.
        let mut stat = None;
        if let (true, Some(c), Scope::Record { root, .. }) = (self.hold_dirs, &child, scope) {
            let fp = &self.paths[root];
            let is_file = match c.dtype {
                sys::DT_REG => true,
                sys::DT_UNKNOWN if !is_root && fp.checks.hash => {
                    let st = sys::lstat_at(c.dir.fd(), c.name);
                    let is_file = st.as_ref().is_ok_and(Stat::is_file);
                    stat = Some(st);
                    is_file
                }
                _ => false,
            };
            if !is_root && fp.checks.hash && is_file {
                if !fp.restrict.is_empty() && !fp.restrict.matches(&path) {
                    return Visit::Leaf;
                }
                let node = Node {
                    path,
                    key,
                    meta: None,
                    root,
                    link_target: None,
                    dir: c.held.then(|| Arc::clone(c.dir)),
                };
                if !emit(WalkItem::Entry(node)) {
                    return Visit::Stop;
                }
                return Visit::Leaf;
            }
        }
        // A directory that will be listed (its listing says it is one, and it is within the
        // depth) is opened at once, and its attributes taken from the open directory: that
        // spares the lstat of its name, and checking that what was opened is what was lstat-ed.
        let mut opened = None;
        if let (true, true, None, Some(c), Scope::Record { root, level }) =
            (self.hold_dirs, descend, &stat, &child, scope)
        {
            if c.dtype == sys::DT_DIR && level <= self.paths[root].depth {
                let dir = DirFd::open_child_dir(c.dir, c.name).ok().and_then(|d| {
                    let st = sys::fstat(d.fd()).ok().filter(Stat::is_dir)?;
                    Some((d, st))
                });
                if let Some((d, st)) = dir {
                    stat = Some(Ok(st));
                    opened = Some(d);
                }
            }
        }
        let stat = stat.unwrap_or_else(|| match &child {
            Some(c) => sys::lstat_at(c.dir.fd(), c.name),
            None => std::fs::symlink_metadata(&path).map(Stat::from),
        });
        let meta = match stat {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Visit::Skip,
            Err(e) => {
                if let Some(r) = err_root {
                    if e.kind() == io::ErrorKind::PermissionDenied {
                        self.stats.deny(r, &path);
                    } else {
                        self.error(&path, &e);
                    }
                    if !emit(WalkItem::Unreadable { key, root: r }) {
                        return Visit::Stop;
                    }
                }
                return Visit::Skip;
            }
        };
        let (root, level) = match scope {
            Scope::Record { root, level } => (root, level),
            Scope::Transit => (usize::MAX, 0),
        };
        let fp = (root != usize::MAX).then(|| &self.paths[root]);
        let mut meta = meta;
        let mut target = None;
        if meta.is_symlink() {
            if fp.is_some_and(|f| f.follow_symlinks) {
                if let Ok(m) = std::fs::metadata(&path) {
                    meta = Stat::from(&m);
                }
            }
            if meta.is_symlink() {
                target = link_target(&path);
            }
        }
        let is_dir = meta.is_dir();
        if let Some(fp) = fp {
            if record
                && !is_root
                && !fp.restrict.is_empty()
                && (is_dir || !fp.restrict.matches(&path))
            {
                record = false;
            }
        }
        // A leaf's path and key are handed on, not copied.
        let leaf = !is_dir || !descend;
        if record {
            let node = Node {
                path: if leaf {
                    std::mem::take(&mut path)
                } else {
                    path.clone()
                },
                key: if leaf {
                    std::mem::take(&mut key)
                } else {
                    key.clone()
                },
                meta: Some(meta),
                root,
                link_target: target,
                dir: match &child {
                    Some(c) if c.held && meta.is_file() => Some(Arc::clone(c.dir)),
                    _ => None,
                },
            };
            if !emit(WalkItem::Entry(node)) {
                return Visit::Stop;
            }
        }
        if leaf {
            return Visit::Leaf;
        }
        // Whether to go below this directory.
        let mut inside = match scope {
            Scope::Record { .. } => fp.is_some_and(|f| level <= f.depth),
            Scope::Transit => false,
        };
        if !is_root && meta.dev() != parent_dev {
            let pseudo = self.plan.pseudo(&path).is_some();
            if pseudo || fp.is_some_and(|f| f.one_file_system) {
                self.stats.mounts_skipped += 1;
                inside = false;
            }
        }
        if ancestors.contains(&(meta.dev(), meta.ino())) {
            self.stats.loops += 1;
            tracing::debug!(path = %escape_bytes(path.as_os_str().as_bytes()).0, "directory already on the walk's path (symlink loop or bind mount): not entered again");
            return Visit::Leaf;
        }
        let next_scope = if inside {
            scope
        } else if toward_root {
            Scope::Transit
        } else {
            return Visit::Leaf;
        };
        let (listed, verified) = match opened {
            Some(d) => (Ok(d), true),
            None => (DirFd::open(child.as_ref().map(|c| &**c.dir), &path), false),
        };
        let mut dir = match listed {
            Ok(d) => d,
            Err(e) => {
                if let Some(r) = err_root {
                    if e.kind() == io::ErrorKind::PermissionDenied {
                        self.stats.deny(r, &path);
                    } else if e.kind() != io::ErrorKind::NotFound {
                        self.error(&path, &e);
                    }
                    if e.kind() != io::ErrorKind::NotFound
                        && !emit(WalkItem::Unreadable {
                            key: std::mem::take(&mut key),
                            root: r,
                        })
                    {
                        return Visit::Stop;
                    }
                }
                return Visit::Leaf;
            }
        };
        // Its entries are looked at through what was opened, so that must be the directory whose
        // attributes were read: one swapped for another (or for a symlink to one) in between is
        // not listed, and what it held is kept as it was until a scan finds it settled.
        if !verified
            && !sys::fstat(dir.fd()).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
        {
            self.error(
                &path,
                &io::Error::other("replaced between reading its attributes and listing it"),
            );
            if let Some(r) = err_root {
                if !emit(WalkItem::Unreadable {
                    key: std::mem::take(&mut key),
                    root: r,
                }) {
                    return Visit::Stop;
                }
            }
            return Visit::Leaf;
        }
        let mut names = Vec::new();
        let mut entries = Vec::new();
        // (An error part-way ends the listing with the entries listed before it.)
        let _ = sys::list_dir(dir.fd(), &mut self.buf, |name, dtype| {
            entries.push((names.len(), name.len(), dtype));
            names.extend_from_slice(name);
        });
        let name = |&(start, len, _): &(usize, usize, u8)| names.get(start..start + len);
        entries.sort_unstable_by(|a, b| name(b).cmp(&name(a)));
        let held = self.hold_dirs && dir.hold();
        Visit::Descend(Frame {
            names,
            entries,
            scope: next_scope,
            dev: meta.dev(),
            ino: meta.ino(),
            dir: Arc::new(dir),
            held,
            key,
            path,
        })
    }

    fn error(&mut self, path: &Path, e: &io::Error) {
        self.stats.errors += 1;
        if self.stats.first_error.is_none() {
            self.stats.first_error = Some(format!(
                "{}: {e}",
                escape_bytes(path.as_os_str().as_bytes()).0
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_octal(br"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape_octal(br"/x\04"), br"/x\04");
    }

    #[test]
    fn a_directory_larger_than_the_listing_buffer_is_listed_whole_and_in_order() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("t");
        let sub = root.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        // Some 250 KB of entries: several getdents64 calls.
        let mut want: Vec<Vec<u8>> = Vec::new();
        for i in 0..2000 {
            let name = format!("{i:04}-{}", "n".repeat(100));
            std::fs::write(sub.join(&name), b"x").unwrap();
            want.push(name.into_bytes());
        }
        let odd = OsStr::from_bytes(b"z\xff\xfe");
        std::fs::write(sub.join(odd), b"y").unwrap();
        want.push(odd.as_bytes().to_vec());
        std::fs::create_dir(sub.join("0-dir")).unwrap();
        want.push(b"0-dir".to_vec());
        std::os::unix::fs::symlink("nowhere", sub.join("1-link")).unwrap();
        want.push(b"1-link".to_vec());
        want.sort();
        let text = format!(
            "[agent]\nstate_dir = \"/nonexistent\"\n[fim]\n[[fim.paths]]\npath = \"{}\"\n",
            root.display()
        );
        let cfg = crate::config::parse(Path::new("t.toml"), &text)
            .unwrap()
            .fim;
        let plan = Plan::new(&cfg.paths);
        for hold in [false, true] {
            let mut w = Walker::new(&plan, &cfg.paths);
            w.hold_dirs = hold;
            let mut got = Vec::new();
            w.run(&mut |item| {
                if let WalkItem::Entry(n) = item {
                    got.push((n.path, n.meta));
                }
                true
            });
            let names: Vec<Vec<u8>> = got
                .iter()
                .filter(|(p, _)| p.parent() == Some(&sub))
                .map(|(p, _)| p.file_name().unwrap().as_bytes().to_vec())
                .collect();
            assert_eq!(names, want, "hold_dirs {hold}");
            let meta = |name: &[u8]| {
                let p = sub.join(OsStr::from_bytes(name));
                got.iter().find(|(q, _)| *q == p).unwrap().1
            };
            assert!(meta(b"0-dir").unwrap().is_dir());
            assert!(meta(b"1-link").unwrap().is_symlink());
            // Files are left to the fstat of the opened file when every file is read.
            assert_eq!(meta(odd.as_bytes()).is_none(), hold);
        }
    }

    #[test]
    fn proc_is_a_pseudo_file_system() {
        let plan = Plan::new(&[]);
        if plan.mounts.contains_key(Path::new("/proc")) {
            assert_eq!(plan.pseudo(Path::new("/proc")), Some("proc"));
        }
        assert_eq!(plan.pseudo(Path::new("/etc")), None);
    }
}
