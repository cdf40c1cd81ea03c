//! `duet key new FILE`: the cluster key that signs heartbeats and witness messages
//! (`[heartbeat] key_file`, `[witness] key_file`, `duet witness --key-file`).
//!
//! 32 random bytes written as 64 hex digits and a newline, in a file only its owner can read
//! (mode 0600, created, never overwritten unless asked). Copy the same file to every node and
//! the witness.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a new key to `path`; `force` replaces an existing file. Returns what to tell the user.
pub fn new(path: &Path, force: bool) -> Result<String, String> {
    let mut key = String::with_capacity(65);
    for _ in 0..4 {
        let r = duet_sys::process::random_u64().map_err(|e| format!("random: {e}"))?;
        key.push_str(&format!("{r:016x}"));
    }
    key.push('\n');
    let mut open = std::fs::OpenOptions::new();
    open.write(true).mode(0o600);
    if force {
        // An existing file keeps its mode on open: remove it so the new one is 0600.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    open.create_new(true);
    let mut f = open.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{} exists: a cluster's nodes must share one key (copy it), or pass --force to replace it",
            path.display()
        ),
        _ => format!("{}: {e}", path.display()),
    })?;
    f.write_all(key.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "wrote a new cluster key to {} (mode 0600); copy the same file to every node and the witness",
        path.display()
    ))
}

/// Runs `duet key new`; returns the exit code.
pub fn run_new(path: &Path, force: bool) -> i32 {
    match new(path, force) {
        Ok(msg) => {
            eprintln!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("duet key new: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_key_is_private_random_readable_and_never_overwritten_by_mistake() {
        let dir = std::env::temp_dir().join(format!("duet-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.key");
        new(&path, false).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(first.len(), 65);
        assert!(first.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The daemon and the witness read it.
        crate::witness::read_key(&path).unwrap();
        // A second run keeps the key the cluster shares, unless told.
        let e = new(&path, false).unwrap_err();
        assert!(e.contains("exists") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        new(&path, true).unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert_ne!(second, first);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
