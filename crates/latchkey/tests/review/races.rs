//! Interleavings between processes (placeholder).

pub fn job(other: &str, _url: &str, _fields: &[&str]) {
    panic!("unknown worker job {other:?}")
}
