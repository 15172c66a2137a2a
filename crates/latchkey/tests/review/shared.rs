//! A namespace shared by the members of a group: a directory the user chooses, whose
//! permissions decide who may take its locks (design brief, "host"). `open_or_create`
//! (namespace/file.rs) asks for mode 0o660 for the file of such a namespace, but the
//! mode goes through the creating process's umask: with the usual 022 the file is 0o640,
//! and every member of the group but its creator is refused (`PermissionDenied`) in a
//! directory made for them (setgid, group-writable).

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use latchkey::Scope;

use super::{Dirs, Proc};

/// `nobody` and `nogroup`.
const OTHER_UID: u32 = 65534;
const GROUP: u32 = 65534;

#[test]
fn a_member_of_the_group_of_a_shared_namespace_can_take_its_locks() {
    let dirs = Dirs::new("latchkey-review-shared");
    let shared = dirs.other("shared");
    fs::create_dir(&shared).unwrap();
    let path = CString::new(shared.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; chown only reads it.
    let given = unsafe { libc::chown(path.as_ptr(), 0, GROUP) } == 0;
    assert!(given, "this test needs root to give {} to group {GROUP}", shared.display());
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o2770)).unwrap();
    let url = format!("host:{}", shared.display());

    // Root, with the usual umask, makes the namespace and uses it.
    // SAFETY: a plain system call.
    let umask = unsafe { libc::umask(0o022) };
    let scope = Scope::open(&url).unwrap();
    drop(scope.lock_blocking("x").unwrap());
    // SAFETY: as above.
    unsafe { libc::umask(umask) };

    // A member of the group takes the same lock.
    let mut member = Proc::spawn_as(&["take", &url, "x"], OTHER_UID, GROUP);
    let said = member.line("its grant of x");
    let mode = fs::metadata(shared.join(latchkey_host::FILE_NAME)).unwrap().permissions().mode() & 0o777;
    assert!(
        said.starts_with("token "),
        "a member of the group of the shared namespace directory {} (mode 2770) could not take a lock in it: {said} \
         (the namespace file was made with mode {mode:o})",
        shared.display()
    );
}
