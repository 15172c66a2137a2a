//! The one public error type of latchkey.

use std::error::Error as StdError;
use std::fmt;

/// What went wrong. Each kind has a stable numeric [`code`](ErrorKind::code).
///
/// The first six codes follow the convention of an existing named-lock runtime so that
/// bindings can map them one to one; later kinds are numbered after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A failure that fits no other kind.
    Generic,
    /// The lock could not be acquired for a reason other than a timeout.
    AcquireFailed,
    /// The lock could not be released.
    ReleaseFailed,
    /// The deadline passed before the lock was granted.
    Timeout,
    /// The operation needs a held lock, and it is not held.
    NotHeld,
    /// The lock name breaks the rules of [`Name`](crate::Name).
    InvalidName,
    /// The hold was lost (a lease expired, a connection dropped).
    HandleLost,
    /// The scope's backing engine cannot be reached now.
    Unavailable,
    /// The scope or primitive cannot do what was asked.
    Unsupported,
    /// The operating system refused access.
    PermissionDenied,
    /// The name is already open with another capacity (or another kind of primitive).
    CapacityMismatch,
    /// The scope has been closed.
    Closed,
    /// The scope URL could not be parsed.
    InvalidScope,
    /// State kept by the scope (a namespace file, a server record) is not what latchkey wrote.
    Corrupted,
}

impl ErrorKind {
    /// The stable numeric code of this kind.
    pub fn code(self) -> u32 {
        match self {
            ErrorKind::Generic => 8400,
            ErrorKind::AcquireFailed => 8401,
            ErrorKind::ReleaseFailed => 8402,
            ErrorKind::Timeout => 8403,
            ErrorKind::NotHeld => 8404,
            ErrorKind::InvalidName => 8405,
            ErrorKind::HandleLost => 8406,
            ErrorKind::Unavailable => 8407,
            ErrorKind::Unsupported => 8408,
            ErrorKind::PermissionDenied => 8409,
            ErrorKind::CapacityMismatch => 8410,
            ErrorKind::Closed => 8411,
            ErrorKind::InvalidScope => 8412,
            ErrorKind::Corrupted => 8413,
        }
    }

    /// Whether trying the same operation again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::HandleLost | ErrorKind::AcquireFailed)
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Generic => "error",
            ErrorKind::AcquireFailed => "acquire failed",
            ErrorKind::ReleaseFailed => "release failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::NotHeld => "not held",
            ErrorKind::InvalidName => "invalid name",
            ErrorKind::HandleLost => "hold lost",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::CapacityMismatch => "capacity mismatch",
            ErrorKind::Closed => "closed",
            ErrorKind::InvalidScope => "invalid scope",
            ErrorKind::Corrupted => "corrupted state",
        }
    }
}

/// A latchkey error: a [kind](ErrorKind), a message, and the lock name and scope it concerns.
///
/// ```
/// use latchkey_model::{Error, ErrorKind};
/// let err = Error::new(ErrorKind::Timeout, "not granted within 5ms").with_name("db").with_scope("process:");
/// assert_eq!(err.code(), 8403);
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), "timed out: not granted within 5ms (lock \"db\" in scope process:; retrying may help)");
/// ```
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    name: Option<String>,
    scope: Option<String>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with a message saying what failed.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner { kind, message: message.into(), name: None, scope: None, source: None }))
    }

    /// Records the lock name the error concerns.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// Records the scope the error concerns, as its URL.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.0.scope = Some(scope.into());
        self
    }

    /// Records the underlying cause.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The stable numeric code of the kind.
    pub fn code(&self) -> u32 {
        self.0.kind.code()
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.0.kind.is_retryable()
    }

    /// The lock name the error concerns, if any.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// The scope the error concerns, if any.
    pub fn scope(&self) -> Option<&str> {
        self.0.scope.as_deref()
    }

    /// The message, without the kind, name and scope.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        write!(f, "{}: {}", inner.kind.label(), inner.message)?;
        let retry = inner.kind.is_retryable().then_some("retrying may help");
        let parts: Vec<String> =
            [inner.name.as_ref().map(|n| format!("lock {n:?}")), inner.scope.as_ref().map(|s| format!("in scope {s}"))]
                .into_iter()
                .flatten()
                .collect();
        match (parts.is_empty(), retry) {
            (true, None) => Ok(()),
            (true, Some(r)) => write!(f, " ({r})"),
            (false, None) => write!(f, " ({})", parts.join(" ")),
            (false, Some(r)) => write!(f, " ({}; {r})", parts.join(" ")),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("code", &self.code())
            .field("message", &self.0.message)
            .field("name", &self.0.name)
            .field("scope", &self.0.scope)
            .field("source", &self.0.source)
            .finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

/// The result type of latchkey.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let expected = [
            (ErrorKind::Generic, 8400),
            (ErrorKind::AcquireFailed, 8401),
            (ErrorKind::ReleaseFailed, 8402),
            (ErrorKind::Timeout, 8403),
            (ErrorKind::NotHeld, 8404),
            (ErrorKind::InvalidName, 8405),
            (ErrorKind::HandleLost, 8406),
            (ErrorKind::Unavailable, 8407),
            (ErrorKind::Unsupported, 8408),
            (ErrorKind::PermissionDenied, 8409),
            (ErrorKind::CapacityMismatch, 8410),
            (ErrorKind::Closed, 8411),
            (ErrorKind::InvalidScope, 8412),
            (ErrorKind::Corrupted, 8413),
        ];
        for (kind, code) in expected {
            assert_eq!(kind.code(), code, "{kind:?}");
        }
    }

    #[test]
    fn display_names_lock_and_scope() {
        let err = Error::new(ErrorKind::NotHeld, "already released").with_name("a/b").with_scope("process:");
        assert_eq!(err.to_string(), "not held: already released (lock \"a/b\" in scope process:)");
        assert_eq!(Error::new(ErrorKind::Generic, "x").to_string(), "error: x");
    }

    #[test]
    fn error_is_small_and_thread_safe() {
        fn bounds<T: Send + Sync + 'static>() {}
        bounds::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
