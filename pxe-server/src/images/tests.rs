use super::*;
use std::fs;
use std::os::unix::fs::symlink;

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let store = ImageStore::new(root).unwrap();
    (dir, store)
}

fn refused(store: &ImageStore, name: &[u8]) -> &'static str {
    match store.open(name) {
        Err(e) if e.refusal().is_some() => e.refusal().unwrap(),
        Err(e) => panic!("{:?}: expected an access violation, got {e}", name),
        Ok(_) => panic!("{:?}: expected an access violation, got an image", name),
    }
}

#[test]
fn missing_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = ImageStore::new(dir.path().join("nope")).err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    fs::write(dir.path().join("file"), b"x").unwrap();
    assert!(ImageStore::new(dir.path().join("file")).is_err());
}

#[test]
fn serves_files_and_normalizes_names() {
    let (_d, store) = store();
    fs::create_dir_all(store.root().join("pxelinux.cfg")).unwrap();
    fs::write(
        store.root().join("pxelinux.cfg/default"),
        b"DEFAULT linux\n",
    )
    .unwrap();
    for name in [
        &b"pxelinux.cfg/default"[..],
        b"pxelinux.cfg\\default",
        b"./pxelinux.cfg//default",
        b"pxelinux.cfg/./default",
    ] {
        let img = store.open(name).unwrap();
        assert_eq!(img.octets(), b"DEFAULT linux\n", "{name:?}");
        assert_eq!(img.netascii(), b"DEFAULT linux\r\n");
    }
    // One cache entry for all spellings, and the same Arc.
    assert_eq!(store.slots.lock().unwrap().len(), 1);
    let a = store.open(b"pxelinux.cfg/default").unwrap();
    let b = store.open(b"pxelinux.cfg\\default").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn traversal_is_refused() {
    let (d, store) = store();
    fs::write(d.path().join("secret"), b"s").unwrap();
    fs::create_dir(store.root().join("a")).unwrap();
    assert_eq!(refused(&store, b"../secret"), "\"..\" in file name");
    assert_eq!(refused(&store, b"a/../../secret"), "\"..\" in file name");
    assert_eq!(refused(&store, b"a/.."), "\"..\" in file name");
    assert_eq!(refused(&store, b"a\\..\\..\\secret"), "\"..\" in file name");
    assert_eq!(refused(&store, b"/etc/passwd"), "absolute file name");
    assert_eq!(refused(&store, b"\\etc\\passwd"), "absolute file name");
    assert_eq!(refused(&store, b"a\0b"), "NUL byte in file name");
    assert_eq!(refused(&store, b""), "empty file name");
    assert_eq!(refused(&store, b"./"), "empty file name");
}

#[test]
fn symlinks_inside_the_root_work_and_outside_are_refused() {
    let (d, store) = store();
    let root = store.root().to_path_buf();
    fs::create_dir(root.join("images")).unwrap();
    fs::write(root.join("images/vmlinuz"), b"kernel").unwrap();
    fs::write(d.path().join("outside"), b"secret").unwrap();
    symlink("images/vmlinuz", root.join("linux")).unwrap();
    symlink("../outside", root.join("escape")).unwrap();
    symlink(d.path().join("outside"), root.join("absolute")).unwrap();
    symlink("/proc/self/root/etc/passwd", root.join("magic")).unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    symlink("../..", root.join("sub/dotdot")).unwrap();

    assert_eq!(store.open(b"linux").unwrap().octets(), b"kernel");
    assert!(matches!(store.open(b"escape"), Err(OpenError::LeavesRoot)));
    assert_eq!(refused(&store, b"escape"), "path leaves the root");
    assert_eq!(refused(&store, b"absolute"), "path leaves the root");
    assert_eq!(refused(&store, b"magic"), "path leaves the root");
    assert_eq!(
        refused(&store, b"sub/dotdot/outside"),
        "path leaves the root"
    );
}

#[test]
fn non_regular_files_are_refused() {
    let (_d, store) = store();
    let root = store.root().to_path_buf();
    fs::create_dir(root.join("dir")).unwrap();
    assert_eq!(refused(&store, b"dir"), "is a directory");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // O_NONBLOCK: opening a FIFO with no writer must not hang.
    assert_eq!(refused(&store, b"fifo"), "is a FIFO");
}

#[test]
fn the_service_reads_only_what_its_user_may() {
    assert!(readable_by_the_service(0o100644, true));
    assert!(readable_by_the_service(0o100604, true));
    assert!(!readable_by_the_service(0o100640, true));
    assert!(!readable_by_the_service(0o100600, true));
    // Not root: the open itself was checked against that user's permissions.
    assert!(readable_by_the_service(0o100600, false));
}

/// A private file, and a hard link under the root to a private file outside it (which no
/// path rule can see), are refused while the daemon runs as root, as by tftp-hpa; a
/// world-readable one is served. As another user the kernel decides: its own 0600 file is
/// served.
#[test]
fn private_files_and_hard_links_to_them_are_refused_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = store();
    let root = store.root().to_path_buf();
    let set_mode =
        |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    fs::write(root.join("public"), b"ok").unwrap();
    set_mode(&root.join("public"), 0o644);
    fs::write(root.join("private"), b"secret").unwrap();
    set_mode(&root.join("private"), 0o600);
    let outside = dir.path().join("shadow");
    fs::write(&outside, b"root:$6$hash").unwrap();
    set_mode(&outside, 0o640);
    fs::hard_link(&outside, root.join("linked")).unwrap();
    assert_eq!(store.open(b"public").unwrap().len(), 2);
    if rustix::process::geteuid().is_root() {
        assert_eq!(refused(&store, b"private"), NOT_WORLD_READABLE);
        assert_eq!(refused(&store, b"linked"), NOT_WORLD_READABLE);
    } else {
        assert_eq!(store.open(b"private").unwrap().len(), 6);
        assert_eq!(store.open(b"linked").unwrap().len(), 12);
    }
}

