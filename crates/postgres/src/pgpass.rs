//! libpq's password file (`PGPASSFILE`, else `~/.pgpass`): `host:port:database:user:password`
//! lines, `*` for any value, `\:` and `\\` for a colon and a backslash in a field. The file is
//! ignored, as libpq ignores it, when others than its owner may read it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The password the file at `path` gives for the connection, if any.
pub(crate) fn lookup(path: &PathBuf, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(target: "latchkey", path = %path.display(), "the password file is readable by others than its owner: ignored, as libpq ignores it");
        return None;
    }
    find(&std::fs::read_to_string(path).ok()?, host, port, database, user)
}

/// The password of the first line of `contents` that matches the connection.
pub(crate) fn find(contents: &str, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    let wanted = [host, port.as_str(), database, user];
    contents.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let fields = split(line);
        let [h, p, d, u, password] = fields.as_slice() else { return None };
        let matches = [h, p, d, u].iter().zip(wanted).all(|(field, value)| field.as_str() == "*" || field == &value);
        matches.then(|| password.clone())
    })
}

/// The fields of a line, with escapes undone.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().expect("one field").extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let file = "# comment\ndb1:5432:app:alice:first\n*:*:*:bob:p\\:w\\\\d\ndb1:*:*:alice:second\n";
        assert_eq!(find(file, "db1", 5432, "app", "alice").as_deref(), Some("first"));
        assert_eq!(find(file, "db1", 6543, "app", "alice").as_deref(), Some("second"));
        assert_eq!(find(file, "anywhere", 1, "x", "bob").as_deref(), Some("p:w\\d"));
        assert_eq!(find(file, "db2", 5432, "app", "alice"), None);
    }

    #[test]
    fn a_file_others_may_read_is_ignored() {
        let path = std::env::temp_dir().join(format!("latchkey-pgpass-{}", std::process::id()));
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&path, "h", 5432, "d", "u"), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&path, "h", 5432, "d", "u").as_deref(), Some("secret"));
        std::fs::remove_file(&path).unwrap();
    }
}
