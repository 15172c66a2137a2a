//! The error type of the cluster runtime.

use std::error::Error as StdError;
use std::fmt;

/// What went wrong. Each kind has a stable numeric [`code`](ErrorKind::code), numbered
/// from 8500 so that it never meets a lock error's code (8400 and up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A worker path breaks the rules of [`Path`](crate::Path).
    InvalidPath,
    /// A live worker already has this path.
    DuplicatePath,
    /// An entry name is malformed, or registered twice.
    InvalidEntry,
    /// No entry is registered under this name.
    UnknownEntry,
    /// The worker's mailbox is full (only [`try_send`](crate::WorkerRef::try_send) fails
    /// this way; `send` waits).
    Full,
    /// The worker is stopping or gone, or the cluster is shut down: it takes no new
    /// messages or workers.
    Closed,
    /// No reply came within the time an [`ask`](crate::WorkerRef::ask) allowed.
    Timeout,
    /// The worker dropped an ask without replying (it ended, or discarded the message).
    NoReply,
    /// [`Envelope::reply`](crate::Envelope::reply) on a message that was sent, not asked.
    NotAsked,
    /// A group send found no worker under the group's prefix.
    NoMembers,
    /// The cluster was built outside a Tokio runtime.
    NoRuntime,
    /// The cluster's lock scope could not be opened; the lock error is the
    /// [`source`](std::error::Error::source).
    Scope,
    /// A child process for a process worker could not be started; the I/O error is the
    /// [`source`](std::error::Error::source).
    Spawn,
    /// A message could not be encoded for, or decoded from, another process.
    Codec,
    /// The operation is not available here (such as spawning a worker from a closure
    /// inside a process worker).
    Unsupported,
    /// A node could not join its cluster (its store, its listening socket, its
    /// configuration), or was expelled from it.
    Node,
}

impl ErrorKind {
    /// The stable numeric code of this kind.
    pub fn code(self) -> u32 {
        match self {
            ErrorKind::InvalidPath => 8500,
            ErrorKind::DuplicatePath => 8501,
            ErrorKind::InvalidEntry => 8502,
            ErrorKind::UnknownEntry => 8503,
            ErrorKind::Full => 8504,
            ErrorKind::Closed => 8505,
            ErrorKind::Timeout => 8506,
            ErrorKind::NoReply => 8507,
            ErrorKind::NotAsked => 8508,
            ErrorKind::NoMembers => 8509,
            ErrorKind::NoRuntime => 8510,
            ErrorKind::Scope => 8511,
            ErrorKind::Spawn => 8512,
            ErrorKind::Codec => 8513,
            ErrorKind::Unsupported => 8514,
            ErrorKind::Node => 8515,
        }
    }

    /// The kind with this code; `None` for a code no kind has.
    pub(crate) fn from_code(code: u32) -> Option<ErrorKind> {
        ALL.get(code.checked_sub(8500)? as usize).copied()
    }

    /// Whether trying the same operation again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Full | ErrorKind::Timeout | ErrorKind::NoMembers)
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::InvalidPath => "invalid path",
            ErrorKind::DuplicatePath => "duplicate path",
            ErrorKind::InvalidEntry => "invalid entry",
            ErrorKind::UnknownEntry => "unknown entry",
            ErrorKind::Full => "mailbox full",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::NoReply => "no reply",
            ErrorKind::NotAsked => "not asked",
            ErrorKind::NoMembers => "no members",
            ErrorKind::NoRuntime => "no runtime",
            ErrorKind::Scope => "lock scope",
            ErrorKind::Spawn => "spawn",
            ErrorKind::Codec => "codec",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Node => "node",
        }
    }
}

/// Every kind, in code order.
const ALL: [ErrorKind; 16] = [
    ErrorKind::InvalidPath,
    ErrorKind::DuplicatePath,
    ErrorKind::InvalidEntry,
    ErrorKind::UnknownEntry,
    ErrorKind::Full,
    ErrorKind::Closed,
    ErrorKind::Timeout,
    ErrorKind::NoReply,
    ErrorKind::NotAsked,
    ErrorKind::NoMembers,
    ErrorKind::NoRuntime,
    ErrorKind::Scope,
    ErrorKind::Spawn,
    ErrorKind::Codec,
    ErrorKind::Unsupported,
    ErrorKind::Node,
];

/// A cluster error: a [kind](ErrorKind), a message, and the worker path it concerns.
///
/// ```
/// use latchkey_cluster::{Error, ErrorKind};
/// let err = Error::new(ErrorKind::Full, "its mailbox of 8 messages is full").with_path("/receivers/1");
/// assert_eq!(err.code(), 8504);
/// assert_eq!(err.to_string(), "mailbox full: its mailbox of 8 messages is full (worker /receivers/1; retrying may help)");
/// ```
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    path: Option<String>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with a message saying what failed.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner { kind, message: message.into(), path: None, source: None }))
    }

    /// Records the worker path (or path prefix) the error concerns.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.0.path = Some(path.into());
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

    /// The worker path the error concerns, if any (as given, so possibly invalid).
    pub fn path(&self) -> Option<&str> {
        self.0.path.as_deref()
    }

    /// The message, without the kind and path.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        write!(f, "{}: {}", inner.kind.label(), inner.message)?;
        let path = inner.path.as_ref().map(|p| format!("worker {p}"));
        let retry = inner.kind.is_retryable().then(|| "retrying may help".to_owned());
        let notes: Vec<String> = [path, retry].into_iter().flatten().collect();
        if !notes.is_empty() {
            write!(f, " ({})", notes.join("; "))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("code", &self.code())
            .field("message", &self.0.message)
            .field("path", &self.0.path)
            .field("source", &self.0.source)
            .finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

/// The result type of the cluster runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_distinct() {
        for (i, kind) in ALL.into_iter().enumerate() {
            assert_eq!(kind.code(), 8500 + i as u32, "{kind:?}");
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code(8499), None);
        assert_eq!(ErrorKind::from_code(8500 + ALL.len() as u32), None);
    }

    #[test]
    fn display_names_the_path() {
        let err = Error::new(ErrorKind::Closed, "it is stopping").with_path("/a/b");
        assert_eq!(err.to_string(), "closed: it is stopping (worker /a/b)");
        assert_eq!(Error::new(ErrorKind::NoRuntime, "x").to_string(), "no runtime: x");
    }

    #[test]
    fn error_is_small_and_thread_safe() {
        fn bounds<T: Send + Sync + 'static>() {}
        bounds::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
