//! Running PostgreSQL's programs as the OS user, with a deadline, their errors kept for the
//! message.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::Spec;

/// A command for `program` (in `bin_dir`) that runs as the OS user, in the run directory,
/// with the password file for libpq and C messages.
pub(crate) fn command(spec: &Spec, program: &str) -> Command {
    let mut c = Command::new(spec.bin_dir.join(program));
    c.uid(spec.os_user.uid)
        .gid(spec.os_user.gid)
        .current_dir(&spec.run_dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &spec.os_user.home)
        .env("LC_ALL", "C")
        .env("PGPASSFILE", spec.run_dir.join("pgpass"))
        .env("PGAPPNAME", &spec.node)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs `cmd` to its end within `limit`. `progress` sees each line of its standard error as it
/// comes (lines end in `\n` or, for progress meters, `\r`). On failure: the program's last
/// words.
pub(crate) async fn run(
    mut cmd: Command,
    what: &str,
    limit: Duration,
    mut progress: impl FnMut(&str),
) -> Result<(), String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let mut stderr = child.stderr.take();
    let mut tail = String::new();
    let work = async {
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        if let Some(err) = stderr.as_mut() {
            loop {
                let n = match err.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for &b in &buf[..n] {
                    if b == b'\n' || b == b'\r' {
                        let text = String::from_utf8_lossy(&line).trim().to_string();
                        if !text.is_empty() {
                            progress(&text);
                            tail = text;
                        }
                        line.clear();
                    } else if line.len() < 4096 {
                        line.push(b);
                    }
                }
            }
        }
        child.wait().await
    };
    match tokio::time::timeout(limit, work).await {
        Err(_) => Err(format!(
            "{what}: no result after {}s (stopped)",
            limit.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "{what} failed ({status}){}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )),
    }
}

/// Whether `path` exists and is executable.
pub(crate) fn check_program(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("{} is not an executable file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