#[test]
fn missing_files_are_not_found() {
    let (_d, store) = store();
    fs::write(store.root().join("file"), b"x").unwrap();
    assert!(matches!(store.open(b"nope"), Err(OpenError::NotFound)));
    assert!(matches!(store.open(b"dir/nope"), Err(OpenError::NotFound)));
    // A file used as a directory.
    assert!(matches!(store.open(b"file/x"), Err(OpenError::NotFound)));
}

#[test]
fn every_copy_method_copies_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    fs::write(dir.path().join("src"), &data).unwrap();
    let src = File::open(dir.path().join("src")).unwrap();
    for method in [
        CopyMethod::FileRange,
        CopyMethod::SendFile,
        CopyMethod::ReadWrite,
    ] {
        for limit in [data.len() as u64, 1000, data.len() as u64 + 5000] {
            let mut dst = tempfile::tempfile().unwrap();
            let n = copy_into(&src, &mut dst, limit, method).unwrap();
            let want = &data[..(limit as usize).min(data.len())];
            assert_eq!(n, want.len() as u64, "{method:?} {limit}");
            let mut got = Vec::new();
            use std::io::Seek;
            dst.seek(std::io::SeekFrom::Start(0)).unwrap();
            dst.read_to_end(&mut got).unwrap();
            assert_eq!(got, want, "{method:?} {limit}");
        }
    }
}

#[test]
fn empty_file() {
    let (_d, store) = store();
    fs::write(store.root().join("empty"), b"").unwrap();
    let img = store.open(b"empty").unwrap();
    assert!(img.is_empty());
    assert_eq!(img.netascii(), b"");
}

#[test]
fn snapshot_is_a_sealed_map_with_the_file_bytes() {
    let (_d, store) = store();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(store.root().join("big"), &data).unwrap();
    let img = store.open(b"big").unwrap();
    assert!(matches!(img.data, ImageData::Mapped(_)));
    assert_eq!(img.octets(), &data[..]);
}

#[test]
fn replaced_file_is_served_fresh_while_old_image_stays() {
    let (_d, store) = store();
    let root = store.root().to_path_buf();
    fs::write(root.join("initrd"), b"version one").unwrap();
    let old = store.open(b"initrd").unwrap();
    fs::write(root.join("initrd.new"), b"version two, longer").unwrap();
    fs::rename(root.join("initrd.new"), root.join("initrd")).unwrap();
    let new = store.open(b"initrd").unwrap();
    assert_eq!(new.octets(), b"version two, longer");
    assert_eq!(old.octets(), b"version one");
    assert!(!Arc::ptr_eq(&old, &new));
    // Each snapshot knows the file version it holds (HTTP's ETag comes from it).
    let (vo, vn) = (old.version().unwrap(), new.version().unwrap());
    assert_eq!((vo.size, vn.size), (11, 19));
    assert_ne!(vo.ino, vn.ino);
    let meta = fs::metadata(root.join("initrd")).unwrap();
    assert_eq!(vn.ino, meta.ino());
    // Unchanged file: the cached snapshot is reused.
    assert!(Arc::ptr_eq(&new, &store.open(b"initrd").unwrap()));
    assert!(Image::from_bytes(vec![1]).version().is_none());
}

#[test]
fn truncate_in_place_cannot_sigbus_a_held_image() {
    let (_d, store) = store();
    let path = store.root().join("vmlinuz");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(&path, &data).unwrap();
    let old = store.open(b"vmlinuz").unwrap();

    // Truncate to zero and rewrite shorter, in place (same inode).
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    (&f).write_all(b"short").unwrap();
    drop(f);

    // Touching every page of the old image would SIGBUS if it mapped the file itself.
    let sum: u64 = old.octets().iter().map(|&b| u64::from(b)).sum();
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(sum, want);
    assert_eq!(old.octets(), &data[..]);

    let new = store.open(b"vmlinuz").unwrap();
    assert_eq!(new.octets(), b"short");
}

#[test]
fn unused_images_are_evicted_over_the_limit() {
    let (_d, mut store) = store();
    store.max_cached_bytes = 10;
    fs::write(store.root().join("a"), b"aaaaaaaa").unwrap();
    fs::write(store.root().join("b"), b"bbbbbbbb").unwrap();
    let a = store.open(b"a").unwrap();
    // "a" is held: it stays although the cache is over its limit.
    let b = store.open(b"b").unwrap();
    assert_eq!(store.slots.lock().unwrap().len(), 2);
    drop(a);
    // Opening "b" again (cache hit) does not evict; a new snapshot does.
    drop(b);
    fs::write(store.root().join("c"), b"cccccccc").unwrap();
    let _c = store.open(b"c").unwrap();
    let slots = store.slots.lock().unwrap();
    assert!(slots.contains_key(&b"c"[..]));
    assert_eq!(slots.len(), 1, "a and b were unused and evicted");
}
