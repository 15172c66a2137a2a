//! Worker properties.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Ordered string properties given to a worker at spawn (`id = 1`, `type = receiver`).
///
/// Keys are unique: setting a key again replaces its value in place, so the order is the
/// order in which keys were first set.
///
/// # Examples
/// ```
/// use latchkey_cluster::Props;
/// let props = Props::new().with("type", "receiver").with("id", "7");
/// assert_eq!(props.get("id"), Some("7"));
/// assert_eq!(props.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["type", "id"]);
/// assert_eq!(Props::from([("id", "7")]).get("id"), Some("7"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Props(Vec<(String, String)>);

/// The most bytes of keys and values a worker's properties may hold: they travel in every
/// membership event sent to a process worker.
pub const MAX_PROPS_BYTES: usize = 64 << 10;

impl Props {
    /// Refuses properties larger than [`MAX_PROPS_BYTES`] for a worker at `path`.
    pub(crate) fn check_size(&self, path: &str) -> crate::Result<()> {
        let bytes: usize = self.0.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes <= MAX_PROPS_BYTES {
            return Ok(());
        }
        let message = format!("its properties take {bytes} bytes, more than the {MAX_PROPS_BYTES} allowed");
        Err(crate::Error::new(crate::ErrorKind::Codec, message).with_path(path))
    }

    /// No properties.
    pub fn new() -> Props {
        Props(Vec::new())
    }

    /// These properties with `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Props {
        self.set(key, value);
        self
    }

    /// Sets `key` to `value`, replacing an earlier value in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The properties in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many properties there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Props {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Props {
        let mut props = Props::new();
        for (k, v) in iter {
            props.set(k, v);
        }
        props
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Props {
    fn from(pairs: [(K, V); N]) -> Props {
        pairs.into_iter().collect()
    }
}

impl fmt::Debug for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_key_again_keeps_its_place() {
        let mut props = Props::from([("a", "1"), ("b", "2")]);
        props.set("a", "3");
        assert_eq!(props.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
        assert_eq!(props.len(), 2);
        assert_eq!(props.get("c"), None);
        assert_eq!(format!("{props:?}"), r#"{"a": "3", "b": "2"}"#);
    }
}
