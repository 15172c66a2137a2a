//! Validated lock names.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};

/// The longest name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A lock name: 1 to 255 bytes of UTF-8 with no NUL and no control characters.
///
/// `/` is allowed and means hierarchy (`jobs/nightly`). A name is cheap to clone.
///
/// # Examples
/// ```
/// use latchkey_model::Name;
/// let name = Name::new("user/42").unwrap();
/// assert_eq!(name.as_str(), "user/42");
/// assert!(Name::new("").is_err());
/// assert!(Name::new("tab\there").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    /// Validates `name` and wraps it; an invalid name is an [`ErrorKind::InvalidName`] error.
    pub fn new(name: &str) -> Result<Self, Error> {
        validate(name)?;
        Ok(Name(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `name` against the rules of [`Name`] without allocating.
pub fn validate(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 255 bytes"
    } else if has_control(name.as_bytes()) {
        "contains a NUL or control character"
    } else {
        return Ok(());
    };
    Err(Error::new(ErrorKind::InvalidName, format!("invalid lock name {name:?}: it {problem}")).with_name(name))
}

/// Whether UTF-8 `bytes` hold a control character (`char::is_control`): U+0000 to U+001F
/// and U+007F are single bytes; U+0080 to U+009F are 0xC2 followed by 0x80 to 0x9F.
#[inline]
fn has_control(bytes: &[u8]) -> bool {
    let mut c1_lead = false;
    let mut found = false;
    for &b in bytes {
        found |= b < 0x20 || b == 0x7f || (c1_lead && b <= 0x9f);
        c1_lead = b == 0xc2;
    }
    found
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<&str> for Name {
    type Error = Error;
    fn try_from(name: &str) -> Result<Self, Error> {
        Name::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "db-migrations", "user/42", "jobs/nightly/", "日本語", &"x".repeat(255)] {
            assert_eq!(Name::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn control_check_matches_char_is_control() {
        for c in (0..0x3000u32).filter_map(char::from_u32) {
            let s = format!("a{c}b");
            assert_eq!(has_control(s.as_bytes()), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn rejects_invalid_names_quoting_them() {
        let long = "x".repeat(256);
        // Four bytes per char: 64 chars are 256 bytes.
        let long_utf8 = "𝄞".repeat(64);
        for bad in ["", "nul\0byte", "tab\t", "new\nline", "del\u{7f}", "c1\u{85}", &long, &long_utf8] {
            let err = Name::new(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad:?}");
            assert_eq!(err.code(), 8405);
            assert_eq!(err.name(), Some(bad));
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            assert!(!err.is_retryable());
        }
    }
}
