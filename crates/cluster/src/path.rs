//! Validated worker paths.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, ErrorKind, Result};

/// The longest path, in bytes.
pub const MAX_PATH_LEN: usize = 255;

/// The address of a worker: `/` followed by segments separated by `/`, such as
/// `/receivers/1`. Cheap to clone.
///
/// Rules: at most [`MAX_PATH_LEN`] bytes; it starts with `/`; every segment is non-empty
/// (so no `//` and no trailing `/`), is not `.` or `..`, and has no control character.
///
/// # Examples
/// ```
/// use latchkey_cluster::Path;
/// let path = Path::new("/receivers/1")?;
/// assert_eq!(path.segments().collect::<Vec<_>>(), ["receivers", "1"]);
/// assert!(path.is_under("/receivers/"));
/// assert!(Path::new("receivers/1").is_err());
/// assert!(Path::new("/receivers//1").is_err());
/// # Ok::<(), latchkey_cluster::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(Arc<str>);

impl Path {
    /// Validates `path` and wraps it; an invalid path is an [`ErrorKind::InvalidPath`] error.
    pub fn new(path: &str) -> Result<Path> {
        validate(path, false)?;
        Ok(Path(Arc::from(path)))
    }

    /// The path as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }

    /// The last segment.
    pub fn last_segment(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// Whether the path lies strictly below `prefix`: `/receivers/1` is under `/receivers`
    /// and `/receivers/` (the same), not under `/receiv`; every path is under `/`.
    pub fn is_under(&self, prefix: &str) -> bool {
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        self.0.strip_prefix(prefix).is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
    }

    /// Wraps a string already checked by [`validate`].
    pub(crate) fn from_valid(path: String) -> Path {
        debug_assert!(validate(&path, false).is_ok(), "{path:?}");
        Path(Arc::from(path))
    }
}

/// Checks `path` against the rules of [`Path`]; with `template`, a trailing `/` (a path
/// whose last segment is still to be assigned) is allowed too.
pub(crate) fn validate(path: &str, template: bool) -> Result<()> {
    let body = match path.strip_prefix('/') {
        Some(body) if template => body.strip_suffix('/').unwrap_or(body),
        Some(body) => body,
        None => return Err(invalid(path, "does not start with \"/\"")),
    };
    let problem = if path.len() > MAX_PATH_LEN {
        "is longer than 255 bytes"
    } else if path.chars().any(char::is_control) {
        "contains a control character"
    } else if body.is_empty() && !(template && path == "/") {
        "has no segment"
    } else if !body.is_empty() && body.split('/').any(str::is_empty) {
        "has an empty segment (\"//\" or a trailing \"/\")"
    } else if !body.is_empty() && body.split('/').any(|s| s == "." || s == "..") {
        "has a \".\" or \"..\" segment"
    } else {
        return Ok(());
    };
    Err(invalid(path, problem))
}

fn invalid(path: &str, problem: &str) -> Error {
    Error::new(ErrorKind::InvalidPath, format!("the worker path {path:?} {problem}")).with_path(path)
}

impl Deref for Path {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Path {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Path {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for Path {
    type Err = Error;
    fn from_str(s: &str) -> Result<Path> {
        Path::new(s)
    }
}

impl PartialEq<str> for Path {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Path {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Path, D::Error> {
        let path = String::deserialize(deserializer)?;
        validate(&path, false).map_err(serde::de::Error::custom)?;
        Ok(Path::from_valid(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_paths() {
        for ok in ["/a", "/receivers/1", "/a/b/c", "/with space/x", "/ünï/cödé", "/.hidden/..x"] {
            assert_eq!(Path::new(ok).unwrap().as_str(), ok);
        }
        assert!(Path::new(&format!("/{}", "a".repeat(254))).is_ok());
    }

    #[test]
    fn rejects_invalid_paths_naming_them() {
        let long = format!("/{}", "a".repeat(255));
        for bad in ["", "/", "a", "a/b", "//a", "/a//b", "/a/", "/a/./b", "/a/..", "/tab\t", "/nul\0", long.as_str()] {
            let err = Path::new(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidPath, "{bad:?}");
            assert_eq!(err.path(), Some(bad));
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn templates_may_end_with_a_slash() {
        for ok in ["/", "/receivers/", "/a/b/", "/a"] {
            assert!(validate(ok, true).is_ok(), "{ok:?}");
        }
        for bad in ["//", "/a//", "a/", "/../"] {
            assert!(validate(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let path = Path::new("/receivers/1").unwrap();
        assert!(path.is_under("/"));
        assert!(path.is_under("/receivers"));
        assert!(path.is_under("/receivers/"));
        assert!(!path.is_under("/receiv"));
        assert!(!path.is_under("/receivers/1"));
        assert!(!path.is_under("/senders"));
        assert_eq!(path.last_segment(), "1");
    }

    #[test]
    fn serde_checks_paths() {
        fn de(s: &str) -> std::result::Result<Path, serde::de::value::Error> {
            Path::deserialize(serde::de::value::StrDeserializer::new(s))
        }
        assert_eq!(de("/a/b").unwrap(), "/a/b");
        assert!(de("/a//b").is_err());
    }
}
