//! The attributes FIM records for a path: building [`FileAttrs`] from `lstat`/`fstat`, resolving
//! user and group names, and comparing two records attribute by attribute.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::Checks;
use crate::event::{FileAttrs, FileType};
use crate::sys::Stat;

/// The type of an entry from its metadata.
pub fn file_type(meta: &Stat) -> FileType {
    match meta.kind() {
        libc::S_IFREG => FileType::File,
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::Fifo,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFCHR => FileType::CharDevice,
        _ => FileType::Unknown,
    }
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// User and group names by id, read from `/etc/passwd` and `/etc/group` once per scan.
///
/// Reading the files rather than calling NSS keeps the lookup free of C library state; ids without
/// a local name (LDAP users, deleted accounts) simply have no name.
#[derive(Debug, Default)]
pub struct Names {
    /// (id, name) sorted by id: looked up for every entry scanned, by a binary search rather
    /// than by hashing the id.
    users: Vec<(u32, String)>,
    groups: Vec<(u32, String)>,
}

fn name_of(names: &[(u32, String)], id: u32) -> Option<&str> {
    names
        .binary_search_by_key(&id, |(i, _)| *i)
        .ok()
        .map(|at| names[at].1.as_str())
}

impl Names {
    /// Loads the local user and group databases (missing or unreadable files give no names).
    pub fn load() -> Names {
        Names::from_files(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    /// The local user and group names, shared: loaded again only when `/etc/passwd` or
    /// `/etc/group` changed since the last call (a real-time check per changed file would
    /// otherwise parse both files each time).
    pub fn current() -> Arc<Names> {
        type Stamp = Option<(u64, u64, i64, i64)>;
        static CACHE: Mutex<Option<([Stamp; 2], Arc<Names>)>> = Mutex::new(None);
        fn stamp(p: &str) -> Stamp {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        }
        let now = [stamp("/etc/passwd"), stamp("/etc/group")];
        let Ok(mut cache) = CACHE.lock() else {
            return Arc::new(Names::load());
        };
        match cache.as_ref() {
            Some((s, names)) if *s == now => Arc::clone(names),
            _ => {
                let names = Arc::new(Names::load());
                *cache = Some((now, Arc::clone(&names)));
                names
            }
        }
    }

    /// Loads from the given files (for tests).
    pub fn from_files(passwd: &Path, group: &Path) -> Names {
        Names {
            users: parse_id_file(passwd),
            groups: parse_id_file(group),
        }
    }

    pub fn user(&self, uid: u32) -> Option<&str> {
        name_of(&self.users, uid)
    }

    pub fn group(&self, gid: u32) -> Option<&str> {
        name_of(&self.groups, gid)
    }
}

/// `name:x:id:...` lines; the first name for an id wins, as getpwuid does. Sorted by id.
fn parse_id_file(path: &Path) -> Vec<(u32, String)> {
    let mut map = HashMap::new();
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    for line in text.split(|b| *b == b'\n') {
        let mut fields = line.split(|b| *b == b':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(name), Some(id)) = (
            std::str::from_utf8(name),
            std::str::from_utf8(id)
                .ok()
                .and_then(|s| s.parse::<u32>().ok()),
        ) else {
            continue;
        };
        if !name.is_empty() && !name.starts_with('#') {
            map.entry(id).or_insert_with(|| name.to_string());
        }
    }
    let mut names: Vec<(u32, String)> = map.into_iter().collect();
    names.sort_unstable_by_key(|(id, _)| *id);
    names
}

/// Whether two stats of an entry give the same recorded attributes (all of them, whatever the
/// checks): then the attributes built from the first serve for the second.
pub fn same_attrs(a: &Stat, b: &Stat) -> bool {
    a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid() && same_content(a, b)
}

/// Whether two stats of a file say its content cannot have changed in between: same file (device
/// and inode), size, mtime and ctime (a write moves both times).
pub fn same_content(a: &Stat, b: &Stat) -> bool {
    a.dev() == b.dev()
        && a.ino() == b.ino()
        && a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

/// The attributes selected by `checks`, from an entry's metadata. The hash is left to the caller;
/// `link_target` is the escaped target for symlinks.
pub fn from_metadata(
    meta: &Stat,
    checks: &Checks,
    names: &Names,
    link_target: Option<String>,
) -> FileAttrs {
    let ft = file_type(meta);
    FileAttrs {
        file_type: checks.file_type.then_some(ft),
        size: checks.size.then_some(meta.size()),
        mode: checks.perm.then_some(meta.mode() & 0o7777),
        uid: checks.owner.then_some(meta.uid()),
        gid: checks.group.then_some(meta.gid()),
        user: if checks.owner {
            names.user(meta.uid()).map(str::to_string)
        } else {
            None
        },
        group: if checks.group {
            names.group(meta.gid()).map(str::to_string)
        } else {
            None
        },
        inode: checks.inode.then_some(meta.ino()),
        device: checks.device.then_some(meta.dev()),
        mtime: checks
            .mtime
            .then_some(nanos(meta.mtime(), meta.mtime_nsec())),
        ctime: checks
            .ctime
            .then_some(nanos(meta.ctime(), meta.ctime_nsec())),
        hash: None,
        hash_skipped: None,
        link_target: if checks.link && ft == FileType::Symlink {
            link_target
        } else {
            None
        },
    }
}

/// The names of the attributes that differ between two records, in a fixed order.
///
/// An attribute missing on either side (not checked then, or now) is not compared. `ctime` is
/// reported only when nothing else changed: any change of content, mode or owner moves it too, and
/// listing it then would only be noise; alone, it says that the inode was touched in a way that
/// hides itself (mtime restored, extended attributes changed).
pub fn changed(before: &FileAttrs, after: &FileAttrs) -> Vec<&'static str> {
    fn differs<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
        matches!((a, b), (Some(x), Some(y)) if x != y)
    }
    let mut out = Vec::new();
    if differs(&before.file_type, &after.file_type) {
        out.push("type");
    }
    // A directory's size and times move whenever an entry in it is added, removed or renamed,
    // and those entries are reported themselves.
    let dir = before.file_type == Some(FileType::Directory)
        && after.file_type == Some(FileType::Directory);
    if !dir && differs(&before.size, &after.size) {
        out.push("size");
    }
    if differs(&before.mode, &after.mode) {
        out.push("perm");
    }
    if differs(&before.uid, &after.uid) || differs(&before.user, &after.user) {
        out.push("owner");
    }
    if differs(&before.gid, &after.gid) || differs(&before.group, &after.group) {
        out.push("group");
    }
    if differs(&before.inode, &after.inode) {
        out.push("inode");
    }
    if differs(&before.device, &after.device) {
        out.push("device");
    }
    if !dir && differs(&before.mtime, &after.mtime) {
        out.push("mtime");
    }
    if differs(&before.hash, &after.hash) {
        out.push("hash");
    }
    if differs(&before.link_target, &after.link_target)
        || (before.link_target.is_some() != after.link_target.is_some()
            && before.file_type == after.file_type
            && before.file_type == Some(FileType::Symlink))
    {
        out.push("link");
    }
    if out.is_empty() && !dir && differs(&before.ctime, &after.ctime) {
        out.push("ctime");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> FileAttrs {
        FileAttrs {
            file_type: Some(FileType::File),
            size: Some(10),
            mode: Some(0o644),
            uid: Some(0),
            gid: Some(0),
            user: Some("root".into()),
            group: Some("root".into()),
            inode: Some(5),
            device: Some(1),
            mtime: Some(100),
            ctime: Some(100),
            hash: Some("aa".into()),
            hash_skipped: None,
            link_target: None,
        }
    }

    #[test]
    fn each_attribute_alone() {
        let b = base();
        type Edit = Box<dyn Fn(&mut FileAttrs)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("type", Box::new(|a| a.file_type = Some(FileType::Fifo))),
            ("size", Box::new(|a| a.size = Some(11))),
            ("perm", Box::new(|a| a.mode = Some(0o600))),
            ("owner", Box::new(|a| a.uid = Some(1))),
            ("group", Box::new(|a| a.gid = Some(1))),
            ("inode", Box::new(|a| a.inode = Some(6))),
            ("device", Box::new(|a| a.device = Some(2))),
            ("mtime", Box::new(|a| a.mtime = Some(101))),
            ("hash", Box::new(|a| a.hash = Some("bb".into()))),
            ("ctime", Box::new(|a| a.ctime = Some(101))),
        ];
        for (name, f) in cases {
            let mut a = base();
            f(&mut a);
            assert_eq!(changed(&b, &a), vec![name]);
        }
        let mut a = base();
        a.mode = Some(0o600);
        a.ctime = Some(200);
        assert_eq!(changed(&b, &a), vec!["perm"], "ctime is implied");
    }

    #[test]
    fn directory_times_and_size_are_implied_by_their_entries() {
        let mut b = base();
        b.file_type = Some(FileType::Directory);
        let mut a = b.clone();
        a.mtime = Some(300);
        a.ctime = Some(300);
        a.size = Some(8192);
        assert!(changed(&b, &a).is_empty());
        a.mode = Some(0o777);
        assert_eq!(changed(&b, &a), vec!["perm"]);
    }

    #[test]
    fn unchecked_attributes_are_not_compared() {
        let b = base();
        let mut a = base();
        a.hash = None;
        a.size = None;
        assert!(changed(&b, &a).is_empty());
    }

    #[test]
    fn names_files_parse() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("p"),
            "root:x:0:0::/root:/bin/sh\n#c\nbad\nweb:x:33:33::/:\n",
        )
        .unwrap();
        std::fs::write(d.path().join("g"), "root:x:0:\nadm:x:4:a,b\n").unwrap();
        let n = Names::from_files(&d.path().join("p"), &d.path().join("g"));
        assert_eq!(n.user(33), Some("web"));
        assert_eq!(n.group(4), Some("adm"));
        assert_eq!(n.user(7), None);
    }
}
