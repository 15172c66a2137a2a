//! The host scope in a hostile environment: every case gets a clear error, never
//! undefined behaviour or a crash.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use latchkey::{Error, ErrorKind, Scope};

fn fresh_dir() -> crate::support::TempDir {
    let dir = crate::support::TempDir(crate::support::fresh_dir("latchkey-hostile"));
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[track_caller]
fn open_fails(dir: &std::path::Path, kind: ErrorKind, says: &str) -> Error {
    let url = format!("host:{}", dir.display());
    let err = Scope::open(&url).expect_err("the namespace must be refused");
    assert_eq!(err.kind(), kind, "{err}");
    assert!(err.to_string().contains(says), "{err:?} should say {says:?}");
    assert_eq!(err.scope(), Some(url.as_str()));
    err
}

/// Makes a valid namespace file in `dir` and closes it again.
fn valid_namespace(dir: &std::path::Path) -> PathBuf {
    let scope = Scope::open(&format!("host:{}", dir.display())).unwrap();
    drop(scope.mutex("x").unwrap().lock_blocking().unwrap());
    drop(scope);
    dir.join(latchkey_host::FILE_NAME)
}

#[test]
fn a_foreign_file_is_refused() {
    let dir = fresh_dir();
    fs::write(dir.join(latchkey_host::FILE_NAME), "this is not a namespace").unwrap();
    open_fails(&dir, ErrorKind::Corrupted, "is not a latchkey namespace file");
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = fresh_dir();
    let file = valid_namespace(&dir);
    fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(10_000).unwrap();
    open_fails(&dir, ErrorKind::Corrupted, "is truncated");
}

#[test]
fn a_file_of_another_layout_version_is_refused() {
    let dir = fresh_dir();
    let file = valid_namespace(&dir);
    let mut bytes = fs::read(&file).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    fs::write(&file, bytes).unwrap();
    open_fails(&dir, ErrorKind::Corrupted, "layout version 99");
}

#[test]
fn a_symlink_where_the_file_should_be_is_refused() {
    let dir = fresh_dir();
    let target = dir.join("elsewhere");
    fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, dir.join(latchkey_host::FILE_NAME)).unwrap();
    open_fails(&dir, ErrorKind::PermissionDenied, "symbolic link");
    assert_eq!(fs::read(&target).unwrap().len(), 0, "the link's target was not touched");
}

#[test]
fn a_world_writable_directory_is_refused() {
    let dir = fresh_dir();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    open_fails(&dir, ErrorKind::PermissionDenied, "writable by everyone");
}

#[test]
fn a_directory_of_another_user_is_refused() {
    let dir = fresh_dir();
    // Needs root to give the directory away (CI runs as root).
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; chown only reads it.
    let changed = unsafe { libc::chown(path.as_ptr(), 65534, 65534) } == 0;
    assert!(changed, "this test needs root to chown {} to another user", dir.display());
    open_fails(&dir, ErrorKind::PermissionDenied, "belongs to another user (uid 65534)");
}

#[test]
fn a_symlinked_namespace_directory_is_refused() {
    let dir = fresh_dir();
    let link = dir.with_extension("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let link = crate::support::TempDir(link);
    open_fails(&link, ErrorKind::PermissionDenied, "is a symbolic link");
}

#[test]
fn names_cannot_escape_the_directory() {
    let dir = fresh_dir();
    let scope = Scope::open(&format!("host:{}", dir.join("ns").display())).unwrap();
    for name in ["../x", "../../etc/passwd", "/abs", "a/../../b"] {
        let guard = scope.lock_blocking(name).unwrap();
        assert_eq!(guard.name().as_str(), name);
    }
    let entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("ns")], "names make no files");
    let inside: Vec<_> = fs::read_dir(dir.join("ns")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(inside, vec![std::ffi::OsString::from(latchkey_host::FILE_NAME)]);
}

#[test]
fn a_full_disk_is_reported_when_the_namespace_cannot_grow() {
    let dir = fresh_dir();
    // A 256 KiB file system (needs root to mount, as CI has).
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256K", "tmpfs", dir.to_str().unwrap()])
        .status()
        .expect("run mount(8)");
    assert!(status.success(), "this test needs root to mount a small tmpfs on {}", dir.display());
    let namespace = dir.join("ns");
    let result = (|| -> latchkey::Result<Error> {
        let scope = Scope::open(&format!("host:{}", namespace.display()))?;
        let first = scope.mutex("first")?;
        let mut open = Vec::new();
        // Every name open at once: the file must grow until the disk is full.
        for i in 0.. {
            match scope.mutex(&format!("name/{i}")) {
                Ok(mutex) => open.push(mutex),
                Err(err) => {
                    // Names made before still work: the file was never cut short.
                    drop(first.lock_blocking()?);
                    return Ok(err);
                }
            }
        }
        unreachable!()
    })();
    let _ = std::process::Command::new("umount").arg(dir.as_os_str()).status();
    let err = result.expect("names made before the disk filled keep working");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("no space left"), "{err}");
}
