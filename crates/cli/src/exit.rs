//! Exit codes: sysexits(3) where one fits, so that scripts can tell a busy lock from a
//! broken setup and from the command's own failure.

use std::fmt;

use latchkey::ErrorKind;

/// A usage error: a bad option or duration, an invalid lock name or scope URL (`EX_USAGE`).
pub const USAGE: u8 = 64;
/// The name is in use as another kind of lock or with another capacity (`EX_DATAERR`).
pub const MISMATCH: u8 = 65;
/// The scope cannot be reached, or is not built into this binary (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// Any other latchkey error, e.g. a corrupted namespace file (`EX_SOFTWARE`).
pub const SOFTWARE: u8 = 70;
/// The lock could not be had: busy with `-n`, or not granted before `-w` (`EX_TEMPFAIL`);
/// `-E` chooses another.
pub const CONFLICT: u8 = 75;
/// Permission denied on the namespace (`EX_NOPERM`).
pub const NO_PERMISSION: u8 = 77;
/// `run`: the hold was lost while the command ran, and the command was stopped. (Not a
/// sysexits code, so that it is never confused with one.)
pub const LOST: u8 = 79;
/// `run`: the command could not be started.
pub const CANNOT_EXECUTE: u8 = 126;
/// `run`: the command was not found.
pub const NOT_FOUND: u8 = 127;

/// The exit codes, as `--help` shows them.
pub const HELP: &str = "\
Exit codes:
  0      success; `status --quiet NAME`: NAME is held
  1      `status --quiet NAME`: NAME is free; `demo`: an invariant did not hold
  64     usage error: a bad option or duration, an invalid lock name or scope URL
  65     the name is in use as another kind of lock, or with another capacity
  69     the scope cannot be reached, or is not built into this binary
  70     another latchkey error (e.g. a corrupted namespace file)
  75     the lock could not be had: busy with -n, or not granted within -w
         (-E/--conflict-exit-code N chooses another code)
  77     permission denied on the namespace
  79     run: the hold was lost while COMMAND ran, and COMMAND was stopped
  126    run: COMMAND could not be started
  127    run: COMMAND was not found
  other  run: COMMAND's own exit code, or 128 + N if signal N killed it";

/// The exit code for a latchkey error; `conflict` for a lock not had.
pub fn of(err: &latchkey::Error, conflict: u8) -> u8 {
    match err.kind() {
        ErrorKind::Timeout => conflict,
        ErrorKind::InvalidName | ErrorKind::InvalidScope => USAGE,
        ErrorKind::CapacityMismatch => MISMATCH,
        ErrorKind::Unavailable | ErrorKind::Unsupported => UNAVAILABLE,
        ErrorKind::PermissionDenied => NO_PERMISSION,
        _ => SOFTWARE,
    }
}

/// The exit code for any error of a subcommand: a latchkey error's, 64 for a usage
/// error found after parsing, 70 for the rest.
pub fn of_any(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<latchkey::Error>() {
        Some(err) => of(err, CONFLICT),
        None if err.is::<UsageError>() => USAGE,
        None => SOFTWARE,
    }
}

/// A usage error found after parsing (exit 64).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_documented_codes() {
        let code = |kind| of(&latchkey::Error::new(kind, "x"), CONFLICT);
        assert_eq!(code(ErrorKind::Timeout), 75);
        assert_eq!(of(&latchkey::Error::new(ErrorKind::Timeout, "x"), 3), 3);
        assert_eq!(code(ErrorKind::InvalidName), 64);
        assert_eq!(code(ErrorKind::InvalidScope), 64);
        assert_eq!(code(ErrorKind::CapacityMismatch), 65);
        assert_eq!(code(ErrorKind::Unsupported), 69);
        assert_eq!(code(ErrorKind::Unavailable), 69);
        assert_eq!(code(ErrorKind::PermissionDenied), 77);
        assert_eq!(code(ErrorKind::Corrupted), 70);
        for code in [USAGE, MISMATCH, UNAVAILABLE, SOFTWARE, CONFLICT, NO_PERMISSION, LOST] {
            assert!(HELP.contains(&format!("  {code} ")), "{code} is not in the help");
        }
    }
}
