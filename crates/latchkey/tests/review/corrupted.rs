//! A corrupted namespace file must give errors, never a panic. The name index's
//! descriptor (`Header::index`, offset 96: the index's offset | log2 of its slots) is
//! read by `Index::of` (table.rs), which adds the offset of its last slot to the index's
//! offset without checking for overflow: an offset near 2^64 panics ("attempt to add
//! with overflow") wherever overflow checks are on, as in every debug build.

use std::fs;
use std::os::unix::fs::FileExt;

use latchkey::{ErrorKind, Scope};

use super::Dirs;

/// Where the header keeps the name index's descriptor (see `layout::Header`).
const INDEX_DESCRIPTOR: u64 = 96;

#[test]
fn a_corrupted_name_index_descriptor_gives_an_error_not_a_panic() {
    let dirs = Dirs::new("latchkey-review-index");
    let scope = Scope::open(&dirs.url()).unwrap();
    drop(scope.mutex("x").unwrap().lock_blocking().unwrap());
    drop(scope);
    let file = fs::OpenOptions::new().write(true).open(dirs.file()).unwrap();
    // An index at offset 0xffff_ffff_ffff_f000 of 2^10 slots.
    file.write_all_at(&0xffff_ffff_ffff_f00au64.to_le_bytes(), INDEX_DESCRIPTOR).unwrap();
    drop(file);
    let url = dirs.url();
    let outcome = std::panic::catch_unwind(move || {
        let scope = Scope::open(&url)?;
        scope.mutex("y").map(|_| ())
    });
    match outcome {
        Ok(Err(err)) => assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}"),
        Ok(Ok(())) => panic!("a name was opened through a corrupted name index"),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panic!("opening a name in a namespace file with a corrupted name index panicked ({what:?}), instead of a Corrupted error")
        }
    }
}
